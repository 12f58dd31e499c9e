//! The in-process hub: every event a bed announces (after the store has it) goes through here to the MQTT
//! publisher and the dashboard. It keeps the ward's present state (a snapshot for late joiners), a short history
//! of numbered events (so an SSE client can resume with `Last-Event-ID`), and routes commands to the bed tasks.
//! The dashboard depends only on the hub, never on the broker.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::event::{AlarmPhase, BedAlarms, CommandRequest, DeviceStatus, Event, SessionEvent, VitalsUpdate};
use crate::vitals::BedId;

/// How many recent events the hub keeps for resuming clients.
pub const RESUME_WINDOW: usize = 4096;
/// How many events a subscriber (the MQTT publisher, each SSE stream) may fall behind before it lags. Every bed
/// announces its vitals about once a second, often in the same instant, so this must hold well over one
/// second of a full ward (5,000 chairs): a lag costs the subscriber the missed vitals.
pub const BROADCAST_CAPACITY: usize = 16_384;

/// An event with the hub's sequence number (the SSE event id).
#[derive(Debug, Clone, Serialize)]
pub struct HubEvent {
    /// Monotonic, starts at 1 for each daemon run.
    pub id: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// Static facts about a bed, from the configuration.
#[derive(Debug, Clone, Serialize)]
pub struct BedInfo {
    /// Bed id.
    pub id: BedId,
    /// Label for people.
    pub label: String,
    /// Alarm profile name.
    pub profile: String,
}

/// What the ward looks like now.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The id of the last event included; events after it follow on the subscription.
    pub last_id: u64,
    /// Site name.
    pub site: String,
    /// Ward name.
    pub ward: String,
    /// One entry per configured bed, in configuration order.
    pub beds: Vec<BedView>,
}

/// One bed's present state.
#[derive(Debug, Clone, Serialize)]
pub struct BedView {
    /// Static facts.
    #[serde(flatten)]
    pub info: BedInfo,
    /// Latest numerics.
    pub vitals: Option<VitalsUpdate>,
    /// Present alarms.
    pub alarms: Option<BedAlarms>,
    /// Latest session event.
    pub session: Option<SessionEvent>,
    /// Each source's status, by source id. Shared (`Arc`), because the publisher keeps the same statuses and a
    /// `BTreeMap` node holds eleven values whatever the count: by value that is 2 KB per bed per copy.
    pub devices: BTreeMap<String, Arc<DeviceStatus>>,
}

/// The events a resuming client missed, and its subscription to what follows.
pub type Resumed = (Vec<Arc<HubEvent>>, broadcast::Receiver<Arc<HubEvent>>);

/// Why a command did not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No such bed.
    #[error("unknown bed '{0}'")]
    UnknownBed(String),
    /// The bed refused it; nothing changed.
    #[error("{0}")]
    Refused(String),
    /// The bed task is not running (shutting down).
    #[error("bed '{0}' is not accepting commands (shutting down)")]
    Unavailable(String),
}

/// A command on its way to a bed task, with the channel for its answer.
#[derive(Debug)]
pub struct BedCommand {
    /// The request, boxed so the bed's inbox (blocks of 32 slots, one inbox per bed) stays small.
    pub request: Box<CommandRequest>,
    /// The bed's answer: the events the command caused, or why it was refused.
    pub reply: oneshot::Sender<Result<Vec<Event>, CommandError>>,
}

struct State {
    next_id: u64,
    recent: VecDeque<Arc<HubEvent>>,
    beds: Vec<BedView>,
    /// Per bed (same order as `beds`), the id of the last event that changed its retained state (alarms,
    /// session, devices): what a lagging subscriber needs to catch up on without copying the whole ward.
    retained_changed: Vec<u64>,
    index: HashMap<BedId, usize>,
    /// Per bed, in the order of `beds`: what it announced since start, for `/metrics`.
    tallies: Vec<BedTally>,
}

/// A bed's retained state (everything but vitals), for a subscriber catching up after a lag.
#[derive(Debug, Clone)]
pub struct RetainedView {
    /// Bed id.
    pub bed: BedId,
    /// Present alarms.
    pub alarms: Option<BedAlarms>,
    /// Latest session event.
    pub session: Option<SessionEvent>,
    /// Each source's status, by source id.
    pub devices: BTreeMap<String, Arc<DeviceStatus>>,
}

/// What one bed announced through the hub since start, and when its task last showed it is alive. Read by
/// `/metrics`, `/readyz` and the systemd watchdog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BedTally {
    /// Vitals updates announced.
    pub vitals_updates: u64,
    /// Alarm events announced, by phase, in the order of [`ALARM_PHASES`]; a self-test's (`test: true`) never.
    pub alarm_events: [u64; 5],
    /// When the bed task last beat ([`Hub::beat`]); `None` before its first beat.
    pub last_beat: Option<tokio::time::Instant>,
}

/// The alarm phases in the order [`BedTally::alarm_events`] counts them.
pub const ALARM_PHASES: [AlarmPhase; 5] =
    [AlarmPhase::Start, AlarmPhase::Update, AlarmPhase::Escalate, AlarmPhase::DeEscalate, AlarmPhase::End];

/// The hub. Share it as `Arc<Hub>`.
pub struct Hub {
    site: String,
    ward: String,
    state: Mutex<State>,
    events: broadcast::Sender<Arc<HubEvent>>,
    commands: Mutex<HashMap<BedId, mpsc::Sender<BedCommand>>>,
}

impl Hub {
    /// A hub for these beds.
    pub fn new(site: &str, ward: &str, beds: Vec<BedInfo>) -> Arc<Hub> {
        let index = beds.iter().enumerate().map(|(i, b)| (b.id.clone(), i)).collect();
        let tallies = vec![BedTally::default(); beds.len()];
        let beds = beds
            .into_iter()
            .map(|info| BedView { info, vitals: None, alarms: None, session: None, devices: BTreeMap::new() })
            .collect::<Vec<_>>();
        let retained_changed = vec![0; beds.len()];
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        Arc::new(Hub {
            site: site.to_owned(),
            ward: ward.to_owned(),
            state: Mutex::new(State {
                next_id: 1,
                recent: VecDeque::with_capacity(RESUME_WINDOW),
                beds,
                retained_changed,
                index,
                tallies,
            }),
            events,
            commands: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written in a way readers care about.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Announces an event: numbers it, updates the snapshot, and sends it to every subscriber.
    pub fn publish(&self, event: Event) -> Arc<HubEvent> {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        if let Some(&i) = st.index.get(event.bed()) {
            let view = &mut st.beds[i];
            let retained = match &event {
                Event::Vitals(v) => {
                    view.vitals = Some(v.clone());
                    false
                }
                Event::Alarms(a) => {
                    view.alarms = Some(a.clone());
                    true
                }
                Event::Session(s) => {
                    view.session = Some(s.clone());
                    true
                }
                Event::Device(d) => {
                    view.devices.insert(d.source.clone(), Arc::new(d.clone()));
                    true
                }
                Event::Alarm(_) => false,
            };
            if retained {
                st.retained_changed[i] = id;
            }
            let tally = &mut st.tallies[i];
            match &event {
                Event::Vitals(_) => tally.vitals_updates += 1,
                // A self-test's alarm is not a patient alarm: it never counts.
                Event::Alarm(a) if a.test => {}
                Event::Alarm(a) => {
                    if let Some(p) = ALARM_PHASES.iter().position(|p| *p == a.phase) {
                        tally.alarm_events[p] += 1;
                    }
                }
                _ => {}
            }
        }
        let ev = Arc::new(HubEvent { id, event });
        if st.recent.len() == RESUME_WINDOW {
            st.recent.pop_front();
        }
        st.recent.push_back(ev.clone());
        // Sent under the lock so that subscribe() sees either the snapshot with this event or the event itself.
        let _ = self.events.send(ev.clone());
        ev
    }

    /// The present state and a subscription to everything after it, taken atomically.
    pub fn subscribe(&self) -> (Snapshot, broadcast::Receiver<Arc<HubEvent>>) {
        let st = self.lock();
        let rx = self.events.subscribe();
        (self.snapshot_of(&st), rx)
    }

    /// Events after `last_id` and a subscription to what follows, or `None` when they are no longer kept (the
    /// client needs a fresh snapshot).
    pub fn resume(&self, last_id: u64) -> Option<Resumed> {
        let st = self.lock();
        let rx = self.events.subscribe();
        if last_id + 1 >= st.next_id {
            return Some((Vec::new(), rx));
        }
        let first = st.recent.front()?.id;
        if last_id + 1 < first {
            return None;
        }
        Some((st.recent.iter().filter(|e| e.id > last_id).cloned().collect(), rx))
    }

    /// The present state.
    pub fn snapshot(&self) -> Snapshot {
        let st = self.lock();
        self.snapshot_of(&st)
    }

    /// The retained state of every bed that changed after event `after`, and the id of the last event it
    /// includes. Copies only the beds that changed, so a subscriber that lagged catches up in proportion to what
    /// it missed, not to the size of the ward.
    pub fn retained_since(&self, after: u64) -> (Vec<RetainedView>, u64) {
        let st = self.lock();
        let changed = st
            .beds
            .iter()
            .zip(&st.retained_changed)
            .filter(|(_, &changed)| changed > after)
            .map(|(b, _)| RetainedView {
                bed: b.info.id.clone(),
                alarms: b.alarms.clone(),
                session: b.session.clone(),
                devices: b.devices.clone(),
            })
            .collect();
        (changed, st.next_id - 1)
    }

    fn snapshot_of(&self, st: &State) -> Snapshot {
        Snapshot { last_id: st.next_id - 1, site: self.site.clone(), ward: self.ward.clone(), beds: st.beds.clone() }
    }

    /// The configured beds.
    pub fn beds(&self) -> Vec<BedInfo> {
        self.lock().beds.iter().map(|b| b.info.clone()).collect()
    }

    /// Each bed's tally, in configuration order.
    pub fn tallies(&self) -> Vec<(BedId, BedTally)> {
        let st = self.lock();
        st.beds.iter().zip(&st.tallies).map(|(b, t)| (b.info.id.clone(), t.clone())).collect()
    }

    /// A bed task shows it is alive (it does so on every clock tick); a task that stops beating is wedged.
    pub fn beat(&self, bed: &str) {
        let mut st = self.lock();
        if let Some(&i) = st.index.get(bed) {
            st.tallies[i].last_beat = Some(tokio::time::Instant::now());
        }
    }

    /// Connects a bed task's command inbox.
    pub fn register_bed(&self, bed: BedId, inbox: mpsc::Sender<BedCommand>) {
        self.commands.lock().unwrap_or_else(|e| e.into_inner()).insert(bed, inbox);
    }

    /// Sends a command to its bed and waits for the answer.
    pub async fn command(&self, request: CommandRequest) -> Result<Vec<Event>, CommandError> {
        let bed = request.bed.clone();
        let inbox = self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&bed)
            .cloned()
            .ok_or_else(|| CommandError::UnknownBed(bed.to_string()))?;
        let (reply, answer) = oneshot::channel();
        inbox
            .send(BedCommand { request: Box::new(request), reply })
            .await
            .map_err(|_| CommandError::Unavailable(bed.to_string()))?;
        answer.await.map_err(|_| CommandError::Unavailable(bed.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LinkState;
    use chrono::Utc;

    fn hub(beds: &[&str]) -> Arc<Hub> {
        let info = beds
            .iter()
            .map(|b| BedInfo { id: (*b).into(), label: (*b).into(), profile: "ketamine-chair".into() })
            .collect();
        Hub::new("site", "ward", info)
    }

    fn device(bed: &str) -> Event {
        Event::Device(DeviceStatus {
            bed: bed.into(),
            source: format!("{bed}/0"),
            kind: "simulated".into(),
            device: "masimo".into(),
            link: LinkState::Connected,
            frames_ok: 1,
            frames_bad: 0,
            values_rejected: 0,
            last_error: None,
            last_frame: None,
            time: Utc::now(),
        })
    }

    #[test]
    fn retained_since_gives_only_the_beds_whose_retained_state_changed_and_never_for_vitals() {
        let hub = hub(&["a", "b", "c"]);
        hub.publish(device("a"));
        let (all, upto) = hub.retained_since(0);
        assert_eq!(all.iter().map(|v| v.bed.as_ref()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(upto, 1);

        hub.publish(Event::Vitals(VitalsUpdate {
            bed: "b".into(),
            time: Utc::now(),
            values: Vec::new(),
            other: Vec::new(),
        }));
        hub.publish(device("c"));
        let (since, upto) = hub.retained_since(upto);
        assert_eq!(since.iter().map(|v| v.bed.as_ref()).collect::<Vec<_>>(), ["c"], "b only sent vitals");
        assert_eq!(since[0].devices.len(), 1);
        assert_eq!(upto, 3);
        assert!(hub.retained_since(upto).0.is_empty(), "nothing changed since");
    }
}
