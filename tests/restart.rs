//! A daemon started on the store a killed one left takes back what it knew: live and latched alarms, the
//! running session with its baseline, and the limit overrides; the dashboard shows them at once and their
//! lifecycle continues (no second `start`, an `end` when it is over).
//!
//! The store is written before anything is announced (and fsynced per group commit), so what a SIGKILL
//! leaves is exactly what was appended: the test writes it through the store the way a bed task does, then
//! starts a real daemon (`vigil::start`) on that file.

mod common;

use chrono::Utc;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;
use vigil::config::Config;
use vigil::event::{
    AlarmEvent, AlarmKind, AlarmPhase, AlarmState, Baseline, BaselineSource, BedAlarms, Command, CommandRequest, Event,
    Priority, SessionEvent, SessionPhase,
};
use vigil::store::Store;
use vigil::vitals::Parameter;

fn config(dir: &std::path::Path) -> Config {
    let text = format!(
        "[site]\nname = \"s\"\nward = \"w\"\n[mqtt]\nmode = \"disabled\"\n[dashboard]\nlisten = \"127.0.0.1:0\"\n\
         [store]\npath = \"{}\"\n[[beds]]\nid = \"chair-1\"\n",
        dir.join("vigil.db").display()
    );
    Config::parse(&text, "test.toml", dir).unwrap()
}

fn session(session_seq: u64, action: &str, phase: SessionPhase, detail: Option<Map<String, Value>>) -> SessionEvent {
    let started = Utc::now() - chrono::TimeDelta::minutes(20);
    SessionEvent {
        session_seq,
        time: Utc::now(),
        bed: "chair-1".into(),
        session_id: "chair-1-s7".into(),
        action: action.into(),
        phase,
        started: Some(started),
        infusion_started: (phase == SessionPhase::Infusion).then_some(started),
        patient: Some("P-042".into()),
        baseline: Some(Baseline { sys: 121.0, dia: 79.0, source: BaselineSource::Entered }),
        by: Some("nina".into()),
        detail,
    }
}

fn spo2_low(seq: u32, bed_seq: u64, state: AlarmState) -> AlarmEvent {
    AlarmEvent {
        time: Utc::now(),
        bed: "chair-1".into(),
        alarm_id: "chair-1-1".into(),
        seq,
        bed_seq,
        kind: AlarmKind::Threshold,
        source: vigil::event::AlarmSource::Vigil,
        condition: "spo2_low".into(),
        parameter: Some(Parameter::Spo2),
        priority: Priority::High,
        phase: if seq == 1 { AlarmPhase::Start } else { AlarmPhase::Update },
        state,
        value: Some(84.0),
        limit: Some(88.0),
        evidence: Map::new(),
        message: "SpO2 84 < 88".into(),
        by: None,
        audio_paused_until: None,
        test: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_started_on_a_killed_ones_store_shows_its_latched_alarm_and_session_at_once_and_continues_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        // What the killed daemon had stored: a session in infusion with an override, and a high SpO2 alarm that
        // latched when the value came back.
        let store = Store::open(&dir.path().join("vigil.db")).unwrap();
        let override_detail = json!({"key": "limits.spo2.low.medium", "old": 92.0, "new": 90.0}).as_object().cloned();
        let latched = spo2_low(2, 2, AlarmState::Latched);
        store
            .append(&[
                Event::Session(session(1, "session_start", SessionPhase::PreInfusion, None)),
                Event::Session(session(2, "limit_set", SessionPhase::PreInfusion, override_detail)),
                Event::Session(session(3, "infusion_start", SessionPhase::Infusion, None)),
                Event::Alarm(spo2_low(1, 1, AlarmState::Active)),
                Event::Alarm(latched.clone()),
                Event::Alarms(BedAlarms { bed: "chair-1".into(), time: Utc::now(), bed_seq: 2, alarms: vec![latched] }),
            ])
            .unwrap();
    }

    let shutdown = CancellationToken::new();
    let running = vigil::start(config(dir.path()), shutdown.clone()).await.unwrap();
    let hub = running.hub.clone();
    let dashboard = running.dashboard;
    let daemon = tokio::spawn(running.wait());

    // At once: the dashboard's snapshot has the latched alarm (same id) and the running session.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let snapshot = loop {
        let text = common::http_get(dashboard, "/api/snapshot").await;
        let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or("null")).unwrap_or_default();
        if !body["beds"][0]["alarms"].is_null() && !body["beds"][0]["session"].is_null() {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "the snapshot shows the restored state: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let bed = &snapshot["beds"][0];
    assert_eq!(bed["alarms"]["alarms"][0]["alarm_id"], "chair-1-1", "{bed}");
    assert_eq!(bed["alarms"]["alarms"][0]["state"], "latched");
    assert_eq!(bed["alarms"]["alarms"][0]["priority"], "high");
    assert_eq!(bed["session"]["phase"], "infusion");
    assert_eq!(bed["session"]["baseline"]["sys"], 121.0);

    // The lifecycle continues: acknowledging the latched alarm ends it (seq 3, next bed_seq), no new start.
    let request = |command| CommandRequest { bed: "chair-1".into(), command, actor: "nina".into() };
    let events = hub.command(request(Command::Acknowledge { alarm_id: Some("chair-1-1".into()) })).await.unwrap();
    let alarms: Vec<&AlarmEvent> = events
        .iter()
        .filter_map(|e| match e {
            Event::Alarm(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(alarms.len(), 1, "{events:?}");
    assert_eq!((alarms[0].alarm_id.as_str(), alarms[0].seq), ("chair-1-1", 3));
    assert!(alarms[0].bed_seq > 2, "numbering continues after the stored events");
    assert_eq!(alarms[0].phase, AlarmPhase::End);

    // The override is still in force: restoring the profile's value reports 90 as the old one.
    let events =
        hub.command(request(Command::SetLimit { key: "limits.spo2.low.medium".into(), value: None })).await.unwrap();
    let Some(Event::Session(s)) = events.iter().find(|e| matches!(e, Event::Session(_))) else {
        panic!("a limit_set event: {events:?}")
    };
    let detail = s.detail.as_ref().unwrap();
    assert_eq!(detail["old"], 90.0, "the override came back: {detail:?}");
    assert_eq!(detail["new"], 92.0);
    assert_eq!(s.session_id, "chair-1-s7", "the same session goes on");
    assert_eq!(s.session_seq, 4, "session events are numbered on from the stored ones");

    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), daemon).await.unwrap().unwrap();

    // In the event log: one start for the alarm, never a second; bed_seq contiguous.
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let log =
        store.alarm_events("chair-1", chrono::DateTime::UNIX_EPOCH, Utc::now() + chrono::Duration::hours(1)).unwrap();
    let starts = log.iter().filter(|e| e.condition == "spo2_low" && e.phase == AlarmPhase::Start).count();
    assert_eq!(starts, 1, "{log:#?}");
    let seqs: Vec<u64> = log.iter().map(|e| e.bed_seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no bed_seq gap or repeat");
}
