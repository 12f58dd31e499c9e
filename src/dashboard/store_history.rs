//! The dashboard's history queries answered by the durable store.

use super::history::{ActionRecord, History, HistoryError, SessionSummary};
use crate::event::{AlarmEvent, SessionEvent, VitalValue};
use crate::store::{Store, StoreError};
use crate::vitals::Timestamp;

impl From<StoreError> for HistoryError {
    fn from(e: StoreError) -> Self {
        HistoryError::Unavailable(e.to_string())
    }
}

impl History for Store {
    fn vitals(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<VitalValue>, HistoryError> {
        Ok(Store::vitals(self, bed, from, to)?
            .into_iter()
            .map(|(time, parameter, value, status)| VitalValue { parameter, value, status, time })
            .collect())
    }

    fn alarm_events(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<AlarmEvent>, HistoryError> {
        Ok(Store::alarm_events(self, bed, from, to)?)
    }

    fn session_events(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<SessionEvent>, HistoryError> {
        Ok(Store::session_events(self, bed, from, to)?)
    }

    fn actions(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<ActionRecord>, HistoryError> {
        Ok(Store::actions(self, bed, from, to)?
            .into_iter()
            .filter_map(|a| {
                let command = a.command?;
                Some(ActionRecord {
                    time: a.time,
                    bed: a.bed,
                    actor: a.actor,
                    origin: String::new(),
                    command,
                    outcome: a.reason.unwrap_or_else(|| "ok".into()),
                })
            })
            .collect())
    }

    fn latest_session(&self, bed: &str) -> Result<Option<SessionSummary>, HistoryError> {
        let Some(latest) = Store::latest_session(self, bed)? else { return Ok(None) };
        let Some(started) = latest.started else { return Ok(None) };
        let ended = (latest.phase == crate::event::SessionPhase::Ended).then_some(latest.time);
        Ok(Some(SessionSummary { session_id: latest.session_id, started, ended, patient: latest.patient }))
    }
}
