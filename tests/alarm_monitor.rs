//! The monitor's own alarms (IntelliVue alert lists, S/5 alarm records) on the bed: mirrored as `device` alarms
//! with source `monitor`, started and ended from the complete list the monitor reports, never merged with
//! Vigil's own rules, kept (marked) while the link is lost, and taken back after a restart.

mod alarm_support;

use alarm_support::*;
use vigil::alarm::{DeviceSignal, Engine, Profile};
use vigil::event::{AlarmEvent, AlarmKind, AlarmPhase, AlarmSource, AlarmState, Priority};
use vigil::ingest::protocol::{DeviceAlarm, DeviceAlarmPriority};
use vigil::vitals::Parameter::*;

const SRC: &str = "chair-1/0";

fn spo2_low(priority: DeviceAlarmPriority) -> DeviceAlarm {
    DeviceAlarm {
        key: "p:4bb8:003e:0050".into(),
        priority,
        technical: false,
        text: "SpO2 LOW".into(),
        parameter: Some(Spo2),
    }
}

fn list(alarms: Vec<DeviceAlarm>) -> Input {
    Input::D(DeviceSignal::MonitorAlarms { source: SRC.into(), alarms })
}

fn monitor(events: &[AlarmEvent]) -> Vec<&AlarmEvent> {
    events.iter().filter(|e| e.source == AlarmSource::Monitor).collect()
}

#[test]
fn a_monitor_alarm_in_the_list_starts_with_source_monitor_and_its_reading_and_ends_when_the_list_drops_it() {
    let steps = cat(vec![
        every_second(Spo2, 0, 20, |_| 86.0),
        vec![
            (5, list(vec![spo2_low(DeviceAlarmPriority::Medium)])),
            (6, list(vec![spo2_low(DeviceAlarmPriority::Medium)])),
            (8, list(vec![spo2_low(DeviceAlarmPriority::High)])),
            (12, list(vec![])),
        ],
    ]);
    let events = run(&steps, 14);
    let m = monitor(&events);
    let phases: Vec<(AlarmPhase, Priority)> = m.iter().map(|e| (e.phase, e.priority)).collect();
    assert_eq!(
        phases,
        [
            (AlarmPhase::Start, Priority::Medium),
            (AlarmPhase::Escalate, Priority::High),
            (AlarmPhase::End, Priority::High)
        ],
        "the same alarm reported again is no new event; a higher priority escalates; absence ends it"
    );
    let start = m[0];
    assert_eq!((start.kind, start.condition.as_str()), (AlarmKind::Device, "monitor_alarm"));
    assert_eq!(start.parameter, Some(Spo2));
    assert_eq!(start.message, "Monitor: SpO2 LOW");
    assert_eq!(start.evidence["text"], "SpO2 LOW");
    assert_eq!(start.evidence["source"], SRC);
    assert_eq!(start.evidence["reading"]["parameter"], "spo2");
    assert_eq!(start.evidence["reading"]["value"], 86.0, "the reading that explains it");
    assert_eq!(m[2].evidence["ended_by"], "monitor");
    assert!(m.iter().all(|e| e.alarm_id == start.alarm_id));
}

#[test]
fn the_monitors_spo2_low_and_vigils_spo2_low_are_two_alarms() {
    let steps =
        cat(vec![every_second(Spo2, 0, 60, |_| 80.0), vec![(2, list(vec![spo2_low(DeviceAlarmPriority::Medium)]))]]);
    let (events, engine) = run_with(Profile::ketamine_chair(), &steps, 60);
    let live = engine.active_alarms(at(60)).alarms;
    let ours: Vec<&AlarmEvent> = live.iter().filter(|a| a.source == AlarmSource::Vigil).collect();
    let theirs: Vec<&AlarmEvent> = live.iter().filter(|a| a.source == AlarmSource::Monitor).collect();
    assert_eq!(theirs.len(), 1, "{live:?}");
    assert!(ours.iter().any(|a| a.parameter == Some(Spo2) && a.kind == AlarmKind::Threshold), "{live:?}");
    assert_ne!(ours[0].alarm_id, theirs[0].alarm_id);
    assert!(events.iter().filter(|e| e.source == AlarmSource::Vigil).all(|e| e.kind != AlarmKind::Device));
}

#[test]
fn a_lost_link_keeps_the_monitor_alarm_marked_link_lost_beside_monitor_disconnected_and_the_next_list_decides() {
    let disconnected = Input::D(DeviceSignal::Disconnected { source: SRC.into(), reason: "no poll result".into() });
    let steps = vec![
        (1, list(vec![spo2_low(DeviceAlarmPriority::Medium)])),
        (5, disconnected),
        (30, Input::D(DeviceSignal::Connected { source: SRC.into() })),
        (31, list(vec![spo2_low(DeviceAlarmPriority::Medium)])),
        (40, list(vec![])),
    ];
    let (events, _) = run_with(Profile::ketamine_chair(), &steps, 29);
    let lost = monitor(&events);
    assert_eq!(lost.len(), 2, "{lost:?}");
    assert_eq!((lost[1].phase, lost[1].state), (AlarmPhase::Update, AlarmState::Active), "not ended: still shown");
    assert_eq!(lost[1].evidence["link"], "lost");
    assert!(lost[1].message.contains("link to the monitor lost"), "{}", lost[1].message);
    assert!(events.iter().any(|e| e.condition == "monitor_disconnected" && e.phase == AlarmPhase::Start));

    let events = run(&steps, 41);
    let m = monitor(&events);
    let phases: Vec<AlarmPhase> = m.iter().map(|e| e.phase).collect();
    assert_eq!(phases, [AlarmPhase::Start, AlarmPhase::Update, AlarmPhase::Update, AlarmPhase::End]);
    assert!(!m[2].evidence.contains_key("link"), "the monitor's list after the link is back confirms it");
    assert_eq!(m[2].message, "Monitor: SpO2 LOW");
    assert_eq!(m[3].evidence["ended_by"], "monitor");
}

#[test]
fn a_monitor_alarm_survives_a_restart_and_ends_when_the_monitor_stops_reporting_it() {
    let (_, engine) = run_with(Profile::ketamine_chair(), &[(1, list(vec![spo2_low(DeviceAlarmPriority::High)]))], 2);
    let stored = engine.active_alarms(at(2)).alarms;
    assert_eq!(stored.len(), 1);
    let mut restarted = Engine::new("chair-1".into(), std::sync::Arc::new(Profile::ketamine_chair()), 10);
    assert_eq!(restarted.restore(stored.clone(), &[]), 1);
    let again = restarted.device(
        &DeviceSignal::MonitorAlarms { source: SRC.into(), alarms: vec![spo2_low(DeviceAlarmPriority::High)] },
        at(3),
    );
    assert!(again.is_empty(), "still reported: no second start: {again:?}");
    let end = restarted.device(&DeviceSignal::MonitorAlarms { source: SRC.into(), alarms: vec![] }, at(4));
    let vigil::event::Event::Alarm(end) = &end[0] else { panic!("{end:?}") };
    assert_eq!((end.alarm_id.as_str(), end.phase), (stored[0].alarm_id.as_str(), AlarmPhase::End));
}

#[test]
fn technical_alarms_of_the_monitor_are_device_alarms_too_and_keyed_apart() {
    let inop = DeviceAlarm {
        key: "t:4bb8:0016:0050".into(),
        priority: DeviceAlarmPriority::Info,
        technical: true,
        text: "SpO2 NO SENSOR".into(),
        parameter: Some(Spo2),
    };
    let events = run(&[(1, list(vec![spo2_low(DeviceAlarmPriority::Medium), inop]))], 2);
    let m = monitor(&events);
    assert_eq!(m.len(), 2);
    assert_eq!(m[1].evidence["technical"], true);
    assert_eq!(m[1].evidence["device_priority"], "info");
    assert_eq!(m[1].priority, Priority::Low, "an INOP without alarm priority is shown low");
}
