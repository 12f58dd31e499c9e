//! Lifecycle (IEC 60601-1-8 / IHE ACM): acknowledge, audio pause, escalation, latching, numbering, refusals,
//! per-bed limit overrides.

mod alarm_support;

use std::sync::Arc;

use alarm_support::*;
use vigil::alarm::{CommandError, Engine, Profile};
use vigil::event::{AlarmPhase, AlarmState, Command, Event, Priority};
use vigil::vitals::{Parameter::*, ValueStatus};

fn hr(engine: &mut Engine, s: i64, v: f64) -> Vec<Event> {
    engine.observe(&reading(Hr, Some(v), ValueStatus::Valid, at(s)), at(s))
}

fn nibp(engine: &mut Engine, s: i64, v: f64) -> Vec<Event> {
    engine.observe(&reading(NibpSys, Some(v), ValueStatus::Valid, at(s)), at(s))
}

fn engine() -> Engine {
    Engine::new("chair-1".into(), Arc::new(Profile::ketamine_chair()), 41)
}

#[test]
fn acknowledging_a_present_alarm_keeps_it_visible_until_the_condition_ends() {
    let mut e = engine();
    let start = alarms(nibp(&mut e, 0, 170.0));
    let id = start[0].alarm_id.clone();
    let ack = alarms(e.command(&Command::Acknowledge { alarm_id: Some(id.clone()) }, "nurse-a", at(30)).unwrap());
    assert_eq!((ack[0].state, ack[0].by.as_deref(), ack[0].seq), (AlarmState::Acknowledged, Some("nurse-a"), 2));
    // Acknowledged alarms do not escalate; one whose condition persists sounds again after the medium
    // reminder time (300 s), still medium.
    assert!(alarms(e.tick(at(329))).is_empty());
    let reminder = alarms(e.tick(at(330)));
    assert_eq!(
        (reminder[0].phase, reminder[0].state, reminder[0].priority),
        (AlarmPhase::Update, AlarmState::Active, Priority::Medium)
    );
    assert!(reminder[0].evidence.contains_key("reminder"), "{:?}", reminder[0].evidence);
    let end = alarms(nibp(&mut e, 600, 140.0));
    assert_eq!((end[0].alarm_id.as_str(), end[0].state), (id.as_str(), AlarmState::Cleared));
    assert!(e.active_alarms(at(601)).alarms.is_empty());
}

#[test]
fn a_latched_high_alarm_ends_only_when_acknowledged() {
    let mut e = engine();
    nibp(&mut e, 0, 190.0);
    let latched = alarms(nibp(&mut e, 300, 130.0));
    assert_eq!(latched[0].state, AlarmState::Latched);
    assert_eq!(e.active_alarms(at(301)).alarms.len(), 1);
    let end = alarms(e.command(&Command::Acknowledge { alarm_id: None }, "nurse-a", at(320)).unwrap());
    assert_eq!((end[0].state, end[0].by.as_deref()), (AlarmState::Cleared, Some("nurse-a")));
    assert!(e.active_alarms(at(321)).alarms.is_empty());
}

#[test]
fn an_unanswered_medium_alarm_escalates_to_high_after_three_minutes() {
    let mut e = engine();
    nibp(&mut e, 0, 170.0);
    assert!(alarms(e.tick(at(179))).is_empty());
    let esc = alarms(e.tick(at(180)));
    assert_eq!(
        (esc[0].priority, esc[0].evidence["escalated"].as_str()),
        (Priority::High, Some("unanswered for 180 s"))
    );
}

#[test]
fn audio_pause_silences_present_alarms_for_a_limited_time_but_a_new_condition_sounds() {
    let mut e = engine();
    nibp(&mut e, 0, 170.0);
    let paused = alarms(e.command(&Command::PauseAudio { seconds: 120 }, "nurse-a", at(10)).unwrap());
    assert_eq!(paused[0].state, AlarmState::AudioPaused);
    assert_eq!(paused[0].audio_paused_until, Some(at(130)));
    // A new condition during the pause starts active (audible).
    let new = alarms(e.observe(&reading(Spo2, Some(85.0), ValueStatus::Valid, at(20)), at(20)));
    assert_eq!((new[0].condition.as_str(), new[0].state), ("spo2_low", AlarmState::Active));
    // Pause expiry: the paused alarm sounds again; escalation counts from then, not from the start.
    // (The SpO2 value went stale at 30 s, first noticed at this tick: that high alarm latches.)
    let back = alarms(e.tick(at(130)));
    let bp = back.iter().find(|a| a.condition == "nibp_sys_high").unwrap();
    assert_eq!(bp.state, AlarmState::Active);
    assert!(alarms(e.tick(at(309))).iter().all(|a| a.condition != "nibp_sys_high"));
    let esc = alarms(e.tick(at(310)));
    assert!(esc.iter().any(|a| a.condition == "nibp_sys_high" && a.priority == Priority::High), "{esc:?}");
}

#[test]
fn refused_commands_change_nothing_and_say_why() {
    let mut e = engine();
    assert_eq!(
        e.command(&Command::Acknowledge { alarm_id: None }, "n", at(0)),
        Err(CommandError::NothingToAcknowledge)
    );
    assert_eq!(e.command(&Command::PauseAudio { seconds: 60 }, "n", at(0)), Err(CommandError::NothingToPause));
    nibp(&mut e, 1, 170.0);
    let before = e.active_alarms(at(2));
    assert_eq!(
        e.command(&Command::PauseAudio { seconds: 600 }, "n", at(2)),
        Err(CommandError::PauseOutOfRange { seconds: 600, max: 120 })
    );
    assert_eq!(
        e.command(&Command::Acknowledge { alarm_id: Some("chair-1-999".into()) }, "n", at(2)),
        Err(CommandError::UnknownAlarm("chair-1-999".into()))
    );
    assert_eq!(e.command(&Command::ResumeAudio, "n", at(2)), Err(CommandError::NotPaused));
    assert!(matches!(e.command(&Command::InfusionStart, "n", at(2)), Err(CommandError::Session(_))));
    assert!(matches!(
        e.command(&Command::SetLimit { key: "limits.spo2.low.sideways".into(), value: Some(90.0) }, "n", at(2)),
        Err(CommandError::UnknownLimitKey(_))
    ));
    assert!(matches!(
        e.command(&Command::SetLimit { key: "limits.nibp_sys.delay_s".into(), value: Some(10.0) }, "n", at(2)),
        Err(CommandError::InvalidLimit { .. })
    ));
    let after = e.active_alarms(at(2));
    assert_eq!(before.alarms, after.alarms);
    assert_eq!(before.bed_seq, after.bed_seq);
}

#[test]
fn bed_seq_continues_from_the_store_and_alarm_ids_are_never_reused() {
    let mut e = engine();
    let mut all = alarms(nibp(&mut e, 0, 170.0));
    all.extend(alarms(nibp(&mut e, 300, 140.0)));
    all.extend(alarms(nibp(&mut e, 600, 171.0)));
    let seqs: Vec<u64> = all.iter().map(|a| a.bed_seq).collect();
    assert_eq!(seqs, [41, 42, 43]);
    assert_ne!(all[0].alarm_id, all[2].alarm_id, "a new condition is a new alarm");
    assert_eq!(all[2].alarm_id, "chair-1-43");
    assert_eq!(e.active_alarms(at(601)).bed_seq, 43);
}

#[test]
fn a_per_bed_limit_override_is_logged_with_who_and_when_and_applies_at_once() {
    let mut e = engine();
    nibp(&mut e, 0, 155.0);
    let out = e
        .command(&Command::SetLimit { key: "limits.nibp_sys.high.medium".into(), value: Some(150.0) }, "dr-b", at(5))
        .unwrap();
    let Event::Alarm(a) = &out[0] else { panic!("{out:?}") };
    assert_eq!((a.condition.as_str(), a.limit), ("nibp_sys_high", Some(150.0)));
    let Event::Session(s) = &out[1] else { panic!("{out:?}") };
    assert_eq!((s.action.as_str(), s.by.as_deref(), s.time), ("limit_set", Some("dr-b"), at(5)));
    let d = s.detail.as_ref().unwrap();
    assert_eq!((d["old"].as_f64(), d["new"].as_f64()), (Some(160.0), Some(150.0)));
    assert_eq!(e.profile().limits.nibp_sys.unwrap().high.unwrap().medium, Some(150.0));
    // Restoring the profile value.
    e.command(&Command::SetLimit { key: "limits.nibp_sys.high.medium".into(), value: None }, "dr-b", at(6)).unwrap();
    assert_eq!(e.profile().limits.nibp_sys.unwrap().high.unwrap().medium, Some(160.0));
}

#[test]
fn acknowledging_a_heart_rate_drift_accepts_the_new_level() {
    let steps: Vec<Step> = every_second(Hr, 0, 1300, |t| if t < 900 { 75.0 } else { 105.0 });
    let (events, mut e) = run_with(Profile::ketamine_chair(), &steps, 1100);
    let drift = events.iter().find(|a| a.condition == "hr_drift").expect("drift raised");
    e.command(&Command::Acknowledge { alarm_id: Some(drift.alarm_id.clone()) }, "n", at(1101)).unwrap();
    let mut later = Vec::new();
    for s in 1101..1300 {
        later.extend(alarms(hr(&mut e, s, 105.0)));
        later.extend(alarms(e.tick(at(s))));
    }
    assert_eq!(
        later.iter().map(|a| (a.condition.as_str(), a.phase)).collect::<Vec<_>>(),
        [("hr_drift", vigil::event::AlarmPhase::End)]
    );
}

#[test]
fn lowering_the_spo2_limit_for_one_bed_moves_satseconds_to_the_new_limit() {
    let mut e = engine();
    e.command(&Command::SetLimit { key: "limits.spo2.low.medium".into(), value: Some(90.0) }, "dr-b", at(0)).unwrap();
    let mut raised = Vec::new();
    // 91 % is inside the new 90 % limit: no SatSeconds accumulate, nothing for a minute.
    for s in 1..=60 {
        raised.extend(alarms(e.observe(&reading(Spo2, Some(91.0), ValueStatus::Valid, at(s)), at(s))));
        raised.extend(alarms(e.tick(at(s))));
    }
    assert!(raised.is_empty(), "{raised:?}");
    // 89 % is 1 point under it: 25 s later SatSeconds reach 25.
    for s in 61..=90 {
        raised.extend(alarms(e.observe(&reading(Spo2, Some(89.0), ValueStatus::Valid, at(s)), at(s))));
    }
    let first = raised.first().expect("alarm");
    assert_eq!(
        (first.condition.as_str(), first.limit, (first.time - at(0)).num_seconds()),
        ("spo2_low", Some(90.0), 86)
    );
}
