//! Technical alarms: no data, NIBP overdue per phase, sensor off / pulse search, disconnection, demo data, input
//! error rate.

mod alarm_support;

use alarm_support::*;
use vigil::alarm::DeviceSignal;
use vigil::event::Command;
use vigil::ingest::protocol::SensorFlags;
use vigil::vitals::{Parameter::*, ValueStatus};

fn sig(s: DeviceSignal) -> Input {
    Input::D(s)
}

#[test]
fn technical_alarms_table() {
    let src = || "chair-1/0".to_owned();
    let sensor = |f: SensorFlags| sig(DeviceSignal::Sensor { source: src(), flags: f });
    let session = |t| (t, Input::C(Command::SessionStart { patient: None, baseline_sys: None, baseline_dia: None }));
    let cases: Vec<(&str, Vec<Step>, i64, Vec<Seen>)> = vec![
        (
            "SpO2 silent for 10 s after being seen raises spo2_no_data; valid values end it after the 5 s hold-off",
            [every_second(Spo2, 0, 5, |_| 97.0), every_second(Spo2, 30, 37, |_| 97.0)].concat(),
            36,
            vec![
                ev(14, "spo2_no_data", "start", "medium", "active"),
                ev(35, "spo2_no_data", "end", "medium", "cleared"),
            ],
        ),
        (
            "a parameter never seen never raises no-data (a monitor without ECG)",
            every_second(Spo2, 0, 60, |_| 97.0),
            59,
            vec![],
        ),
        (
            "NIBP overdue 10 + 2 min into infusion without a reading; a reading ends it",
            cat(vec![
                vec![
                    session(0),
                    (60, Input::V(NibpSys, 125.0)),
                    (60, Input::V(NibpDia, 80.0)),
                    (100, Input::C(Command::InfusionStart)),
                    (900, Input::V(NibpSys, 128.0)),
                ],
                oximeter(0, 902),
            ]),
            906,
            vec![
                ev(780, "nibp_overdue", "start", "medium", "active"),
                ev(905, "nibp_overdue", "end", "medium", "cleared"),
            ],
        ),
        (
            "observation expects NIBP every 15 min: 16 min without one is not overdue, 17 min is",
            cat(vec![
                vec![
                    session(0),
                    (5, Input::C(Command::SetBaseline { sys: 125.0, dia: 80.0 })),
                    (10, Input::C(Command::InfusionStart)),
                    (20, Input::C(Command::InfusionStop)),
                    (30, Input::V(NibpSys, 125.0)),
                ],
                oximeter(0, 1051),
            ]),
            30 + 1020,
            vec![ev(1050, "nibp_overdue", "start", "medium", "active")],
        ),
        (
            "a chair with no session is watched from its first NIBP on, at the pre-infusion cycle (10 + 2 min)",
            vec![(0, Input::V(NibpSys, 125.0))],
            3600,
            vec![ev(720, "nibp_overdue", "start", "medium", "active")],
        ),
        ("a chair with no session and no NIBP expects none", every_second(Spo2, 0, 900, |_| 97.0), 899, vec![]),
        (
            "sensor off for 5 s alarms; back on for the 5 s hold-off ends it",
            vec![(10, sensor(SensorFlags::SENSOR_OFF)), (30, sensor(SensorFlags::default()))],
            36,
            vec![ev(15, "sensor_off", "start", "medium", "active"), ev(35, "sensor_off", "end", "medium", "cleared")],
        ),
        (
            "a 3 s pulse search while the probe is adjusted raises nothing",
            vec![(10, sensor(SensorFlags::PULSE_SEARCH)), (13, sensor(SensorFlags::LOW_PERFUSION))],
            40,
            vec![],
        ),
        (
            "monitor disconnected alarms at once; reconnected for the 5 s hold-off ends it",
            vec![
                (5, sig(DeviceSignal::Disconnected { source: src(), reason: "EOF".into() })),
                (9, sig(DeviceSignal::Connected { source: src() })),
            ],
            15,
            vec![
                ev(5, "monitor_disconnected", "start", "medium", "active"),
                ev(14, "monitor_disconnected", "end", "medium", "cleared"),
            ],
        ),
        (
            "demo mode from the device or from the readings' status is one technical alarm, never patient data; it \
             ends when neither says demo any more",
            vec![
                (5, sig(DeviceSignal::Demo { source: src(), on: true })),
                (6, Input::S(Spo2, Some(70.0), ValueStatus::Demo)),
                (8, sig(DeviceSignal::Demo { source: src(), on: false })),
                (9, Input::V(Spo2, 97.0)),
            ],
            15,
            vec![ev(5, "demo_data", "start", "medium", "active"), ev(14, "demo_data", "end", "medium", "cleared")],
        ),
        (
            "input errors: 12 of 40 frames bad within a minute (30 %) alarm low; a clean minute ends it",
            vec![
                (0, sig(DeviceSignal::InputErrors { source: src(), bad: 0, total: 0 })),
                (30, sig(DeviceSignal::InputErrors { source: src(), bad: 12, total: 40 })),
                (100, sig(DeviceSignal::InputErrors { source: src(), bad: 12, total: 110 })),
            ],
            106,
            vec![ev(30, "input_errors", "start", "low", "active"), ev(105, "input_errors", "end", "low", "cleared")],
        ),
        (
            "low battery is a low-priority technical alarm",
            vec![(3, sensor(SensorFlags::LOW_BATTERY)), (7, sensor(SensorFlags::default()))],
            13,
            vec![ev(3, "low_battery", "start", "low", "active"), ev(12, "low_battery", "end", "low", "cleared")],
        ),
        (
            "a session expects SpO2 and pulse from its start even if never seen; ending the session ends no-data \
             and overdue alarms: the chair is empty",
            [vec![session(0)], every_second(Spo2, 0, 5, |_| 97.0), vec![(20, Input::C(Command::SessionEnd))]].concat(),
            900,
            vec![
                ev(10, "pr_no_data", "start", "medium", "active"),
                ev(14, "spo2_no_data", "start", "medium", "active"),
                ev(20, "pr_no_data", "end", "medium", "cleared"),
                ev(20, "spo2_no_data", "end", "medium", "cleared"),
            ],
        ),
    ];
    for (name, steps, end, want) in cases {
        assert_eq!(seen(&run(&steps, end)), want, "case: {name}");
    }
}

#[test]
fn a_technical_alarm_carries_its_source_and_reason() {
    let steps = vec![(5, sig(DeviceSignal::Disconnected { source: "chair-1/0".into(), reason: "serial EOF".into() }))];
    let events = run(&steps, 5);
    assert_eq!(events[0].evidence["source"], "chair-1/0");
    assert_eq!(events[0].evidence["reason"], "serial EOF");
    assert_eq!(events[0].kind, vigil::event::AlarmKind::Technical);
}
