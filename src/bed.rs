//! One task per bed owns that bed's state: its alarm engine (with the session), its latest values and its
//! sources' status. Everything reaches it through its inboxes (source events, commands, the clock); everything it
//! decides is written to the store first and then announced on the hub.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::alarm::{DeviceSignal, Engine};
use crate::event::{DeviceStatus, Event, LinkState, VitalValue, VitalsUpdate};
use crate::hub::{BedCommand, CommandError, Hub};
use crate::ingest::protocol::{Frame, SensorFlags};
use crate::ingest::{SourceEvent, SourceId};
use crate::store::Store;
use crate::vitals::{BedId, Parameter, Reading, Timestamp, ValueStatus};

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

/// What a bed task needs.
pub struct BedTask {
    /// The bed.
    pub bed: BedId,
    /// Its alarm engine.
    pub engine: Engine,
    /// Where events are written before they are announced.
    pub store: Store,
    /// Where they are announced.
    pub hub: Arc<Hub>,
    /// Events from the bed's sources.
    pub sources: mpsc::Receiver<SourceEvent>,
    /// Commands routed by the hub.
    pub commands: mpsc::Receiver<BedCommand>,
    /// Each source's static description (kind, device), by source id.
    pub descriptions: HashMap<String, (String, String)>,
}

#[derive(Default)]
struct SourceState {
    status: Option<DeviceStatus>,
    announced: Option<Timestamp>,
    sensor: SensorFlags,
    demo: bool,
}

impl BedTask {
    /// Runs until `cancel` fires and the sources have drained.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut latest: BTreeMap<Parameter, VitalValue> = BTreeMap::new();
        let mut sources: HashMap<String, SourceState> = HashMap::new();
        let mut clock = tokio::time::interval(TICK);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.announce_initial_state();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(cmd) = self.commands.recv() => self.command(cmd),
                event = self.sources.recv() => match event {
                    Some(event) => self.source_event(event, &mut latest, &mut sources),
                    // Every source has ended; keep serving commands and the clock until cancelled.
                    None => self.idle_until_cancelled(&cancel).await,
                },
                _ = clock.tick() => {
                    let events = self.engine.tick(Utc::now());
                    self.emit(events);
                }
            }
        }
        // Drain what the sources had already sent, so nothing in flight is lost.
        let deadline = tokio::time::Instant::now() + DRAIN;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.sources.recv()).await {
            self.source_event(event, &mut latest, &mut sources);
        }
    }

    async fn idle_until_cancelled(&mut self, cancel: &CancellationToken) {
        let mut clock = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                Some(cmd) = self.commands.recv() => self.command(cmd),
                _ = clock.tick() => {
                    let events = self.engine.tick(Utc::now());
                    self.emit(events);
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

    fn command(&mut self, cmd: BedCommand) {
        let now = Utc::now();
        let BedCommand { request, reply } = cmd;
        let result = self.engine.command(&request.command, &request.actor, now);
        let outcome = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
        if let Err(e) = self.store.record_action(now, &request.actor, &self.bed, &request.command, outcome) {
            tracing::error!(bed = %self.bed, error = %e, "could not store an action");
        }
        let answer = match result {
            Ok(events) => {
                tracing::info!(bed = %self.bed, actor = %request.actor, command = ?request.command, "command accepted");
                self.emit(events.clone());
                Ok(events)
            }
            Err(e) => {
                tracing::warn!(bed = %self.bed, actor = %request.actor, command = ?request.command, reason = %e, "command refused");
                Err(CommandError::Refused(e.to_string()))
            }
        };
        let _ = reply.send(answer);
    }

    fn source_event(
        &mut self,
        event: SourceEvent,
        latest: &mut BTreeMap<Parameter, VitalValue>,
        sources: &mut HashMap<String, SourceState>,
    ) {
        match event {
            SourceEvent::Frame { source, frame, received } => {
                let key = source.to_string();
                let state = sources.entry(key.clone()).or_default();
                let mut events = Vec::new();
                if frame.sensor != state.sensor {
                    state.sensor = frame.sensor;
                    events.extend(
                        self.engine
                            .device(&DeviceSignal::Sensor { source: key.clone(), flags: frame.sensor }, received),
                    );
                }
                if frame.demo != state.demo {
                    state.demo = frame.demo;
                    events.extend(
                        self.engine.device(&DeviceSignal::Demo { source: key.clone(), on: frame.demo }, received),
                    );
                }
                if !frame.measurements.is_empty() {
                    self.observe_frame(&frame, received, latest, &mut events);
                }
                self.emit(events);
            }
            SourceEvent::Link { source, state: link, reason, at } => {
                let reason = reason.map(bounded_error);
                let key = source.to_string();
                let signal = match link {
                    LinkState::Connected => Some(DeviceSignal::Connected { source: key.clone() }),
                    LinkState::Disconnected => Some(DeviceSignal::Disconnected {
                        source: key.clone(),
                        reason: reason.clone().unwrap_or_else(|| "link lost".into()),
                    }),
                    LinkState::Connecting => None,
                };
                let events = signal.map(|s| self.engine.device(&s, at)).unwrap_or_default();
                self.emit(events);
                let status = self.status_of(sources, &source, at);
                status.link = link;
                if reason.is_some() {
                    status.last_error = reason;
                }
                let status = status.clone();
                sources.entry(source.to_string()).or_default().announced = Some(at);
                self.announce(Event::Device(status));
            }
            SourceEvent::Counters { source, frames_ok, frames_bad, values_rejected, last_error, at } => {
                let last_error = last_error.map(bounded_error);
                let key = source.to_string();
                let signal = DeviceSignal::InputErrors {
                    source: key,
                    bad: frames_bad + values_rejected,
                    total: frames_ok + frames_bad,
                };
                let events = self.engine.device(&signal, at);
                self.emit(events);
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
                    self.announce(Event::Device(status));
                }
            }
        }
    }

    fn observe_frame(
        &mut self,
        frame: &Frame,
        received: Timestamp,
        latest: &mut BTreeMap<Parameter, VitalValue>,
        events: &mut Vec<Event>,
    ) {
        for m in &frame.measurements {
            let status = if frame.demo { ValueStatus::Demo } else { m.status };
            let reading = Reading {
                bed: self.bed.clone(),
                parameter: m.parameter,
                value: m.value,
                status,
                device_time: m.observed.or(frame.device_time),
                received,
            };
            events.extend(self.engine.observe(&reading, received));
            latest.insert(m.parameter, VitalValue { parameter: m.parameter, value: m.value, status, time: received });
        }
        let update = VitalsUpdate { bed: self.bed.clone(), time: received, values: latest.values().cloned().collect() };
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

    /// Writes events to the store, then announces them; after alarm events, announces the bed's alarm snapshot.
    fn emit(&mut self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let alarms_changed = events.iter().any(|e| matches!(e, Event::Alarm(_)));
        let mut events = events;
        if alarms_changed {
            events.push(Event::Alarms(self.engine.active_alarms(Utc::now())));
        }
        if let Err(e) = self.store.append(&events) {
            // Announce anyway: a nurse must see the alarm even when the disk fails. The log says MQTT will miss it.
            tracing::error!(bed = %self.bed, error = %e, "could not store events; announcing on the dashboard only");
        }
        for event in events {
            self.hub.publish(event);
        }
    }

    fn announce(&mut self, event: Event) {
        self.emit(vec![event]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_device_error_is_cut_to_two_hundred_characters_and_marked() {
        let long = "é".repeat(100_000);
        let cut = bounded_error(long);
        assert_eq!(cut.chars().count(), MAX_ERROR_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(bounded_error("short".into()), "short");
    }
}
