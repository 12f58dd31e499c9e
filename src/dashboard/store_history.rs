//! The dashboard's history queries answered by the durable store.

use super::history::{ActionRecord, History, HistoryError, HistoryRecord, SessionSummary};
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
        // Malformed requests are kept too: the audit trail shows what was attempted, not only what parsed.
        Ok(Store::actions(self, bed, from, to)?)
    }

    fn for_each_record(
        &self,
        bed: &str,
        from: Timestamp,
        to: Timestamp,
        actions: bool,
        each: &mut dyn FnMut(HistoryRecord) -> bool,
    ) -> Result<u64, HistoryError> {
        Ok(Store::for_each_record(self, bed, from, to, actions, each)?)
    }

    fn latest_session(&self, bed: &str) -> Result<Option<SessionSummary>, HistoryError> {
        let Some(latest) = Store::latest_session(self, bed)? else { return Ok(None) };
        let Some(started) = latest.started else { return Ok(None) };
        let ended = (latest.phase == crate::event::SessionPhase::Ended).then_some(latest.time);
        Ok(Some(SessionSummary { session_id: latest.session_id, started, ended, patient: latest.patient }))
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::*;
    use crate::event::{AlarmKind, AlarmPhase, AlarmState, Command, Event, Priority, SessionPhase, VitalsUpdate};
    use crate::vitals::{Parameter, ValueStatus};

    #[test]
    fn the_store_answers_the_dashboard_queries_including_refused_actions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("vigil.db")).unwrap();
        let now = Utc::now();
        let start = now - Duration::minutes(20);
        let session = SessionEvent {
            session_seq: 1,
            time: start,
            bed: "chair-1".into(),
            session_id: "s-1".into(),
            action: "session_start".into(),
            phase: SessionPhase::PreInfusion,
            started: Some(start),
            infusion_started: None,
            patient: Some("P-1".into()),
            baseline: None,
            detail: None,
            by: Some("nina".into()),
        };
        let alarm = AlarmEvent {
            time: now - Duration::minutes(5),
            bed: "chair-1".into(),
            alarm_id: "a-1".into(),
            seq: 1,
            bed_seq: store.next_bed_seq("chair-1").unwrap(),
            kind: AlarmKind::Threshold,
            source: crate::event::AlarmSource::Vigil,
            condition: "spo2_low".into(),
            parameter: Some(Parameter::Spo2),
            priority: Priority::High,
            phase: AlarmPhase::Start,
            state: AlarmState::Active,
            value: Some(85.0),
            limit: Some(88.0),
            evidence: Default::default(),
            message: "SpO2 85 < 88".into(),
            by: None,
            audio_paused_until: None,
            test: false,
        };
        let vitals = Event::Vitals(VitalsUpdate {
            bed: "chair-1".into(),
            time: now - Duration::minutes(5),
            values: vec![VitalValue {
                parameter: Parameter::Spo2,
                value: Some(85.0),
                status: ValueStatus::Valid,
                time: now - Duration::minutes(5),
            }],
            other: Vec::new(),
        });
        store.append(&[Event::Session(session), vitals, Event::Alarm(alarm)]).unwrap();
        store.record_action(now, "nina", "chair-1", &Command::InfusionStop, Err("no infusion".into())).unwrap();

        let h: &dyn History = &store;
        let (from, to) = (now - Duration::hours(1), now + Duration::seconds(1));
        let latest = h.latest_session("chair-1").unwrap().unwrap();
        assert_eq!((latest.session_id.as_str(), latest.started, latest.ended), ("s-1", start, None));
        assert_eq!(h.vitals("chair-1", from, to).unwrap()[0].value, Some(85.0));
        assert_eq!(h.alarm_events("chair-1", from, to).unwrap()[0].alarm_id, "a-1");
        assert_eq!(h.session_events("chair-1", from, to).unwrap().len(), 1);
        let actions = h.actions("chair-1", from, to).unwrap();
        assert_eq!(actions.len(), 1);
        assert!(!actions[0].ok && actions[0].reason.as_deref() == Some("no infusion"), "{actions:?}");
        assert!(h.latest_session("chair-9").unwrap().is_none());
    }
}
