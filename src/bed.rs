//! One task per bed owns that bed's state: its alarm engine (with the session), its latest values and its
//! sources' status. Everything reaches it through its inboxes (source events, commands, the clock); everything it
//! decides is written to the store first and then announced on the hub.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::alarm::{DeviceSignal, Engine, Now, Profile};
use crate::clock;
use crate::event::{
    AlarmEvent, AlarmKind, AlarmPhase, AlarmState, DeviceStatus, Event, LinkState, OtherVitalValue, Priority,
    VitalValue, VitalsUpdate,
};
use crate::hub::{BedCommand, CommandError, Hub};
use crate::ingest::protocol::{Frame, SensorFlags};
use crate::ingest::{SourceEvent, SourceId, SourceReceiver};
use crate::store::{Store, StoreError};
use crate::vitals::{measured_at, BedId, Parameter, Reading, Timestamp, ValueStatus};

/// How often the engine's clock advances without input (no-data timers, delays, escalation).
const TICK: Duration = Duration::from_secs(1);
/// How long a stopping bed waits for its sources' last events.
const DRAIN: Duration = Duration::from_secs(1);
/// A source's status is announced when its link or error counts change, and otherwise at most this often (the
/// frame counter alone changes every second and is not worth a retained message each time).
const DEVICE_REFRESH: chrono::TimeDelta = chrono::TimeDelta::seconds(10);
/// A device's error text is cut to this many characters before it enters an event: it comes from outside (a
/// decoder quoting bytes, an OS error), and every payload must stay far below the broker's packet limit.
pub const MAX_ERROR_CHARS: usize = 200;

/// `text` cut to [`MAX_ERROR_CHARS`] characters, with `…` when it was longer.
pub fn bounded_error(text: String) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Alarm and session events kept for a retry while the store fails, at most (then the oldest are dropped, which
/// leaves the `bed_seq` gap that tells consumers of the loss).
const MAX_UNSTORED: usize = 10_000;
/// How long a bed task that died stays down before it is restarted (the `bed_unmonitored` alarm is visible
/// meanwhile), doubling while it keeps dying, up to [`RESTART_MAX`].
const RESTART_MIN: Duration = Duration::from_secs(1);
/// See [`RESTART_MIN`].
const RESTART_MAX: Duration = Duration::from_secs(30);
/// The technical condition a supervisor raises while a bed task is down.
pub const BED_UNMONITORED: &str = "bed_unmonitored";

/// What a bed task needs.
pub struct BedTask {
    /// The bed.
    pub bed: BedId,
    /// Its alarm engine.
    pub engine: Engine,
    /// Its alarm profile, to build a fresh engine when the task is restarted after a panic.
    pub profile: Arc<Profile>,
    /// Where events are written before they are announced.
    pub store: Store,
    /// Where they are announced.
    pub hub: Arc<Hub>,
    /// Events from the bed's sources.
    pub sources: SourceReceiver,
    /// Commands routed by the hub.
    pub commands: mpsc::Receiver<BedCommand>,
    /// Each source's static description (kind, device), by source id.
    pub descriptions: HashMap<String, (String, String)>,
    /// How long each source (by source id) may stay silent before `monitor_disconnected`: serial and MLLP
    /// sources (`silence_alarm_s`, or the default from the device's update period). Absent: not watched (the
    /// in-process simulator announces its own link).
    pub silence: HashMap<String, Duration>,
    /// The last `session_seq` given to one of this bed's session events (from the store at start).
    pub session_seq: u64,
    /// Alarm and session events the store refused (disk full, read-only): written first on the next emit, so
    /// they reach MQTT once the disk is back, in order and without a `bed_seq` gap.
    pub unstored: Vec<Event>,
}

/// A bed's engine as the store remembers it: numbering after the last stored `bed_seq`, and the live alarms,
/// the running session and the limit overrides taken back (after a restart, a crash or a bed task's panic).
pub fn restored_engine(bed: &BedId, profile: Arc<Profile>, store: &Store) -> Result<Engine, StoreError> {
    let mut engine = Engine::new(bed.clone(), profile, store.next_bed_seq(bed)?);
    let alarms = store.latest_alarms(bed)?.map(|a| a.alarms).unwrap_or_default();
    let sessions = store.session_events(bed, chrono::DateTime::UNIX_EPOCH, Utc::now() + chrono::TimeDelta::days(1))?;
    let restored = engine.restore(alarms, &sessions);
    if restored > 0 || engine.session().is_some() {
        tracing::info!(bed = %bed, alarms = restored, session = ?engine.session().map(|s| s.phase), "bed state restored from the store");
    }
    Ok(engine)
}

/// The body a supervisor runs and restarts: [`BedTask::run_once`] in the daemon; tests pass one that panics.
pub type Body = for<'a> fn(&'a mut BedTask, &'a CancellationToken) -> BoxFuture<'a, ()>;

/// Most other numerics (none of Vigil's parameters) a bed keeps: the first codes seen, so a device that invents
/// codes cannot grow the vitals without bound.
const MAX_OTHER_VALUES: usize = 64;

/// The bed's latest values, as its vitals publish them.
#[derive(Default)]
struct Latest {
    /// Vigil's parameters.
    values: BTreeMap<Parameter, VitalValue>,
    /// Other numerics, by MDC code.
    other: BTreeMap<u32, OtherVitalValue>,
}

#[derive(Default)]
struct SourceState {
    status: Option<DeviceStatus>,
    announced: Option<Timestamp>,
    sensor: SensorFlags,
    demo: bool,
    /// The source's name as the engine knows it (made once, shared by every reading).
    name: Option<Arc<str>>,
    /// When the last frame arrived, or the link came up: the silence clock starts here.
    heard: Option<Timestamp>,
    /// Whether the silence alarm was raised (and the next frame must clear it).
    silent: bool,
}

impl BedTask {
    /// Runs until `cancel` fires and the sources have drained, restarting the task when it panics.
    pub fn run(self, cancel: CancellationToken) -> impl std::future::Future<Output = ()> + Send {
        // Not an `async fn`: that would hold the task's state twice (its argument and the supervisor's copy).
        self.supervise(cancel, |t, c| t.run_once(c).boxed())
    }

    /// Runs `body` until it returns (cancelled and drained). When it panics, the bed is not monitored: a high
    /// technical alarm `bed_unmonitored` is stored and announced, the task waits (1 s, doubling while it keeps
    /// dying, up to 30 s), gets a fresh engine (the panicked one may be half-updated), ends the alarm and runs
    /// again. Its inboxes survive the panic, so what the sources sent meanwhile is processed after the restart.
    pub fn supervise(self, cancel: CancellationToken, body: Body) -> impl std::future::Future<Output = ()> + Send {
        // The block captures the task and uses it in place: an `async fn` taking `mut self` would keep its argument
        // and its binding, two copies of the whole task (engine included) in every bed's future.
        let mut task = self;
        async move {
            task.supervised(&cancel, body).await;
        }
    }

    async fn supervised(&mut self, cancel: &CancellationToken, body: Body) {
        let mut delay = RESTART_MIN;
        loop {
            let outcome = std::panic::AssertUnwindSafe(body(self, cancel)).catch_unwind().await;
            let Err(panic) = outcome else { return };
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            tracing::error!(bed = %self.bed, reason = %what, restart_in = ?delay, "bed task died; restarting");
            let alarm_id = self.unmonitored(&what, AlarmPhase::Start, None).await;
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RESTART_MAX);
            self.unmonitored(&what, AlarmPhase::End, alarm_id).await;
            match restored_engine(&self.bed, self.profile.clone(), &self.store) {
                Ok(engine) => self.engine = engine,
                Err(e) => {
                    tracing::error!(bed = %self.bed, error = %e, "cannot restore the bed from the store; starting afresh");
                    let next = self.engine.next_bed_seq() + 2;
                    self.engine = Engine::new(self.bed.clone(), self.profile.clone(), next);
                }
            }
            if cancel.is_cancelled() {
                return;
            }
        }
    }

    /// Stores and announces the `bed_unmonitored` alarm's start or end (the engine is out of action, so the
    /// supervisor numbers it: the next `bed_seq` from the store). Returns the alarm id.
    async fn unmonitored(&mut self, reason: &str, phase: AlarmPhase, alarm_id: Option<String>) -> Option<String> {
        let now = Utc::now();
        let bed_seq = match self.store.next_bed_seq(&self.bed) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(bed = %self.bed, error = %e, "cannot number the bed_unmonitored alarm");
                return alarm_id;
            }
        };
        let alarm_id = alarm_id.unwrap_or_else(|| format!("{}-{bed_seq}", self.bed));
        let start = phase == AlarmPhase::Start;
        let event = AlarmEvent {
            time: now,
            bed: self.bed.clone(),
            alarm_id: alarm_id.clone(),
            seq: if start { 1 } else { 2 },
            bed_seq,
            kind: AlarmKind::Technical,
            source: crate::event::AlarmSource::Vigil,
            condition: BED_UNMONITORED.into(),
            parameter: None,
            priority: Priority::High,
            phase,
            state: if start { AlarmState::Active } else { AlarmState::Cleared },
            value: None,
            limit: None,
            evidence: serde_json::Map::from_iter([("reason".to_owned(), bounded_error(reason.to_owned()).into())]),
            message: if start {
                "Bed not monitored: its task stopped; restarting".into()
            } else {
                "Bed monitored again".into()
            },
            by: None,
            audio_paused_until: None,
            test: false,
        };
        // The engine's own live alarms stay in the snapshot (the restarted engine takes them back from it).
        let mut snapshot = self.engine.active_alarms(now);
        snapshot.alarms.retain(|a| a.condition != BED_UNMONITORED);
        if start {
            snapshot.alarms.push(event.clone());
        }
        snapshot.bed_seq = bed_seq;
        let events = vec![Event::Alarm(event), Event::Alarms(snapshot)];
        if let Err(e) = self.store.append_async(events.clone()).await {
            tracing::error!(bed = %self.bed, error = %e, "could not store the bed_unmonitored alarm");
        }
        for event in events {
            self.hub.publish(event);
        }
        Some(alarm_id)
    }

    /// One life of the task: runs until `cancel` fires and the sources have drained.
    pub async fn run_once(&mut self, cancel: &CancellationToken) {
        let mut latest = Latest::default();
        let mut sources: HashMap<String, SourceState> = HashMap::new();
        let mut clock = tokio::time::interval(TICK);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.announce_initial_state();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(cmd) = self.commands.recv() => self.command(cmd).await,
                event = self.sources.recv() => match event {
                    Some(event) => self.source_event(*event, &mut latest, &mut sources).await,
                    // Every source has ended; keep serving commands and the clock until cancelled.
                    None => self.idle_until_cancelled(cancel).await,
                },
                _ = clock.tick() => {
                    self.hub.beat(&self.bed);
                    let now = clock::now();
                    let mut events = self.engine.tick(now);
                    self.check_silence(&mut sources, now, &mut events);
                    self.emit(events).await;
                }
            }
        }
        // Drain what the sources had already sent, so nothing in flight is lost.
        let deadline = tokio::time::Instant::now() + DRAIN;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.sources.recv()).await {
            self.source_event(*event, &mut latest, &mut sources).await;
        }
    }

    /// A source that was heard (a frame, or its link came up) and then says nothing for its silence time is
    /// disconnected as far as alarming goes: a cable pulled from a serial adapter or a hung TCP peer often gives
    /// no error at all. The next frame ends it.
    fn check_silence(&mut self, sources: &mut HashMap<String, SourceState>, now: Now, out: &mut Vec<Event>) {
        for (key, state) in sources.iter_mut() {
            let (Some(limit), Some(heard)) = (self.silence.get(key), state.heard) else { continue };
            if state.silent || (now.wall - heard).to_std().unwrap_or_default() < *limit {
                continue;
            }
            state.silent = true;
            let reason = format!("no data for {} s", limit.as_secs());
            tracing::warn!(bed = %self.bed, source = %key, %reason, "source silent");
            out.extend(self.engine.device(&DeviceSignal::Disconnected { source: key.clone(), reason }, now));
        }
    }

    async fn idle_until_cancelled(&mut self, cancel: &CancellationToken) {
        let mut clock = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                Some(cmd) = self.commands.recv() => self.command(cmd).await,
                _ = clock.tick() => {
                    self.hub.beat(&self.bed);
                    let events = self.engine.tick(clock::now());
                    self.emit(events).await;
                }
            }
        }
    }

    fn announce_initial_state(&mut self) {
        let now = Utc::now();
        let alarms = self.engine.active_alarms(now);
        self.hub.publish(Event::Alarms(alarms));
        if let Some(session) = self.engine.session() {
            self.hub.publish(Event::Session(session));
        }
    }

    async fn command(&mut self, cmd: BedCommand) {
        let clock = clock::now();
        let now = clock.wall;
        let BedCommand { request, reply } = cmd;
        let mut result = self.engine.command(&request.command, &request.actor, clock);
        if let Ok(events) = &mut result {
            self.number_sessions(events);
        }
        let outcome = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
        if let Err(e) = self.store.record_action(now, &request.actor, &self.bed, &request.command, outcome) {
            tracing::error!(bed = %self.bed, error = %e, "could not store an action");
        }
        let answer = match result {
            Ok(events) => {
                tracing::info!(bed = %self.bed, actor = %request.actor, command = ?request.command, "command accepted");
                self.emit(events.clone()).await;
                Ok(events)
            }
            Err(e) => {
                tracing::warn!(bed = %self.bed, actor = %request.actor, command = ?request.command, reason = %e, "command refused");
                Err(CommandError::Refused(e.to_string()))
            }
        };
        let _ = reply.send(answer);
    }

    async fn source_event(
        &mut self,
        event: SourceEvent,
        latest: &mut Latest,
        sources: &mut HashMap<String, SourceState>,
    ) {
        match event {
            SourceEvent::Frame { source, frame, received } => {
                let key = source.to_string();
                let state = sources.entry(key.clone()).or_default();
                let mut events = Vec::new();
                state.heard = Some(received);
                if std::mem::take(&mut state.silent) {
                    events.extend(self.engine.device(&DeviceSignal::Connected { source: key.clone() }, clock::now()));
                }
                if frame.sensor != state.sensor {
                    state.sensor = frame.sensor;
                    events.extend(
                        self.engine
                            .device(&DeviceSignal::Sensor { source: key.clone(), flags: frame.sensor }, clock::now()),
                    );
                }
                if frame.demo != state.demo {
                    state.demo = frame.demo;
                    events.extend(
                        self.engine.device(&DeviceSignal::Demo { source: key.clone(), on: frame.demo }, clock::now()),
                    );
                }
                if !frame.measurements.is_empty() || !frame.other.is_empty() {
                    let name = state.name.get_or_insert_with(|| key.as_str().into()).clone();
                    self.observe_frame(&frame, &name, received, latest, &mut events);
                }
                // After the readings, so a monitor alarm links the reading that explains it.
                if let Some(alarms) = frame.device_alarms {
                    let signal = DeviceSignal::MonitorAlarms { source: key.clone(), alarms };
                    events.extend(self.engine.device(&signal, clock::now()));
                }
                self.emit(events).await;
            }
            SourceEvent::Link { source, state: link, reason, at } => {
                let reason = reason.map(bounded_error);
                let key = source.to_string();
                {
                    let state = sources.entry(key.clone()).or_default();
                    match link {
                        LinkState::Connected => state.heard = Some(at),
                        // The link itself says it is down: its own alarm, not the silence one.
                        LinkState::Disconnected => {
                            state.heard = None;
                            state.silent = false;
                        }
                        LinkState::Connecting => {}
                    }
                }
                let signal = match link {
                    LinkState::Connected => Some(DeviceSignal::Connected { source: key.clone() }),
                    LinkState::Disconnected => Some(DeviceSignal::Disconnected {
                        source: key.clone(),
                        reason: reason.clone().unwrap_or_else(|| "link lost".into()),
                    }),
                    LinkState::Connecting => None,
                };
                let events = signal.map(|s| self.engine.device(&s, clock::now())).unwrap_or_default();
                self.emit(events).await;
                let status = self.status_of(sources, &source, at);
                status.link = link;
                if reason.is_some() {
                    status.last_error = reason;
                }
                let status = status.clone();
                sources.entry(source.to_string()).or_default().announced = Some(at);
                self.emit(vec![Event::Device(status)]).await;
            }
            SourceEvent::Counters { source, frames_ok, frames_bad, values_rejected, last_error, at } => {
                let last_error = last_error.map(bounded_error);
                let key = source.to_string();
                let signal = DeviceSignal::InputErrors {
                    source: key,
                    bad: frames_bad + values_rejected,
                    total: frames_ok + frames_bad,
                };
                let events = self.engine.device(&signal, clock::now());
                self.emit(events).await;
                let status = self.status_of(sources, &source, at);
                let errors_changed = status.frames_bad != frames_bad || status.values_rejected != values_rejected;
                if frames_ok > status.frames_ok {
                    status.last_frame = Some(at);
                }
                status.frames_ok = frames_ok;
                status.frames_bad = frames_bad;
                status.values_rejected = values_rejected;
                if last_error.is_some() {
                    status.last_error = last_error;
                }
                let status = status.clone();
                let state = sources.entry(source.to_string()).or_default();
                let due = state.announced.is_none_or(|t| at - t >= DEVICE_REFRESH);
                if errors_changed || due {
                    state.announced = Some(at);
                    self.emit(vec![Event::Device(status)]).await;
                }
            }
        }
    }

    fn observe_frame(
        &mut self,
        frame: &Frame,
        source: &Arc<str>,
        received: Timestamp,
        latest: &mut Latest,
        events: &mut Vec<Event>,
    ) {
        for m in &frame.measurements {
            let status = if frame.demo { ValueStatus::Demo } else { m.status };
            let measured = measured_at(m.observed, frame.device_time, received);
            let reading = Reading {
                bed: self.bed.clone(),
                parameter: m.parameter,
                value: m.value,
                status,
                device_time: m.observed.or(frame.device_time),
                received,
                measured,
                spot: m.spot,
                source: Some(source.clone()),
            };
            events.extend(self.engine.observe(&reading, clock::now()));
            if !m.spot {
                // The vitals carry a spot value's true age: an NIBP sent again shows when it was measured.
                let time = measured.unwrap_or(received);
                latest.values.insert(m.parameter, VitalValue { parameter: m.parameter, value: m.value, status, time });
            }
        }
        // The other numerics go nowhere near the engine: kept as the latest per MDC code, published, not alarmed.
        for o in &frame.other {
            if latest.other.len() >= MAX_OTHER_VALUES && !latest.other.contains_key(&o.mdc_code) {
                continue;
            }
            let status = if frame.demo { ValueStatus::Demo } else { o.status };
            let value = OtherVitalValue {
                mdc_code: o.mdc_code,
                unit_code: o.unit_code,
                value: o.value,
                status,
                time: received,
            };
            latest.other.insert(o.mdc_code, value);
        }
        let update = VitalsUpdate {
            bed: self.bed.clone(),
            time: received,
            values: latest.values.values().cloned().collect(),
            other: latest.other.values().cloned().collect(),
        };
        events.push(Event::Vitals(update));
    }

    fn status_of<'a>(
        &self,
        sources: &'a mut HashMap<String, SourceState>,
        source: &SourceId,
        at: Timestamp,
    ) -> &'a mut DeviceStatus {
        let key = source.to_string();
        let (kind, device) = self.descriptions.get(&key).cloned().unwrap_or_default();
        let state = sources.entry(key.clone()).or_default();
        let status = state.status.get_or_insert_with(|| DeviceStatus {
            bed: self.bed.clone(),
            source: key,
            kind,
            device,
            link: LinkState::Connecting,
            frames_ok: 0,
            frames_bad: 0,
            values_rejected: 0,
            last_error: None,
            last_frame: None,
            time: at,
        });
        status.time = at;
        status
    }

    /// Gives each session event not yet numbered the bed's next `session_seq`.
    fn number_sessions(&mut self, events: &mut [Event]) {
        for e in events {
            if let Event::Session(s) = e {
                if s.session_seq == 0 {
                    self.session_seq += 1;
                    s.session_seq = self.session_seq;
                }
            }
        }
    }

    /// Writes events to the store, then announces them; after alarm events, announces the bed's alarm snapshot.
    ///
    /// Alarm and session events (with the snapshot) are awaited until durable, without blocking a runtime
    /// thread; vitals history and device status are queued for the writer's next batch and never wait, so they
    /// are never on the alarm path.
    async fn emit(&mut self, mut events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        self.number_sessions(&mut events);
        let alarms_changed = events.iter().any(|e| matches!(e, Event::Alarm(_)));
        let mut events = events;
        if alarms_changed {
            events.push(Event::Alarms(self.engine.active_alarms(Utc::now())));
        }
        let (durable, background): (Vec<Event>, Vec<Event>) =
            events.iter().cloned().partition(|e| matches!(e, Event::Alarm(_) | Event::Session(_) | Event::Alarms(_)));
        if !background.is_empty() {
            self.store.append_background(background);
        }
        if !durable.is_empty() || !self.unstored.is_empty() {
            let mut batch = std::mem::take(&mut self.unstored);
            batch.extend(durable);
            if let Err(e) = self.store.append_async(batch.clone()).await {
                // Announce anyway: a nurse must see the alarm even when the disk fails. They are kept and written
                // first next time, so MQTT gets them once the disk is back.
                tracing::error!(bed = %self.bed, error = %e, kept = batch.len(), "could not store events; announcing on the dashboard, retrying");
                if batch.len() > MAX_UNSTORED {
                    let drop = batch.len() - MAX_UNSTORED;
                    tracing::error!(bed = %self.bed, dropped = drop, "too many unstored events; the oldest are lost");
                    batch.drain(..drop);
                }
                self.unstored = batch;
            }
        }
        for event in events {
            self.hub.publish(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::BedInfo;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A bed task for chair-1 on `store` and `hub`, with a fresh engine.
    fn test_task(
        profile: Arc<Profile>,
        store: Store,
        hub: Arc<Hub>,
        sources: SourceReceiver,
        commands: mpsc::Receiver<BedCommand>,
        silence: HashMap<String, Duration>,
    ) -> BedTask {
        BedTask {
            bed: "chair-1".into(),
            engine: Engine::new("chair-1".into(), profile.clone(), 1),
            profile,
            store,
            hub,
            sources,
            commands,
            descriptions: HashMap::new(),
            silence,
            session_seq: 0,
            unstored: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_bed_tasks_future_holds_the_task_once() {
        // Every bed has one, so a second copy of the task (engine included) costs kilobytes per bed: the
        // `async fn supervise(mut self, ..)` it replaced kept both its argument and its binding.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("vigil.db")).unwrap();
        let info = BedInfo { id: "chair-1".into(), label: "Chair 1".into(), profile: "ketamine-chair".into() };
        let profile = Arc::new(Profile::resolve("ketamine-chair", dir.path()).unwrap());
        let (_, sources) = mpsc::channel(8);
        let (_, commands) = mpsc::channel(8);
        let task = test_task(profile, store, Hub::new("site", "ward", vec![info]), sources, commands, HashMap::new());
        let running = task.run(CancellationToken::new());
        let (future, task) = (std::mem::size_of_val(&running), std::mem::size_of::<BedTask>());
        assert!(future < task + task / 4, "{future} bytes for a {task}-byte task");
    }

    static LIVES: AtomicUsize = AtomicUsize::new(0);

    /// Dies in its first life, runs normally in the next.
    fn dies_once<'a>(task: &'a mut BedTask, cancel: &'a CancellationToken) -> BoxFuture<'a, ()> {
        async move {
            if LIVES.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("injected fault");
            }
            task.run_once(cancel).await;
        }
        .boxed()
    }

    // Real time: the store's writer is a real thread on a real file, which paused time would race with. The
    // restart delay (1 s) is the only wait.
    #[tokio::test]
    async fn a_bed_task_that_panics_raises_bed_unmonitored_while_down_is_restarted_and_ends_the_alarm() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("vigil.db")).unwrap();
        let info = BedInfo { id: "chair-1".into(), label: "Chair 1".into(), profile: "ketamine-chair".into() };
        let hub = Hub::new("site", "ward", vec![info]);
        let (_, mut events) = hub.subscribe();
        let profile = Arc::new(Profile::resolve("ketamine-chair", dir.path()).unwrap());
        let (source_tx, sources) = mpsc::channel(8);
        let (command_tx, commands) = mpsc::channel(8);
        hub.register_bed("chair-1".into(), command_tx);
        let task = test_task(profile, store.clone(), hub.clone(), sources, commands, HashMap::new());
        let cancel = CancellationToken::new();
        let running = tokio::spawn(task.supervise(cancel.clone(), dies_once));

        async fn next_alarm(events: &mut tokio::sync::broadcast::Receiver<Arc<crate::hub::HubEvent>>) -> AlarmEvent {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let ev = tokio::time::timeout_at(deadline, events.recv()).await.expect("an alarm event in time");
                if let Event::Alarm(a) = &ev.unwrap().event {
                    return a.clone();
                }
            }
        }
        // Down: the alarm is raised, stored (so MQTT gets it from the outbox) and announced.
        let start = next_alarm(&mut events).await;
        assert_eq!(start.condition, BED_UNMONITORED);
        assert_eq!(
            (start.priority, start.kind, start.phase),
            (Priority::High, AlarmKind::Technical, AlarmPhase::Start)
        );
        assert_eq!(start.bed_seq, 1);
        assert_eq!(store.pending_count().unwrap(), 1, "stored in the outbox before it was announced");
        assert!(
            std::iter::from_fn(|| events.try_recv().ok()).all(|e| !matches!(e.event, Event::Alarm(_))),
            "still down: no end yet"
        );
        let snapshot = hub.snapshot().beds[0].alarms.clone().unwrap();
        assert_eq!(snapshot.alarms.len(), 1, "the dashboard's snapshot shows it while the bed is down");

        // Restarted after a second: the alarm ends and the fresh engine continues the bed's sequence.
        let end = next_alarm(&mut events).await;
        assert_eq!((end.alarm_id.as_str(), end.seq, end.bed_seq), (start.alarm_id.as_str(), 2, 2));
        assert_eq!(end.phase, AlarmPhase::End);
        assert_eq!(LIVES.load(Ordering::SeqCst), 2, "the body ran again");

        // It works: a command reaches the restarted task and is answered.
        let ack = crate::event::CommandRequest {
            bed: "chair-1".into(),
            command: crate::event::Command::SessionStart { patient: None, baseline_sys: None, baseline_dia: None },
            actor: "nina".into(),
        };
        assert!(hub.command(ack).await.is_ok(), "the restarted bed answers commands");
        drop(source_tx);
        cancel.cancel();
        running.await.unwrap();
    }

    #[tokio::test]
    async fn a_source_that_goes_silent_raises_monitor_disconnected_after_its_silence_time_and_the_next_frame_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("vigil.db")).unwrap();
        let info = BedInfo { id: "chair-1".into(), label: "Chair 1".into(), profile: "ketamine-chair".into() };
        let hub = Hub::new("site", "ward", vec![info]);
        let (_, mut events) = hub.subscribe();
        let profile = Arc::new(Profile::resolve("ketamine-chair", dir.path()).unwrap());
        let (source_tx, sources) = mpsc::channel(8);
        let (_command_tx, commands) = mpsc::channel(8);
        let source = SourceId::new("chair-1", 0);
        let silence = HashMap::from([(source.to_string(), Duration::from_secs(1))]);
        let task = test_task(profile, store, hub.clone(), sources, commands, silence);
        let cancel = CancellationToken::new();
        let running = tokio::spawn(task.run(cancel.clone()));
        let frame = || SourceEvent::Frame { source: source.clone(), frame: Frame::default(), received: Utc::now() };
        source_tx.send(frame().into()).await.unwrap();
        let heard = std::time::Instant::now();

        async fn next_alarm(events: &mut tokio::sync::broadcast::Receiver<Arc<crate::hub::HubEvent>>) -> AlarmEvent {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let ev = tokio::time::timeout_at(deadline, events.recv()).await.expect("an alarm event in time");
                if let Event::Alarm(a) = &ev.unwrap().event {
                    return a.clone();
                }
            }
        }
        let raised = next_alarm(&mut events).await;
        assert_eq!(raised.condition, "monitor_disconnected");
        assert_eq!(raised.phase, AlarmPhase::Start);
        assert_eq!(raised.evidence["source"], "chair-1/0");
        // The silence time (1 s) plus at most one clock tick (1 s); never before the silence time.
        assert!(heard.elapsed() >= Duration::from_secs(1), "not before its silence time");
        // Frames again, twice a second: once they kept coming for the 5 s hold-off, the alarm ends.
        let feeding = {
            let (tx, source) = (source_tx.clone(), source.clone());
            tokio::spawn(async move {
                loop {
                    let frame =
                        SourceEvent::Frame { source: source.clone(), frame: Frame::default(), received: Utc::now() };
                    if tx.send(frame.into()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        };
        let cleared = next_alarm(&mut events).await;
        feeding.abort();
        assert_eq!(cleared.alarm_id, raised.alarm_id);
        assert!(matches!(cleared.state, AlarmState::Cleared | AlarmState::Latched), "{cleared:?}");
        cancel.cancel();
        running.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_the_store_refuses_on_a_full_disk_are_shown_kept_and_stored_in_order_once_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)");
            return;
        }
        let store = Store::open(&dir.path().join("vigil.db")).unwrap();
        let info = BedInfo { id: "chair-1".into(), label: "Chair 1".into(), profile: "ketamine-chair".into() };
        let hub = Hub::new("site", "ward", vec![info]);
        let profile = Arc::new(Profile::resolve("ketamine-chair", dir.path()).unwrap());
        let (_source_tx, sources) = mpsc::channel(8);
        let (command_tx, commands) = mpsc::channel(8);
        hub.register_bed("chair-1".into(), command_tx);
        let task = test_task(profile, store.clone(), hub.clone(), sources, commands, HashMap::new());
        let cancel = CancellationToken::new();
        let running = tokio::spawn(task.run(cancel.clone()));
        let command = |command| crate::event::CommandRequest { bed: "chair-1".into(), command, actor: "nina".into() };

        // Fill the disk to the last byte; a long patient pseudonym makes the event need fresh pages.
        let filler = dir.path().join("filler");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&filler).unwrap();
            while f.write_all(&[0u8; 65536]).is_ok() {}
            while f.write_all(&[0u8]).is_ok() {}
        }
        let patient = "P".repeat(60);
        let start = crate::event::Command::SessionStart {
            patient: Some(patient),
            baseline_sys: Some(120.0),
            baseline_dia: Some(80.0),
        };
        hub.command(command(start)).await.expect("the bed runs the command even when the disk is full");
        assert!(!store.health().borrow().ok, "the store shows the failure");
        assert_eq!(hub.snapshot().beds[0].session.as_ref().unwrap().action, "session_start", "shown anyway");

        std::fs::remove_file(&filler).unwrap();
        hub.command(command(crate::event::Command::InfusionStart)).await.unwrap();
        // The range's end is exclusive: an event stamped in this very millisecond must be inside it.
        let until = Utc::now() + chrono::Duration::seconds(1);
        let stored = store.session_events("chair-1", chrono::DateTime::UNIX_EPOCH, until).unwrap();
        let actions: Vec<(&str, u64)> = stored.iter().map(|e| (e.action.as_str(), e.session_seq)).collect();
        assert_eq!(actions, [("session_start", 1), ("infusion_start", 2)], "nothing lost, in order");
        assert_eq!(store.pending_count().unwrap(), 2, "both wait in the outbox for MQTT");
        assert!(store.health().borrow().ok);
        cancel.cancel();
        running.await.unwrap();
        drop(store);
        let _ = std::process::Command::new("umount").arg("-l").arg(dir.path()).status();
    }

    #[test]
    fn a_long_device_error_is_cut_to_two_hundred_characters_and_marked() {
        let long = "é".repeat(100_000);
        let cut = bounded_error(long);
        assert_eq!(cut.chars().count(), MAX_ERROR_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(bounded_error("short".into()), "short");
    }
}
