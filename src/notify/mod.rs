//! Notification targets and escalation chains (issue 15): alarms reach the nurse who is not at the screen.
//!
//! Data flow: the bed's alarm event is stored; in the same transaction the [`routing::Plan`] queues one row per
//! target that is to hear of it (`notify_queue`, `src/store/notify.rs`) and keeps the alarm's escalation chain
//! (`notify_chains`). From there:
//! - one delivery task per target ([`delivery`]) sends its queued rows in order, retrying with backoff, and
//!   writes every attempt to the notification log (`notify_attempts`) and the counters on `/metrics`; a slow
//!   or unreachable target holds up only its own queue;
//! - the chain task ([`delivery::run_chains`]) moves every unacknowledged chain on when its step's wait has
//!   passed (the due time is stored, so a restart resumes with the remaining wait);
//! - an acknowledge from a recipient (a [`Receipt`] that says so, or a one-time link, [`ack_link`]) goes into the
//!   bed through the hub like a dashboard acknowledge, attributed to the target, and stops the chain there.
//!
//! A new kind of target is a new [`Target`] variant with its own `deliver`.

pub mod ack_link;
pub mod acm;
pub mod acm_client;
pub mod acm_target;
pub mod config;
pub mod delivery;
pub mod routing;
pub mod smtp;
pub mod webhook;

/// An alarm event for the unit tests of this module's files.
#[cfg(test)]
pub(crate) fn test_event(
    phase: crate::event::AlarmPhase,
    state: crate::event::AlarmState,
    priority: crate::event::Priority,
    secs: i64,
) -> AlarmEvent {
    use chrono::TimeZone;
    AlarmEvent {
        time: chrono::Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap(),
        bed: "chair-1".into(),
        alarm_id: "a1".into(),
        seq: 1,
        bed_seq: 1,
        kind: crate::event::AlarmKind::Threshold,
        source: crate::event::AlarmSource::Vigil,
        condition: "spo2_low".into(),
        parameter: Some(crate::vitals::Parameter::Spo2),
        priority,
        phase,
        state,
        value: Some(84.0),
        limit: Some(85.0),
        evidence: Default::default(),
        message: "SpO2 84 < 85".into(),
        by: None,
        audio_paused_until: None,
        test: false,
    }
}

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::event::{AlarmEvent, Command, CommandRequest};
use crate::hub::{CommandError, Hub};
use config::{NotifyConfig, TargetKind};

/// What can go wrong with notifications.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A target cannot be set up from its configuration (a CA file that cannot be read, a bad address).
    #[error("{key}: {reason}")]
    Setup {
        /// Key path.
        key: String,
        /// Why.
        reason: String,
    },
    /// The target could not be reached or did not answer in time.
    #[error("{0}")]
    Unreachable(String),
    /// The target answered but refused the notification.
    #[error("{0}")]
    Refused(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// An acknowledge link that is not one Vigil issued (or whose secret is wrong).
    #[error("unknown acknowledge link")]
    UnknownLink,
    /// An acknowledge link that was used already.
    #[error("this acknowledge link was already used")]
    LinkUsed,
    /// An acknowledge link past its time.
    #[error("this acknowledge link has expired")]
    LinkExpired,
    /// The bed did not take the acknowledge (the alarm ended or was acknowledged already).
    #[error("the alarm could not be acknowledged: {0}")]
    NotAcknowledged(#[from] CommandError),
}

/// One notification for one target: the alarm event, why it is sent, and the acknowledge link if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The alarm event (as stored; unknown extra fields of newer events are kept by serde's defaults).
    pub event: AlarmEvent,
    /// The bed's label for people.
    pub bed_label: String,
    /// Site and ward, for the message.
    pub ward: String,
    /// `event`, or `escalation step N of M`.
    pub reason: String,
    /// The target's name.
    pub target: String,
    /// A one-time link that acknowledges the alarm (start and escalation notifications, when
    /// `notify.public_url` is set).
    pub ack_url: Option<String>,
}

impl Notification {
    /// One line for a person: `[HIGH] Chair 1: SpO2 84 < 85 (start)`.
    pub fn headline(&self) -> String {
        let e = &self.event;
        let what = match routing::classify(e) {
            Some(config::NotifyOn::Start) => "started",
            Some(config::NotifyOn::Escalate) => "escalated",
            Some(config::NotifyOn::Acknowledged) => "acknowledged",
            Some(config::NotifyOn::End) => "ended",
            None => "updated",
        };
        if e.test {
            // A self-test alarm: its priority means nothing to a reader, TEST is what they must see first.
            return format!("[TEST] {}: {} ({what})", self.bed_label, e.message);
        }
        format!("[{}] {}: {} ({what})", priority_name(e.priority).to_uppercase(), self.bed_label, e.message)
    }

    /// The full text: headline, bed, time, why, who acknowledged, and the acknowledge link.
    pub fn text(&self) -> String {
        let e = &self.event;
        let mut out = String::new();
        if e.test {
            out.push_str("TEST: a Vigil self-test of the alarm path, not a patient alarm. Nothing to do.\n");
        }
        out += &format!(
            "{}\nBed: {} ({}), {}\nTime: {}\nAlarm: {} ({}), id {}\n",
            self.headline(),
            self.bed_label,
            e.bed,
            self.ward,
            e.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            e.condition,
            priority_name(e.priority),
            e.alarm_id,
        );
        if self.reason != routing::DIRECT {
            out.push_str(&format!("Sent as: {}\n", self.reason));
        }
        if let Some(by) = &e.by {
            out.push_str(&format!("By: {by}\n"));
        }
        if let Some(url) = &self.ack_url {
            out.push_str(&format!("Acknowledge: {url}\n"));
        }
        out.push_str("Vigil is a secondary notification aid: the bedside monitor remains the primary alarm.\n");
        out
    }
}

/// `low`, `medium`, `high`.
pub fn priority_name(p: crate::event::Priority) -> &'static str {
    match p {
        crate::event::Priority::Low => "low",
        crate::event::Priority::Medium => "medium",
        crate::event::Priority::High => "high",
    }
}

/// What a target said when it took a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// For the notification log: `HTTP 200`, `250 2.0.0 Ok`.
    pub detail: String,
    /// Set when the recipient acknowledged the alarm in its answer (an alert manager's ORA^R41): that stops
    /// the chain exactly like a dashboard acknowledge. The recipient's name, as the target reports it.
    pub acknowledged_by: Option<String>,
}

/// A configured target, ready to deliver.
#[derive(Debug)]
pub enum Target {
    /// HTTP(S) POST.
    Webhook(webhook::Webhook),
    /// E-mail.
    Smtp(smtp::Smtp),
    /// An IHE PCD ACM Alert Manager.
    Acm(acm_target::AcmTarget),
}

impl Target {
    /// Builds `targets[index]`, relative paths against `base_dir` (reads its CA file and the system's roots:
    /// call it on a blocking thread of the runtime; an `acm` target starts its link and heartbeat there).
    pub fn build(config: &NotifyConfig, index: usize, base_dir: &std::path::Path) -> Result<Target, NotifyError> {
        let key = format!("notify.targets[{index}]");
        let t = config
            .targets
            .get(index)
            .ok_or_else(|| NotifyError::Setup { key: key.clone(), reason: "no such target".into() })?;
        Ok(match t.kind {
            TargetKind::Webhook => Target::Webhook(webhook::Webhook::new(&key, t, base_dir)?),
            TargetKind::Smtp => Target::Smtp(smtp::Smtp::new(&key, t, base_dir)?),
            TargetKind::Acm => {
                let runtime = tokio::runtime::Handle::try_current().map_err(|e| NotifyError::Setup {
                    key: key.clone(),
                    reason: format!("an acm target starts on the runtime: {e}"),
                })?;
                Target::Acm(acm_target::AcmTarget::new(&key, t, base_dir, &runtime)?)
            }
        })
    }

    /// Delivers one notification: `Ok` once the target took it.
    pub async fn deliver(&self, notification: &Notification) -> Result<Receipt, NotifyError> {
        match self {
            Target::Webhook(w) => w.deliver(notification).await,
            Target::Smtp(s) => s.deliver(notification).await,
            Target::Acm(a) => a.deliver(notification).await,
        }
    }

    /// The kind's config name.
    pub fn kind(&self) -> TargetKind {
        match self {
            Target::Webhook(_) => TargetKind::Webhook,
            Target::Smtp(_) => TargetKind::Smtp,
            Target::Acm(_) => TargetKind::Acm,
        }
    }

    /// The ACM link's state, for an `acm` target.
    pub fn acm_link(&self) -> Option<tokio::sync::watch::Receiver<acm_client::AcmLinkStatus>> {
        match self {
            Target::Acm(a) => Some(a.client().link()),
            _ => None,
        }
    }

    /// Ends what the target keeps open: an ACM link sends its last heartbeat (phase `end`).
    pub async fn shutdown(&self) {
        if let Target::Acm(a) = self {
            a.shutdown(std::time::Duration::from_secs(2)).await;
        }
    }
}

/// One target's figures since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct TargetStats {
    /// Delivery attempts.
    pub attempts: AtomicU64,
    /// Attempts the target took.
    pub delivered: AtomicU64,
    /// Attempts that failed.
    pub failed: AtomicU64,
    /// Acknowledges that came from this target (receipts and links).
    pub acknowledged: AtomicU64,
    /// Whether the latest attempt failed.
    pub failing: AtomicBool,
    /// Delivery attempts that failed since the last one that succeeded.
    pub delivery: Failures,
    /// For an ACM target: the link lost (heartbeats or alarms unanswered) since it was last up.
    pub link: Failures,
}

impl TargetStats {
    /// The run of failures (deliveries first, then the link) long enough to call the target failing at `now`.
    pub fn failing_at(&self, now: crate::vitals::Timestamp) -> Option<Problem> {
        self.delivery.failing_at(now).or_else(|| self.link.failing_at(now))
    }
}

/// A run of failures with no success between.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// When the first of them happened.
    pub since: crate::vitals::Timestamp,
    /// How many.
    pub failures: u64,
    /// The latest one's reason.
    pub reason: String,
}

/// After this many failures in a row a target counts as failing on `/api/status`, the dashboard, `/readyz` and
/// `vigil_notify_target_failing`.
pub const FAILING_AFTER_FAILURES: u64 = 3;
/// A target whose failures have lasted this long (seconds) counts as failing whatever their number.
pub const FAILING_AFTER_S: i64 = 30;

/// Counts a run of failures until the next success.
#[derive(Debug, Default)]
pub struct Failures(std::sync::Mutex<Option<Problem>>);

impl Failures {
    /// Records a failure at `at`.
    pub fn record_failure(&self, reason: &str, at: crate::vitals::Timestamp) {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match p.as_mut() {
            Some(p) => {
                p.failures += 1;
                reason.clone_into(&mut p.reason);
            }
            None => *p = Some(Problem { since: at, failures: 1, reason: reason.to_owned() }),
        }
    }

    /// Records a success: the run is over.
    pub fn record_success(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The current run, if any.
    pub fn current(&self) -> Option<Problem> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The run, if it is long enough to call the target failing at `now` ([`FAILING_AFTER_FAILURES`] in a row,
    /// or lasting [`FAILING_AFTER_S`]).
    pub fn failing_at(&self, now: crate::vitals::Timestamp) -> Option<Problem> {
        let p = self.current()?;
        let long = (now - p.since).num_seconds() >= FAILING_AFTER_S;
        (p.failures >= FAILING_AFTER_FAILURES || long).then_some(p)
    }
}

/// Every target's figures, by name.
pub type Stats = BTreeMap<String, Arc<TargetStats>>;

/// Acknowledges an alarm on behalf of a target (its receipt said so, or its acknowledge link was used): the
/// same command path as the dashboard and MQTT, so the bed's event, the audit trail and the chain's stop follow
/// from it. `via` says how (`link`, `receipt`); the actor is `notify:<target>` (with the recipient's name when
/// the target reported one).
pub async fn acknowledge_from_target(
    hub: &Hub,
    stats: &Stats,
    bed: &str,
    alarm_id: &str,
    target: &str,
    recipient: Option<&str>,
    via: &str,
) -> Result<(), NotifyError> {
    // A recipient name comes from outside: shortened and stripped of anything but plain characters.
    let recipient: Option<String> =
        recipient.map(|r| r.chars().filter(|c| c.is_alphanumeric() || " .-_@".contains(*c)).take(64).collect());
    let actor = match recipient.filter(|r| !r.is_empty()) {
        Some(r) => format!("notify:{target}:{r}"),
        None => format!("notify:{target}"),
    };
    let request = CommandRequest {
        bed: bed.into(),
        command: Command::Acknowledge { alarm_id: Some(alarm_id.to_owned()) },
        actor: actor.clone(),
    };
    let outcome = hub.command(request).await;
    match &outcome {
        Ok(_) => {
            if let Some(s) = stats.get(target) {
                s.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            tracing::info!(bed, alarm_id, target, actor = %actor, via, "notify: alarm acknowledged by a recipient");
        }
        Err(e) => {
            tracing::warn!(bed, alarm_id, target, via, reason = %e, "notify: a recipient's acknowledge was refused")
        }
    }
    outcome.map(|_| ()).map_err(NotifyError::from)
}
