//! Commands in over MQTT: parsing, validation, authorisation, routing through the hub, the audit trail and the
//! reply. A command that is malformed, invalid or not authorised never reaches a bed, so it cannot change state.
//!
//! Request (topic `{base}/cmd/{bed}/{user}`, where `{user}` is the broker account that publishes it, see
//! [`super::auth`]): the [`Command`] JSON (`{"command": "acknowledge", "alarm_id": "…"}`) plus envelope fields
//! `request_id` (echoed), `reply_to` (a topic under `{base}/reply/`; default `{base}/reply/{bed}`) and, optionally,
//! `user` (must then be the topic's user). A payload with a `password` field is refused with a reason: commands
//! carry no password. Reply: [`super::payload::Reply`].

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::auth::{command_name, Authorizer};
use super::payload::{Reply, SCHEMA_VERSION};
use super::topics::Topics;
use crate::event::{Command, CommandRequest};
use crate::hub::{CommandError, Hub};
use crate::store::Store;

/// Largest command payload accepted.
pub const MAX_COMMAND_BYTES: usize = 4096;

/// Longest patient pseudonym accepted, bytes.
pub const MAX_PATIENT_BYTES: usize = 64;

/// How long a bed has to answer a command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes of a refused request kept in the audit trail.
pub const MAX_AUDIT_REQUEST_BYTES: usize = 1024;

/// Why a payload with a `password` field is refused.
pub const PASSWORD_REFUSED: &str = "commands carry no password: sign in to the broker as your user and publish on \
                                    cmd/{bed}/{your user name} (the 'password' field is no longer accepted)";

/// A parsed request: the envelope and the command (or why it is malformed).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `user`, optional: when given it must be the command topic's user.
    pub user: Option<String>,
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
    let password = map.remove("password").is_some();
    let user = take_string(&mut map, "user")?;
    let request_id = take_string(&mut map, "request_id")?;
    let reply_to = take_string(&mut map, "reply_to")?;
    let name = map.get("command").and_then(Value::as_str).map(|s| s.chars().take(64).collect());
    let command = if password {
        Err(PASSWORD_REFUSED.to_owned())
    } else {
        serde_json::from_value::<Command>(Value::Object(map))
            .map_err(|e| format!("malformed command: {e}"))
            .and_then(|c| validate(&c).map(|()| c))
    };
    Ok(Request { user, request_id, reply_to, name, command })
}

/// Checks values serde cannot: ranges, consistency and lengths. The dashboard and MQTT both call it, so a command
/// is valid or not whichever way it comes.
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
        Command::Acknowledge { alarm_id: Some(id) } if id.is_empty() || id.len() > 128 => {
            Err("acknowledge: alarm_id must be 1 to 128 characters".into())
        }
        Command::SessionStart { patient, baseline_sys, baseline_dia } => {
            if patient.as_ref().is_some_and(|p| p.len() > MAX_PATIENT_BYTES) {
                return Err(format!("session_start: patient pseudonym longer than {MAX_PATIENT_BYTES} bytes"));
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
    /// The user the command topic names (`cmd/{bed}/{user}`); `None` for `cmd/{bed}`.
    pub sender: Option<String>,
}

/// Everything a command handler needs; cloned into each handler task.
#[derive(Clone)]
pub(crate) struct Handler {
    pub topics: Topics,
    pub hub: Arc<Hub>,
    pub store: Store,
    pub auth: Arc<Authorizer>,
    pub replies: mpsc::Sender<Outgoing>,
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
                let actor = info.sender.as_deref().unwrap_or("unknown");
                self.audit_rejected(now, actor, &bed, &redact(&raw), &reason);
                reply.reason = Some(reason);
            }
            Ok(req) => {
                reply.request_id = req.request_id.clone();
                reply.command = req.name.clone();
                reply.user = info.sender.clone();
                let actor = info.sender.clone().unwrap_or_else(|| "unknown".into());
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
                let command = match (&req.user, &info.sender, req.command) {
                    (Some(claimed), sender, Ok(_)) if Some(claimed) != sender.as_ref() => Err(format!(
                        "'user' is '{}' but the command came on the topic of {}",
                        claimed.chars().take(64).collect::<String>(),
                        sender.as_deref().map_or("no user (cmd/{bed})".to_owned(), |s| format!("'{s}'"))
                    )),
                    (_, _, c) => c,
                };
                match command {
                    Err(reason) => {
                        tracing::warn!(%bed, user = %actor, %reason, "MQTT command refused");
                        self.audit_rejected(now, &actor, &bed, &redact(&raw), &reason);
                        reply.reason = Some(reason);
                    }
                    Ok(command) => match self.auth.authorize(info.sender.as_deref(), &command) {
                        Err(e) => {
                            tracing::warn!(%bed, user = %actor, reason = %e, "MQTT command not authorised");
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

/// The request text for the audit trail: at most [`MAX_AUDIT_REQUEST_BYTES`], every `password` (at any depth)
/// replaced by `***`, and nothing at all of a payload that is not a JSON object (it cannot be redacted reliably).
pub fn redact(raw: &str) -> String {
    fn scrub(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if k.to_ascii_lowercase().contains("pass") || k.eq_ignore_ascii_case("secret") {
                        *v = Value::String("***".into());
                    } else {
                        scrub(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(scrub),
            _ => {}
        }
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(mut v @ Value::Object(_)) => {
            scrub(&mut v);
            let mut text = v.to_string();
            if text.len() > MAX_AUDIT_REQUEST_BYTES {
                let mut end = MAX_AUDIT_REQUEST_BYTES;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push_str("…(truncated)");
            }
            text
        }
        _ => format!("(not stored: {} bytes that are not a JSON object)", raw.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_fields_are_split_from_the_command() {
        let r = parse(br#"{"command":"acknowledge","alarm_id":"a1","user":"ann","request_id":7}"#).unwrap();
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
        assert!(!redact(r#"{"command":{"password":"pw-1234"},"request_id":true}"#).contains("pw-1234"));
        assert!(!redact(r#"{"password": "pw-1234", "oops"#).contains("pw-1234"), "not JSON: nothing kept");
        assert!(redact(&format!(r#"{{"command":"{}"}}"#, "x".repeat(5000))).len() < MAX_AUDIT_REQUEST_BYTES + 32);
    }

    #[test]
    fn a_payload_with_a_password_is_refused_with_a_reason() {
        let r = parse(br#"{"command":"acknowledge","user":"nina","password":"anin"}"#).unwrap();
        assert_eq!(r.command, Err(PASSWORD_REFUSED.to_owned()));
    }
}
