//! The shift-start self-test: a marked test alarm (`test: true`, condition `self_test`) sent through the whole
//! alarm path of one bed, each hop confirming it separately, with the time it took (docs/operations.md,
//! "Self-test").
//!
//! The test alarm enters the bed like any command ([`Command::SelfTest`]): the bed task numbers it (its
//! `bed_seq` stays contiguous), stores it with its outbox row before it announces it, and ends it by itself a few
//! seconds later. The hops after the engine are a list of named [`Hop`]s, each armed before the alarm is raised
//! and then asked to confirm it: `store` (read back from the event log), `mqtt` (the broker acknowledged its
//! outbox row), `dashboard` (the event reached the fan-out every dashboard stream reads). A notification target
//! is one more `Hop`. `vigil self-test` adds its own independent MQTT subscriber; the dashboard's button adds the
//! browser.
//!
//! A scheduled run ([`run_schedule`], `selftest.every`) that fails raises the technical alarm `selftest_failed`
//! (medium) on its bed; any run that passes ends it. The last result is on `/metrics` (`vigil_selftest_*`) and in
//! `/readyz`'s body.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub mod client;

use crate::alarm::lifecycle::SELFTEST_FAILED;
use crate::event::{AlarmEvent, AlarmPhase, Command, CommandRequest, Event};
use crate::hub::{Hub, HubEvent};
use crate::mqtt::{LinkState, LinkStatus};
use crate::store::Store;
use crate::vitals::Timestamp;

/// A healthy alarm path confirms every hop well within this; a hop not confirmed by then fails.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// How often a hop that reads the store looks again.
const POLL: Duration = Duration::from_millis(25);
/// Who the scheduled self-test acts as (in the audit trail and the alarm's evidence).
pub const SCHEDULER: &str = "vigil-scheduler";

/// Why a self-test did not run at all (a run that ran and failed is a [`Report`] with `passed: false`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelfTestError {
    /// No such bed.
    #[error("unknown bed '{0}'")]
    UnknownBed(String),
    /// The ward has no bed to test.
    #[error("there is no bed to test")]
    NoBeds,
    /// Another self-test is running (one at a time, ward-wide).
    #[error("a self-test is already running; try again in a few seconds")]
    Busy,
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `vigil self-test` or the dashboard's button.
    Manual,
    /// `selftest.every`.
    Scheduled,
}

/// One hop's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HopResult {
    /// `engine`, `store`, `mqtt`, `dashboard` (and, added by the client, `mqtt-subscriber`, `browser`).
    pub hop: String,
    /// Whether the hop confirmed the test alarm in time.
    pub ok: bool,
    /// Milliseconds from raising the test alarm to this hop's confirmation (or to giving up).
    pub ms: u64,
    /// What was confirmed, or why not.
    pub detail: String,
}

/// The outcome of one self-test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The bed tested.
    pub bed: String,
    /// The test alarm's id, if the engine raised it.
    pub alarm_id: Option<String>,
    /// Its `bed_seq`.
    pub bed_seq: Option<u64>,
    /// When the run started.
    pub started: Timestamp,
    /// Who ran it.
    pub by: String,
    /// What started it.
    pub trigger: Trigger,
    /// Every hop passed.
    pub passed: bool,
    /// Milliseconds the whole run took.
    pub ms: u64,
    /// Each hop in path order.
    pub hops: Vec<HopResult>,
}

impl Report {
    /// The names of the hops that failed, joined for a message: `mqtt, dashboard`.
    pub fn failed_hops(&self) -> String {
        self.hops.iter().filter(|h| !h.ok).map(|h| h.hop.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// The confirmation an armed hop waits for, given the test alarm's start event and the run's deadline:
/// `Ok(what was seen)` or `Err(why not)`. A hop that can say why it is late returns that at the deadline; one that
/// does not return by then is cut off with "not confirmed within 10 s".
pub type Confirm = Box<dyn FnOnce(AlarmEvent, Instant) -> BoxFuture<'static, Result<String, String>> + Send>;
/// How long after the deadline the runner waits for a hop's own reason before cutting it off.
const GRACE: Duration = Duration::from_millis(500);

/// One hop of the alarm path after the engine.
pub trait Hop: Send + Sync {
    /// Its name in the report and the metrics.
    fn name(&self) -> &str;
    /// Whether it is on the path of `bed`'s alarms (a notification target may take only some beds).
    fn takes(&self, _bed: &str) -> bool {
        true
    }
    /// Called before the test alarm is raised (so nothing it must see can pass before it looks); returns what
    /// confirms it, or why this hop cannot confirm anything (e.g. MQTT disabled).
    fn arm(&self) -> BoxFuture<'static, Result<Confirm, String>>;
}

/// `store`: the test alarm is read back from the event log, marked as a test.
struct StoreHop(Store);

impl Hop for StoreHop {
    fn name(&self) -> &str {
        "store"
    }

    fn arm(&self) -> BoxFuture<'static, Result<Confirm, String>> {
        let store = self.0.clone();
        async move {
            let confirm: Confirm = Box::new(move |alarm: AlarmEvent, _| {
                async move {
                    loop {
                        let (s, bed, seq) = (store.clone(), alarm.bed.to_string(), alarm.bed_seq);
                        match blocking(move || s.stored_alarm(&bed, seq)).await? {
                            Some(a) if a.test && a.alarm_id == alarm.alarm_id => {
                                return Ok(format!("in the event log and the outbox (bed_seq {seq})"));
                            }
                            Some(a) => return Err(format!("bed_seq {seq} holds another event: {}", a.alarm_id)),
                            None => tokio::time::sleep(POLL).await,
                        }
                    }
                }
                .boxed()
            });
            Ok(confirm)
        }
        .boxed()
    }
}

/// `mqtt`: the broker acknowledged the test alarm's outbox row (the publisher marks a row delivered on its
/// PUBACK).
struct MqttHop {
    store: Store,
    link: Option<watch::Receiver<LinkStatus>>,
}

impl Hop for MqttHop {
    fn name(&self) -> &str {
        "mqtt"
    }

    fn arm(&self) -> BoxFuture<'static, Result<Confirm, String>> {
        let (store, link) = (self.store.clone(), self.link.clone());
        async move {
            let Some(link) = link else {
                return Err("MQTT is disabled (mqtt.mode = \"disabled\"): integrators are not told".to_owned());
            };
            let s = store.clone();
            let after = blocking(move || s.outbox_last_id()).await?;
            let confirm: Confirm = Box::new(move |alarm: AlarmEvent, deadline: Instant| {
                async move {
                    loop {
                        let (s, bed, seq) = (store.clone(), alarm.bed.to_string(), alarm.bed_seq);
                        match blocking(move || s.alarm_delivery(&bed, seq, after)).await? {
                            Some(d) if d.delivered.is_some() => {
                                let broker = link.borrow().broker.clone();
                                return Ok(format!("acknowledged by the broker at {broker} (PUBACK)"));
                            }
                            Some(d) if d.quarantined.is_some() => {
                                return Err(format!("set aside: {}", d.quarantined.unwrap_or_default()));
                            }
                            Some(_) => {}
                            None => return Err("no outbox row for the test alarm".into()),
                        }
                        if Instant::now() + POLL >= deadline {
                            return Err(link_problem(&link.borrow()));
                        }
                        tokio::time::sleep(POLL).await;
                    }
                }
                .boxed()
            });
            Ok(confirm)
        }
        .boxed()
    }
}

/// Why the broker has not acknowledged: the link's state and its last error.
fn link_problem(l: &LinkStatus) -> String {
    let state = match l.state {
        LinkState::Connected => "connected, but no acknowledgement",
        LinkState::Connecting => "not connected (connecting)",
        LinkState::Refused => "refused by the broker",
        LinkState::Stopped => "the publisher stopped",
        LinkState::Disabled => "disabled",
    };
    let error = l.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
    format!("not acknowledged by the broker at {}: {state}{error}", l.broker)
}

/// `dashboard`: the test alarm reached the hub's fan-out, which every dashboard event stream (SSE) reads.
struct DashboardHop {
    hub: Arc<Hub>,
    streams: Arc<AtomicUsize>,
}

impl Hop for DashboardHop {
    fn name(&self) -> &str {
        "dashboard"
    }

    fn arm(&self) -> BoxFuture<'static, Result<Confirm, String>> {
        // Subscribed now, before the alarm exists: the stream cannot miss it.
        let (_, mut rx) = self.hub.subscribe();
        let streams = self.streams.clone();
        async move {
            let confirm: Confirm = Box::new(move |alarm: AlarmEvent, _| {
                async move {
                    loop {
                        match rx.recv().await {
                            Ok(ev) if is_start_of(&ev, &alarm) => {
                                let n = streams.load(Ordering::Relaxed);
                                let open =
                                    if n == 1 { "1 open stream".to_owned() } else { format!("{n} open streams") };
                                return Ok(format!("on the dashboard's event stream as event {} ({open})", ev.id));
                            }
                            Ok(_) => {}
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                tracing::debug!(missed = n, "self-test: the dashboard hop lagged; still looking");
                            }
                            Err(broadcast::error::RecvError::Closed) => return Err("the hub closed".into()),
                        }
                    }
                }
                .boxed()
            });
            Ok(confirm)
        }
        .boxed()
    }
}

/// `notify:<name>`: the notification target took the test alarm (its delivery succeeded: an HTTP 2xx, SMTP 250, an
/// Alert Manager's `AA`), read from the notification queue; at the deadline, the latest attempt's error.
struct NotifyHop {
    hop: String,
    target: String,
    beds: Option<Vec<String>>,
    store: Store,
}

impl Hop for NotifyHop {
    fn name(&self) -> &str {
        &self.hop
    }

    fn takes(&self, bed: &str) -> bool {
        self.beds.as_ref().is_none_or(|b| b.iter().any(|x| x == bed))
    }

    fn arm(&self) -> BoxFuture<'static, Result<Confirm, String>> {
        let (store, target) = (self.store.clone(), self.target.clone());
        let confirm: Confirm = Box::new(move |alarm: AlarmEvent, deadline: Instant| {
            async move {
                loop {
                    let (s, t, a) = (store.clone(), target.clone(), alarm.alarm_id.clone());
                    let state = blocking(move || s.notify_first_delivery(&t, &a)).await?;
                    match &state {
                        Some(d) if d.delivered.is_some() => {
                            let receipt = d.detail.as_deref().unwrap_or("delivered");
                            return Ok(format!("{target} took the test alarm: {receipt}"));
                        }
                        _ => {}
                    }
                    if Instant::now() + POLL >= deadline {
                        return Err(match state {
                            None => format!("nothing was queued for {target}"),
                            Some(d) if d.attempts == 0 => format!("{target}: not attempted yet"),
                            Some(d) => format!(
                                "{target} did not take the test alarm ({} attempts): {}",
                                d.attempts,
                                d.detail.unwrap_or_default()
                            ),
                        });
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            .boxed()
        });
        futures::future::ready(Ok(confirm)).boxed()
    }
}

fn is_start_of(ev: &HubEvent, alarm: &AlarmEvent) -> bool {
    matches!(&ev.event, Event::Alarm(a) if a.alarm_id == alarm.alarm_id && a.seq == alarm.seq && a.test)
}

/// A store read on a blocking thread (SQLite never runs on the async workers).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("store: {e}")),
        Err(e) => Err(format!("store read failed: {e}")),
    }
}

/// What `/metrics` and `/readyz` show: the last result and how many runs passed and failed since start.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Status {
    /// The last run's report.
    pub last: Option<Report>,
    /// Runs that passed since start.
    pub passed: u64,
    /// Runs that failed since start.
    pub failed: u64,
}

/// Runs self-tests (one at a time) and keeps the last result.
#[derive(Clone)]
pub struct SelfTest {
    hub: Arc<Hub>,
    hops: Arc<Vec<Box<dyn Hop>>>,
    status: Arc<watch::Sender<Status>>,
    running: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for SelfTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfTest").finish_non_exhaustive()
    }
}

impl SelfTest {
    /// The daemon's self-test: hops `store`, `mqtt` (failing when `mqtt` is `None`: disabled), `dashboard`
    /// (`streams` counts the open dashboard event streams) and `notify:<name>` for each notification target of
    /// `notify` that takes the tested bed.
    pub fn new(
        hub: Arc<Hub>,
        store: Store,
        mqtt: Option<watch::Receiver<LinkStatus>>,
        streams: Arc<AtomicUsize>,
        notify: &crate::notify::config::NotifyConfig,
    ) -> SelfTest {
        let mut hops: Vec<Box<dyn Hop>> = vec![
            Box::new(StoreHop(store.clone())),
            Box::new(MqttHop { store: store.clone(), link: mqtt }),
            Box::new(DashboardHop { hub: hub.clone(), streams }),
        ];
        for t in &notify.targets {
            hops.push(Box::new(NotifyHop {
                hop: format!("notify:{}", t.name),
                target: t.name.clone(),
                beds: t.beds.clone(),
                store: store.clone(),
            }));
        }
        SelfTest::with_hops(hub, hops)
    }

    /// A self-test with these hops after the engine, in path order.
    pub fn with_hops(hub: Arc<Hub>, hops: Vec<Box<dyn Hop>>) -> SelfTest {
        SelfTest {
            hub,
            hops: Arc::new(hops),
            status: Arc::new(watch::channel(Status::default()).0),
            running: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The names of the hops in path order, the engine first.
    pub fn hop_names(&self) -> Vec<&str> {
        std::iter::once("engine").chain(self.hops.iter().map(|h| h.name())).collect()
    }

    /// The last result and the counts, as they change.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// The bed a run without one tests: the first configured bed.
    pub fn default_bed(&self) -> Result<String, SelfTestError> {
        self.hub.beds().first().map(|b| b.id.to_string()).ok_or(SelfTestError::NoBeds)
    }

    /// Runs one self-test of `bed` as `by`. Every hop is confirmed or given up on within [`DEADLINE`].
    pub async fn run(&self, bed: &str, by: &str, trigger: Trigger) -> Result<Report, SelfTestError> {
        let info =
            self.hub.beds().into_iter().find(|b| &*b.id == bed).ok_or_else(|| SelfTestError::UnknownBed(bed.into()))?;
        let _one = self.running.try_lock().map_err(|_| SelfTestError::Busy)?;
        let started = Utc::now();
        let t0 = Instant::now();
        let deadline = t0 + DEADLINE;
        let ms = |at: Instant| at.duration_since(t0).as_millis() as u64;
        let mut armed: Vec<(&str, Result<Confirm, String>)> = Vec::with_capacity(self.hops.len());
        for h in self.hops.iter().filter(|h| h.takes(bed)) {
            armed.push((h.name(), h.arm().await));
        }
        let request = CommandRequest { bed: info.id.clone(), command: Command::SelfTest, actor: by.to_owned() };
        let answer = tokio::time::timeout_at(deadline, self.hub.command(request)).await;
        let (raised, engine_detail) = match answer {
            Ok(Ok(events)) => match events.into_iter().find_map(|e| match e {
                Event::Alarm(a) if a.test && a.phase == AlarmPhase::Start => Some(a),
                _ => None,
            }) {
                Some(a) => {
                    let detail = format!("raised test alarm {} (bed_seq {})", a.alarm_id, a.bed_seq);
                    (Some(a), Ok(detail))
                }
                None => (None, Err("the bed raised no test alarm".to_owned())),
            },
            Ok(Err(e)) => (None, Err(format!("the bed refused: {e}"))),
            Err(_) => (None, Err(format!("the bed did not answer within {} s", DEADLINE.as_secs()))),
        };
        let mut hops = vec![hop("engine", ms(Instant::now()), engine_detail)];
        let confirmations = armed.into_iter().map(|(name, armed)| {
            let alarm = raised.clone();
            async move {
                let outcome = match (armed, alarm) {
                    (Err(why), _) => Err(why),
                    (Ok(_), None) => Err("not reached: the engine raised no test alarm".to_owned()),
                    (Ok(confirm), Some(alarm)) => {
                        match tokio::time::timeout_at(deadline + GRACE, confirm(alarm, deadline)).await {
                            Ok(r) => r,
                            Err(_) => Err(format!("not confirmed within {} s", DEADLINE.as_secs())),
                        }
                    }
                };
                (name, Instant::now(), outcome)
            }
        });
        for (name, at, outcome) in futures::future::join_all(confirmations).await {
            hops.push(hop(name, ms(at), outcome));
        }
        let report = Report {
            bed: bed.to_owned(),
            alarm_id: raised.as_ref().map(|a| a.alarm_id.clone()),
            bed_seq: raised.as_ref().map(|a| a.bed_seq),
            started,
            by: by.to_owned(),
            trigger,
            passed: hops.iter().all(|h| h.ok),
            ms: ms(Instant::now()),
            hops,
        };
        if report.passed {
            tracing::info!(bed, ms = report.ms, by, "self-test passed");
        } else {
            tracing::warn!(bed, failed = %report.failed_hops(), by, "self-test FAILED");
        }
        self.conclude(&report).await;
        self.status.send_modify(|s| {
            if report.passed {
                s.passed += 1;
            } else {
                s.failed += 1;
            }
            s.last = Some(report.clone());
        });
        Ok(report)
    }

    /// A scheduled run that failed raises `selftest_failed` on its bed; a run that passed ends it if it is there.
    async fn conclude(&self, report: &Report) {
        let failed = (!report.passed).then(|| report.failed_hops());
        let shown = self.hub.snapshot().beds.iter().any(|b| {
            *b.info.id == *report.bed
                && b.alarms.as_ref().is_some_and(|a| a.alarms.iter().any(|x| x.condition == SELFTEST_FAILED))
        });
        let needed = match &failed {
            Some(_) => report.trigger == Trigger::Scheduled,
            None => shown,
        };
        if !needed {
            return;
        }
        let request = CommandRequest {
            bed: report.bed.as_str().into(),
            command: Command::SelfTestResult { failed },
            actor: report.by.clone(),
        };
        if let Err(e) = self.hub.command(request).await {
            tracing::error!(bed = %report.bed, error = %e, "self-test: cannot record the result on the bed");
        }
    }
}

fn hop(name: &str, ms: u64, outcome: Result<String, String>) -> HopResult {
    let (ok, detail) = match outcome {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    HopResult { hop: name.to_owned(), ok, ms, detail }
}

/// Runs the self-test of `bed` every `period` (the first one period after start) until `cancel` fires.
pub async fn run_schedule(selftest: SelfTest, bed: String, period: Duration, cancel: CancellationToken) {
    let mut clock = tokio::time::interval_at(Instant::now() + period, period);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(bed, every = ?period, "scheduled self-test enabled");
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = clock.tick() => {
                if let Err(e) = selftest.run(&bed, SCHEDULER, Trigger::Scheduled).await {
                    tracing::warn!(bed, error = %e, "scheduled self-test did not run");
                }
            }
        }
    }
}
