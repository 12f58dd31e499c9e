//! Commands in over MQTT: parsing, validation, authorisation, routing through the hub, the audit trail and the
//! reply. A command that is malformed, invalid or not authorised never reaches a bed, so it cannot change state.
//!
//! Request (topic `{base}/cmd/{bed}`): the [`Command`] JSON (`{"command": "acknowledge", "alarm_id": "…"}`)
//! plus envelope fields `user`, `password`, `request_id` (echoed) and `reply_to` (a topic under
//! `{base}/reply/`; default `{base}/reply/{bed}`). Reply: [`super::payload::Reply`].

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, Semaphore};

use super::auth::{command_name, AuthError, Authorizer};
use super::payload::{Reply, SCHEMA_VERSION};
use super::topics::Topics;
use crate::event::{Command, CommandRequest};
use crate::hub::{CommandError, Hub};
use crate::store::Store;

/// Largest command payload accepted.
pub const MAX_COMMAND_BYTES: usize = 4096;

/// How long a bed has to answer a command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A wrong password waits this long before its reply, to slow down guessing.
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);

/// A parsed request: the envelope and the command (or why it is malformed).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `user`.
    pub user: Option<String>,
    /// `password`.
    pub password: Option<String>,
    /// `request_id`, echoed in the reply.
    pub request_id: Option<String>,
    /// `reply_to`.
    pub reply_to: Option<String>,
    /// The `command` field as sent, for the reply when the rest is malformed.
    pub name: Option<String>,
    /// The command, or why it is not one.
    pub command: Result<Command, String>,
}

fn take_string(map: &mut Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) if key == "request_id" => Ok(Some(n.to_string())),
        Some(_) => Err(format!("'{key}' must be a string")),
    }
}

/// Parses a command payload. `Err` only when not even the envelope can be read.
pub fn parse(payload: &[u8]) -> Result<Request, String> {
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(format!("payload of {} bytes exceeds {MAX_COMMAND_BYTES}", payload.len()));
    }
    let value: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut map) = value else { return Err("the payload must be a JSON object".into()) };
    let user = take_string(&mut map, "user")?;
    let password = take_string(&mut map, "password")?;
    let request_id = take_string(&mut map, "request_id")?;
    let reply_to = take_string(&mut map, "reply_to")?;
    let name = map.get("command").and_then(Value::as_str).map(str::to_owned);
    let command = serde_json::from_value::<Command>(Value::Object(map))
        .map_err(|e| format!("malformed command: {e}"))
        .and_then(|c| validate(&c).map(|()| c));
    Ok(Request { user, password, request_id, reply_to, name, command })
}

/// Checks values serde cannot: ranges and consistency.
pub fn validate(cmd: &Command) -> Result<(), String> {
    let bp = |what: &str, v: f64, lo: f64, hi: f64| {
        if v.is_finite() && (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(format!("{what} {v} is outside {lo}..={hi} mmHg"))
        }
    };
    match cmd {
        Command::PauseAudio { seconds } if *seconds == 0 || *seconds > 600 => {
            Err(format!("pause_audio: seconds {seconds} is outside 1..=600"))
        }
        Command::Acknowledge { alarm_id: Some(id) } if id.is_empty() => Err("acknowledge: empty alarm_id".into()),
        Command::SessionStart { patient, baseline_sys, baseline_dia } => {
            if patient.as_ref().is_some_and(|p| p.len() > 64) {
                return Err("session_start: patient pseudonym longer than 64 characters".into());
            }
            match (baseline_sys, baseline_dia) {
                (None, None) => Ok(()),
                (Some(s), Some(d)) => {
                    bp("baseline_sys", *s, 50.0, 260.0)?;
                    bp("baseline_dia", *d, 20.0, 160.0)?;
                    if d >= s {
                        return Err("session_start: baseline_dia must be below baseline_sys".into());
                    }
                    Ok(())
                }
                _ => Err("session_start: give both baseline_sys and baseline_dia, or neither".into()),
            }
        }
        Command::SetBaseline { sys, dia } => {
            bp("sys", *sys, 50.0, 260.0)?;
            bp("dia", *dia, 20.0, 160.0)?;
            if dia >= sys {
                return Err("set_baseline: dia must be below sys".into());
            }
            Ok(())
        }
        Command::SetLimit { key, value } => {
            if key.is_empty() || key.len() > 128 {
                return Err("set_limit: key must be a profile key path of 1 to 128 characters".into());
            }
            match value {
                Some(v) if !v.is_finite() => Err(format!("set_limit: value {v} is not a number")),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// A reply ready to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Topic.
    pub topic: String,
    /// JSON.
    pub payload: Vec<u8>,
    /// MQTT 5 correlation data of the request, echoed.
    pub correlation: Option<bytes::Bytes>,
}

/// MQTT 5 request/response properties of a command, when it came over MQTT 5.
#[derive(Debug, Clone, Default)]
pub struct ResponseInfo {
    /// The response topic property; wins over the payload's `reply_to`.
    pub response_topic: Option<String>,
    /// The correlation data property, echoed on the reply.
    pub correlation: Option<bytes::Bytes>,
    /// The broker delivered it as a retained message: a stale command replayed on every subscription.
    pub retained: bool,
}

/// Everything a command handler needs; cloned into each handler task.
#[derive(Clone)]
pub(crate) struct Handler {
    pub topics: Topics,
    pub hub: Arc<Hub>,
    pub store: Store,
    pub auth: Arc<Authorizer>,
    pub replies: mpsc::Sender<Outgoing>,
    /// Bounds concurrent argon2 verifications (memory-hard, about 19 MiB each).
    pub permits: Arc<Semaphore>,
}

impl Handler {
    /// Handles one command message end to end and queues the reply.
    pub async fn handle(self, bed: String, payload: Vec<u8>, info: ResponseInfo) {
        let now = Utc::now();
        let correlation = info.correlation.clone();
        let mut reply = Reply {
            schema_version: SCHEMA_VERSION,
            time: now,
            request_id: None,
            bed: bed.clone(),
            command: None,
            user: None,
            ok: false,
            reason: None,
            events: 0,
        };
        let mut topic = self.topics.reply(&bed);
        let raw = String::from_utf8_lossy(&payload).into_owned();
        let parsed = parse(&payload).map(|mut req| {
            if info.retained {
                // A retained command would run again on every reconnect; it is never acted on.
                req.command = Err("retained commands are refused: publish commands with retain off".to_owned());
            }
            req
        });
        match parsed {
            Err(reason) => {
                if let Some(to) = info.response_topic.as_ref().filter(|t| self.topics.reply_allowed(t)) {
                    topic = to.clone();
                }
                tracing::warn!(%bed, %reason, "MQTT command refused");
                self.audit_rejected(now, "unknown", &bed, &raw, &reason);
                reply.reason = Some(reason);
            }
            Ok(req) => {
                reply.request_id = req.request_id.clone();
                reply.command = req.name.clone();
                reply.user = req.user.clone();
                let actor = req.user.clone().unwrap_or_else(|| "unknown".into());
                if let Some(to) = info.response_topic.as_ref().or(req.reply_to.as_ref()) {
                    if self.topics.reply_allowed(to) {
                        topic = to.clone();
                    } else {
                        let reason = format!("reply_to '{to}' must be a topic under {}/reply/", self.topics.base());
                        self.audit_rejected(now, &actor, &bed, &redact(&raw), &reason);
                        reply.reason = Some(reason);
                        return self.send(topic, &reply, correlation).await;
                    }
                }
                match req.command {
                    Err(reason) => {
                        tracing::warn!(%bed, user = %actor, %reason, "MQTT command refused");
                        self.audit_rejected(now, &actor, &bed, &redact(&raw), &reason);
                        reply.reason = Some(reason);
                    }
                    Ok(command) => match self.authorize(&req.user, &req.password, &command).await {
                        Err(e) => {
                            tracing::warn!(%bed, user = %actor, reason = %e, "MQTT command not authorised");
                            if e == AuthError::BadCredentials {
                                tokio::time::sleep(AUTH_FAILURE_DELAY).await;
                            }
                            self.audit(now, &actor, &bed, &command, Err(e.to_string()));
                            reply.reason = Some(e.to_string());
                        }
                        Ok(actor) => {
                            reply.user = Some(actor.clone());
                            let request = CommandRequest { bed: bed.as_str().into(), command: command.clone(), actor };
                            let outcome = tokio::time::timeout(COMMAND_TIMEOUT, self.hub.command(request)).await;
                            // The bed task records every command it answers (accepted or refused); only what never
                            // reached a bed is recorded here, so the audit trail holds each command once.
                            let (outcome, reached_bed) = match outcome {
                                Err(_) => {
                                    (Err(format!("bed '{bed}' did not answer within {COMMAND_TIMEOUT:?}")), false)
                                }
                                Ok(Err(e @ CommandError::Refused(_))) => (Err(e.to_string()), true),
                                Ok(Err(e)) => (Err(e.to_string()), false),
                                Ok(Ok(events)) => (Ok(events.len()), true),
                            };
                            let actor = reply.user.clone().unwrap_or_default();
                            if !reached_bed {
                                self.audit(
                                    now,
                                    &actor,
                                    &bed,
                                    &command,
                                    outcome.as_ref().map(|_| ()).map_err(Clone::clone),
                                );
                            }
                            match outcome {
                                Ok(n) => {
                                    tracing::info!(%bed, user = %actor, command = command_name(&command), "MQTT command done");
                                    reply.ok = true;
                                    reply.events = n;
                                }
                                Err(reason) => {
                                    tracing::warn!(%bed, user = %actor, %reason, "MQTT command refused by the bed");
                                    reply.reason = Some(reason);
                                }
                            }
                        }
                    },
                }
            }
        }
        self.send(topic, &reply, correlation).await;
    }

    async fn authorize(
        &self,
        user: &Option<String>,
        password: &Option<String>,
        command: &Command,
    ) -> Result<String, AuthError> {
        // Held only while hashing, so that the delay after a wrong password does not block other commands.
        let Ok(_permit) = self.permits.clone().acquire_owned().await else { return Err(AuthError::BadCredentials) };
        let (auth, user, password, command) = (self.auth.clone(), user.clone(), password.clone(), command.clone());
        tokio::task::spawn_blocking(move || auth.authorize(user.as_deref(), password.as_deref(), &command))
            .await
            .unwrap_or(Err(AuthError::BadCredentials))
    }

    fn audit(
        &self,
        now: chrono::DateTime<Utc>,
        actor: &str,
        bed: &str,
        command: &Command,
        outcome: Result<(), String>,
    ) {
        if let Err(e) = self.store.record_action(now, actor, bed, command, outcome) {
            tracing::error!(error = %e, "cannot record a command in the audit trail");
        }
    }

    fn audit_rejected(&self, now: chrono::DateTime<Utc>, actor: &str, bed: &str, raw: &str, reason: &str) {
        if let Err(e) = self.store.record_rejected(now, actor, bed, raw, reason) {
            tracing::error!(error = %e, "cannot record a command in the audit trail");
        }
    }

    async fn send(&self, topic: String, reply: &Reply, correlation: Option<bytes::Bytes>) {
        let payload = serde_json::to_vec(reply).unwrap_or_default();
        let _ = self.replies.send(Outgoing { topic, payload, correlation }).await;
    }
}

/// The request text for the audit trail, without the password.
fn redact(raw: &str) -> String {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(mut map)) => {
            if map.contains_key("password") {
                map.insert("password".into(), Value::String("***".into()));
            }
            Value::Object(map).to_string()
        }
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_fields_are_split_from_the_command() {
        let r =
            parse(br#"{"command":"acknowledge","alarm_id":"a1","user":"ann","password":"pw","request_id":7}"#).unwrap();
        assert_eq!(r.user.as_deref(), Some("ann"));
        assert_eq!(r.request_id.as_deref(), Some("7"));
        assert_eq!(r.command, Ok(Command::Acknowledge { alarm_id: Some("a1".into()) }));
    }

    #[test]
    fn unknown_fields_wrong_types_and_out_of_range_values_are_malformed() {
        for bad in [
            r#"{"command":"acknowledge","alarmid":"a1"}"#,
            r#"{"command":"pause_audio","seconds":"60"}"#,
            r#"{"command":"pause_audio","seconds":0}"#,
            r#"{"command":"set_baseline","sys":80,"dia":120}"#,
            r#"{"command":"session_start","baseline_sys":120}"#,
            r#"{"command":"reboot"}"#,
        ] {
            assert!(parse(bad.as_bytes()).unwrap().command.is_err(), "{bad}");
        }
        assert!(parse(b"not json").is_err());
        assert!(parse(b"[1]").is_err());
    }

    #[test]
    fn the_password_never_reaches_the_audit_trail() {
        assert!(!redact(r#"{"password":"secret","command":"x"}"#).contains("secret"));
    }
}
