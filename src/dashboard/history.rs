//! What the chair view and the session export need from the durable store, as a trait so the dashboard can be
//! built and tested without SQLite. The daemon implements it for `store::Store`; [`MemoryHistory`] serves the
//! tests and the dashboard fixture, and records what the hub announces.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::event::{AlarmEvent, Event, SessionEvent, SessionPhase, VitalValue};
use crate::hub::Hub;
/// One command a person sent and what came of it: the store's audit-trail record.
pub use crate::store::ActionRecord;
/// One record of any kind, for the streamed export.
pub use crate::store::HistoryRecord;
use crate::vitals::Timestamp;

/// Why a history query failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The store could not answer (I/O, SQLite, corrupt row).
    #[error("history unavailable: {0}")]
    Unavailable(String),
}

/// The bounds of one session, for choosing what a chair view and an export show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionSummary {
    /// Stable id of the session.
    pub session_id: String,
    /// When it started.
    pub started: Timestamp,
    /// When it ended, if it has.
    pub ended: Option<Timestamp>,
    /// Patient pseudonym, if given.
    pub patient: Option<String>,
}

/// The queries the dashboard runs against the store. Synchronous because SQLite is: handlers call it from
/// `spawn_blocking`. All ranges are inclusive of `from` and `to`, results in time order.
pub trait History: Send + Sync {
    /// Every stored value of every parameter of a bed in the range.
    fn vitals(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<VitalValue>, HistoryError>;
    /// Every alarm lifecycle event of a bed in the range.
    fn alarm_events(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<AlarmEvent>, HistoryError>;
    /// Every session lifecycle event of a bed in the range.
    fn session_events(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<SessionEvent>, HistoryError>;
    /// Every action people took on a bed in the range.
    fn actions(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<ActionRecord>, HistoryError>;
    /// The bed's most recent session (running or ended), if it ever had one.
    fn latest_session(&self, bed: &str) -> Result<Option<SessionSummary>, HistoryError>;
    /// Every record of a bed in the range in time order (at equal times: vitals, alarms, session events,
    /// actions), actions only when `actions`, each passed to `each` until it returns false; returns how many were
    /// passed. This default collects the four lists first; the store streams them from its own connection.
    fn for_each_record(
        &self,
        bed: &str,
        from: Timestamp,
        to: Timestamp,
        actions: bool,
        each: &mut dyn FnMut(HistoryRecord) -> bool,
    ) -> Result<u64, HistoryError> {
        let mut all: Vec<HistoryRecord> = self.vitals(bed, from, to)?.into_iter().map(HistoryRecord::Vital).collect();
        all.extend(self.alarm_events(bed, from, to)?.into_iter().map(HistoryRecord::Alarm));
        all.extend(self.session_events(bed, from, to)?.into_iter().map(HistoryRecord::Session));
        if actions {
            all.extend(self.actions(bed, from, to)?.into_iter().map(HistoryRecord::Action));
        }
        all.sort_by_key(|r| (r.time(), r.rank()));
        let mut passed = 0;
        for record in all {
            passed += 1;
            if !each(record) {
                break;
            }
        }
        Ok(passed)
    }
}

/// How many records per kind and bed [`MemoryHistory`] keeps: about 3 h of one value per parameter per second.
const MEMORY_CAP: usize = 50_000;

#[derive(Default)]
struct BedRecords {
    vitals: VecDeque<VitalValue>,
    alarms: VecDeque<AlarmEvent>,
    sessions: VecDeque<SessionEvent>,
    actions: VecDeque<ActionRecord>,
}

fn push_capped<T>(q: &mut VecDeque<T>, item: T) {
    if q.len() == MEMORY_CAP {
        q.pop_front();
    }
    q.push_back(item);
}

/// A bounded in-memory history. Not durable: for tests, the fixture, and a daemon without a store.
#[derive(Default)]
pub struct MemoryHistory {
    beds: Mutex<HashMap<String, BedRecords>>,
}

impl MemoryHistory {
    /// An empty history.
    pub fn new() -> Arc<MemoryHistory> {
        Arc::new(MemoryHistory::default())
    }

    /// Records an event. Vitals updates repeat unchanged values, so only values newer than the last one kept
    /// for their parameter are stored.
    pub fn record(&self, event: &Event) {
        let mut beds = self.beds.lock().unwrap_or_else(|e| e.into_inner());
        let rec = beds.entry(event.bed().to_string()).or_default();
        match event {
            Event::Vitals(v) => {
                for value in &v.values {
                    let newer = rec
                        .vitals
                        .iter()
                        .rev()
                        .find(|old| old.parameter == value.parameter)
                        .is_none_or(|old| value.time > old.time);
                    if newer {
                        push_capped(&mut rec.vitals, value.clone());
                    }
                }
            }
            Event::Alarm(a) => push_capped(&mut rec.alarms, a.clone()),
            Event::Session(s) => push_capped(&mut rec.sessions, s.clone()),
            Event::Alarms(_) | Event::Device(_) => {}
        }
    }

    /// Records an action.
    pub fn record_action(&self, action: ActionRecord) {
        let mut beds = self.beds.lock().unwrap_or_else(|e| e.into_inner());
        push_capped(&mut beds.entry(action.bed.clone()).or_default().actions, action);
    }

    /// Records everything the hub announces until `cancel` fires.
    pub fn follow(self: Arc<Self>, hub: Arc<Hub>, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let (_, mut rx) = hub.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    got = rx.recv() => match got {
                        Ok(ev) => self.record(&ev.event),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        })
    }

    fn query<T: Clone>(
        &self,
        bed: &str,
        pick: impl Fn(&BedRecords) -> &VecDeque<T>,
        time: impl Fn(&T) -> Timestamp,
        from: Timestamp,
        to: Timestamp,
    ) -> Vec<T> {
        let beds = self.beds.lock().unwrap_or_else(|e| e.into_inner());
        beds.get(bed)
            .map(|r| pick(r).iter().filter(|x| (from..=to).contains(&time(x))).cloned().collect())
            .unwrap_or_default()
    }
}

impl History for MemoryHistory {
    fn vitals(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<VitalValue>, HistoryError> {
        Ok(self.query(bed, |r| &r.vitals, |v| v.time, from, to))
    }
    fn alarm_events(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<AlarmEvent>, HistoryError> {
        Ok(self.query(bed, |r| &r.alarms, |a| a.time, from, to))
    }
    fn session_events(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<SessionEvent>, HistoryError> {
        Ok(self.query(bed, |r| &r.sessions, |s| s.time, from, to))
    }
    fn actions(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<ActionRecord>, HistoryError> {
        Ok(self.query(bed, |r| &r.actions, |a| a.time, from, to))
    }
    fn latest_session(&self, bed: &str) -> Result<Option<SessionSummary>, HistoryError> {
        let beds = self.beds.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rec) = beds.get(bed) else { return Ok(None) };
        let Some(last) = rec.sessions.back() else { return Ok(None) };
        let first = rec.sessions.iter().find(|s| s.session_id == last.session_id).unwrap_or(last);
        Ok(Some(SessionSummary {
            session_id: last.session_id.clone(),
            started: last.started.unwrap_or(first.time),
            ended: (last.phase == SessionPhase::Ended).then_some(last.time),
            patient: last.patient.clone(),
        }))
    }
}
