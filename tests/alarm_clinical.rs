//! The clinical suite of issue 10: one row per false-negative path that a review found in the first release
//! (each failed on that code), with the inputs, the nurse's actions and the events expected by a deadline.
//! A row passes when every wanted event arrives no later than its second and no forbidden event appears.

mod alarm_support;

use alarm_support::*;
use vigil::alarm::{Engine, Now, Profile};
use vigil::event::{AlarmEvent, AlarmPhase, AlarmState, Command, Priority};
use vigil::ingest::protocol::SensorFlags;
use vigil::vitals::{Parameter::*, ValueStatus};

/// What a row expects.
enum Want {
    /// An event of this condition, phase and state, at this priority, no later than this second.
    By(i64, &'static str, &'static str, &'static str, &'static str),
    /// No event of this condition and phase in the whole run.
    Never(&'static str, &'static str),
    /// No event of this condition and phase before this second.
    NotBefore(i64, &'static str, &'static str),
}
use Want::*;

fn name<T: serde::Serialize>(v: T) -> String {
    serde_json::to_value(v).unwrap().as_str().unwrap().to_owned()
}

fn check(rows: Vec<(&str, Vec<Step>, i64, Vec<Want>)>) {
    for (case, steps, end, wants) in rows {
        let got = run(&steps, end);
        let table: Vec<Seen> = seen(&got);
        for want in wants {
            match want {
                By(by, condition, phase, state, priority) => assert!(
                    got.iter().any(|e| e.condition == condition
                        && name(e.phase) == phase
                        && name(e.state) == state
                        && name(e.priority) == priority
                        && (e.time - t0()).num_seconds() <= by),
                    "case: {case}\nwanted {condition} {phase} {state} {priority} by {by} s, got {table:#?}"
                ),
                Never(condition, phase) => assert!(
                    !got.iter().any(|e| e.condition == condition && name(e.phase) == phase),
                    "case: {case}\n{condition} {phase} must not happen, got {table:#?}"
                ),
                NotBefore(from, condition, phase) => assert!(
                    !got.iter().any(|e| e.condition == condition
                        && name(e.phase) == phase
                        && (e.time - t0()).num_seconds() < from),
                    "case: {case}\n{condition} {phase} must not happen before {from} s, got {table:#?}"
                ),
            }
        }
    }
}

fn ack(t: i64) -> Step {
    (t, Input::C(Command::Acknowledge { alarm_id: None }))
}

fn session(t: i64, baseline: Option<(f64, f64)>) -> Step {
    let (baseline_sys, baseline_dia) = (baseline.map(|b| b.0), baseline.map(|b| b.1));
    (t, Input::C(Command::SessionStart { patient: None, baseline_sys, baseline_dia }))
}

#[test]
fn worsening_after_acknowledge_sounds_again() {
    check(vec![
        (
            "an acknowledged desaturation that deepens 87 -> 70 is announced again, active and high",
            cat(vec![every_second(Spo2, 0, 30, |_| 87.0), every_second(Spo2, 30, 60, |t| 87.0 - (t - 29) as f64)]),
            60,
            vec![By(0, "spo2_low", "start", "active", "high"), By(33, "spo2_low", "update", "active", "high")],
        ),
        (
            "an acknowledged systolic 185 followed by a reading of 240 is announced again",
            vec![(0, Input::V(NibpSys, 185.0)), ack(10), (300, Input::V(NibpSys, 240.0))],
            300,
            vec![By(300, "nibp_sys_high", "update", "active", "high")],
        ),
        (
            "a medium 165 that escalated by time and was acknowledged sounds again when a reading crosses the real \
             high limit",
            vec![(0, Input::V(NibpSys, 165.0)), ack(200), (300, Input::V(NibpSys, 230.0))],
            300,
            vec![
                By(180, "nibp_sys_high", "escalate", "active", "high"),
                By(300, "nibp_sys_high", "escalate", "active", "high"),
            ],
        ),
        (
            "every new NIBP reading worse than the last one announced is announced, even in the same band",
            vec![(0, Input::V(NibpSys, 163.0)), ack(10), (60, Input::V(NibpSys, 168.0))],
            60,
            vec![By(60, "nibp_sys_high", "update", "active", "medium")],
        ),
        (
            "a better NIBP reading in the same band after acknowledge stays acknowledged",
            vec![(0, Input::V(NibpSys, 175.0)), ack(10), (60, Input::V(NibpSys, 170.0))],
            60,
            vec![Never("nibp_sys_high", "escalate"), By(10, "nibp_sys_high", "update", "acknowledged", "medium")],
        ),
        (
            "an acknowledged high alarm whose condition persists reminds after 120 s",
            cat(vec![every_second(Spo2, 0, 200, |_| 85.0), vec![ack(5)]]),
            200,
            vec![By(125, "spo2_low", "update", "active", "high")],
        ),
    ]);
}

#[test]
fn the_alarm_event_carries_the_latest_and_the_worst_value() {
    let steps = cat(vec![
        every_second(Spo2, 0, 10, |_| 87.0),
        every_second(Spo2, 10, 20, |_| 84.0),
        every_second(Spo2, 20, 40, |_| 86.0),
        vec![ack(30)],
    ]);
    let (events, engine) = run_with(Profile::ketamine_chair(), &steps, 40);
    let acked = events.iter().rev().find(|e| e.state == AlarmState::Acknowledged).expect("acknowledged");
    assert_eq!(acked.value, Some(86.0));
    assert_eq!(acked.evidence["worst_value"], 84.0);
    assert_eq!(acked.evidence["worst_time"], at(10).to_rfc3339());
    assert_eq!(engine.active_alarms(at(40)).alarms[0].value, Some(86.0));
}

#[test]
fn measured_zeros_and_slow_sources_alarm() {
    check(vec![
        (
            "respiration 0 from a source that measures it is apnoea, high, after 20 s",
            cat(vec![every_second(Rr, 0, 10, |_| 14.0), every_second(Rr, 10, 60, |_| 0.0)]),
            60,
            vec![By(30, "apnoea", "start", "active", "high"), Never("rr_no_data", "start")],
        ),
        (
            "apnoea ends when breathing is measured again (it latched, being high)",
            cat(vec![every_second(Rr, 0, 40, |_| 0.0), every_second(Rr, 40, 50, |_| 14.0)]),
            50,
            vec![By(20, "apnoea", "start", "active", "high"), By(40, "apnoea", "update", "latched", "high")],
        ),
        (
            "an HR source reporting every 15 s still alarms on tachycardia and never flaps no-data",
            (0..20).map(|k| (k * 15, Input::V(Hr, 150.0))).collect(),
            300,
            vec![By(15, "hr_high", "start", "active", "high"), Never("hr_no_data", "start")],
        ),
        (
            "a source every 15 s that stops is reported silent after 2.5 periods",
            (0..4).map(|k| (k * 15, Input::V(Hr, 75.0))).collect(),
            100,
            vec![By(45 + 38, "hr_no_data", "start", "active", "medium")],
        ),
        (
            "the cuff's pulse is a spot reading: it neither alarms as the pulse rate nor silences its no-data",
            cat(vec![every_second(Pr, 0, 5, |_| 70.0), (5..60).map(|t| (t, Input::Spot(Pr, 150.0))).collect()]),
            60,
            vec![Never("pr_high", "start"), By(15, "pr_no_data", "start", "active", "medium")],
        ),
    ]);
}

#[test]
fn nibp_is_keyed_on_its_measurement_time() {
    let infusion = |extra: Vec<Step>| {
        cat(vec![
            vec![session(0, Some((120.0, 80.0))), (10, Input::C(Command::InfusionStart))],
            oximeter(0, 2000),
            extra,
        ])
    };
    check(vec![
        (
            "a monitor that sends the same NIBP again does not hold off nibp_overdue",
            infusion((1..10).map(|k| (60 * k, Input::M(NibpSys, 125.0, 20))).collect()),
            800,
            vec![By(20 + 720, "nibp_overdue", "start", "active", "medium")],
        ),
        (
            "a 24-minute-old NIBP counts as 24 minutes old: overdue still fires and it does not end it",
            infusion(vec![(600, Input::M(NibpSys, 125.0, 600 - 24 * 60))]),
            900,
            vec![By(720, "nibp_overdue", "start", "active", "medium"), Never("nibp_overdue", "end")],
        ),
    ]);
}

#[test]
fn a_reading_measured_before_the_session_stays_out_of_its_baseline() {
    let steps = cat(vec![
        vec![
            session(100, None),
            (110, Input::M(NibpSys, 190.0, 50)),
            (110, Input::M(NibpDia, 115.0, 50)),
            (200, Input::V(NibpSys, 120.0)),
            (200, Input::V(NibpDia, 80.0)),
            (300, Input::C(Command::InfusionStart)),
            (600, Input::V(NibpSys, 165.0)),
        ],
        oximeter(0, 700),
    ]);
    let (events, engine) = run_with(Profile::ketamine_chair(), &steps, 700);
    let b = engine.session_state().baseline().expect("a baseline from the session's own reading");
    assert_eq!((b.sys, b.dia), (120.0, 80.0));
    assert!(fired(&events, "nibp_sys_rise"), "{:#?}", seen(&events));
}

/// Whether a rule fired: as an alarm of its own, or as a rule in its family's alarm.
fn fired(events: &[AlarmEvent], condition: &str) -> bool {
    events.iter().any(|e| {
        e.condition == condition
            || e.evidence
                .get("rules")
                .and_then(|r| r.as_array())
                .is_some_and(|rules| rules.iter().any(|r| r["condition"] == condition && r["present"] == true))
    })
}

/// The alarms started, by condition.
fn started(events: &[AlarmEvent]) -> Vec<&str> {
    events.iter().filter(|e| e.phase == AlarmPhase::Start).map(|e| e.condition.as_str()).collect()
}

#[test]
fn a_pressor_surge_reads_as_one_blood_pressure_alarm_with_every_rule_in_its_evidence() {
    // Trace (b) of the clinical review: baseline 122/78, infusion, NIBP every 5 min up to 171/104. The first
    // release raised five alarms (systolic high, systolic rise, systolic slope, diastolic high, diastolic rise).
    let mut steps =
        cat(vec![vec![session(0, Some((122.0, 78.0))), (1, Input::C(Command::InfusionStart))], oximeter(0, 1600)]);
    for (t, sys, dia) in
        [(0, 122.0, 78.0), (300, 130.0, 82.0), (600, 151.0, 92.0), (900, 168.0, 101.0), (1200, 171.0, 104.0)]
    {
        steps.push((t, Input::V(NibpSys, sys)));
        steps.push((t, Input::V(NibpDia, dia)));
    }
    let (events, _) = run_with(Profile::ketamine_chair(), &steps, 1300);
    assert_eq!(started(&events), ["nibp_sys_high"], "{:#?}", seen(&events));
    for rule in ["nibp_sys_high", "nibp_sys_rise", "nibp_sys_rising", "nibp_dia_high", "nibp_dia_rise"] {
        assert!(fired(&events, rule), "{rule} missing from the evidence");
    }
    let last = events.last().unwrap();
    assert_eq!(last.evidence["family"], "blood_pressure_high");
}

#[test]
fn a_desaturation_and_a_tachycardia_seen_by_ecg_and_oximeter_are_one_alarm_each() {
    // Trace (a): SpO2 97 falling to 84 over a minute; HR and pulse both 150.
    let steps = cat(vec![
        every_second(Spo2, 0, 300, |_| 97.0),
        every_second(Spo2, 300, 360, |t| 97.0 - (t - 300) as f64 * 13.0 / 60.0),
        every_second(Spo2, 360, 450, |_| 84.0),
        every_second(Hr, 0, 450, |t| if t < 100 { 75.0 } else { 150.0 }),
        every_second(Pr, 0, 450, |t| if t < 100 { 75.0 } else { 150.0 }),
    ]);
    let (events, _) = run_with(Profile::ketamine_chair(), &steps, 450);
    let mut s = started(&events);
    s.sort();
    assert_eq!(s, ["hr_high", "spo2_low"], "{:#?}", seen(&events));
    assert!(fired(&events, "pr_high") && fired(&events, "spo2_falling"), "{:#?}", seen(&events));
}

#[test]
fn questionable_values_and_latching_hide_nothing() {
    let q = |p, v| Input::S(p, Some(v), ValueStatus::Questionable);
    check(vec![
        (
            "a desaturation that turns questionable while still below the limit holds its alarm",
            cat(vec![every_second(Spo2, 0, 20, |_| 85.0), (20..120).map(|t| (t, q(Spo2, 84.0))).collect()]),
            120,
            vec![By(0, "spo2_low", "start", "active", "high"), Never("spo2_low", "end"), Never("spo2_low", "update")],
        ),
        (
            "a latched alarm shows the highest priority it reached",
            cat(vec![
                every_second(Spo2, 0, 10, |_| 85.0),
                every_second(Spo2, 10, 20, |_| 90.0),
                every_second(Spo2, 20, 30, |_| 96.0),
            ]),
            30,
            vec![
                By(10, "spo2_low", "de-escalate", "active", "medium"),
                By(20, "spo2_low", "update", "latched", "high"),
            ],
        ),
        (
            "a condition that returns to a latched alarm is a new activation with its own escalation timer",
            vec![(0, Input::V(NibpSys, 185.0)), (300, Input::V(NibpSys, 150.0)), (600, Input::V(NibpSys, 165.0))],
            800,
            vec![
                By(300, "nibp_sys_high", "update", "latched", "high"),
                By(600, "nibp_sys_high", "update", "active", "medium"),
                By(780, "nibp_sys_high", "escalate", "active", "high"),
            ],
        ),
    ]);
}

/// SpO2 every second in `[from, to)`, each after the perfusion index of the same frame (as the decoders order
/// them).
fn oximeter_with_pi(from: i64, to: i64, pi: f64, spo2: impl Fn(i64) -> f64) -> Vec<Step> {
    (from..to).flat_map(|t| [(t, Input::V(Pi, pi)), (t, Input::V(Spo2, spo2(t)))]).collect()
}

#[test]
fn a_low_perfusion_index_makes_spo2_questionable() {
    check(vec![
        (
            "a desaturation whose perfusion index falls below 0.6 while still below the limit holds its alarm",
            cat(vec![oximeter_with_pi(0, 20, 2.5, |_| 85.0), oximeter_with_pi(20, 120, 0.3, |_| 84.0)]),
            120,
            vec![By(0, "spo2_low", "start", "active", "high"), Never("spo2_low", "end"), Never("spo2_low", "update")],
        ),
        (
            "a desaturation at a low perfusion index raises SpO2 low, poor signal, not a threshold alarm",
            oximeter_with_pi(0, 60, 0.3, |_| 84.0),
            60,
            vec![By(11, "spo2_low_poor_signal", "start", "active", "medium"), Never("spo2_low", "start")],
        ),
        (
            "a good perfusion index leaves the desaturation alarm as it is without one",
            oximeter_with_pi(0, 60, 2.5, |_| 84.0),
            60,
            vec![By(0, "spo2_low", "start", "active", "high"), Never("spo2_low_poor_signal", "start")],
        ),
        (
            "a good SpO2 at a low perfusion index does not clear a running alarm, a good one at a good index does",
            cat(vec![
                oximeter_with_pi(0, 20, 2.5, |_| 85.0),
                oximeter_with_pi(20, 25, 0.3, |_| 97.0),
                oximeter_with_pi(25, 35, 2.5, |_| 97.0),
            ]),
            35,
            vec![
                Never("spo2_low", "end"),
                NotBefore(25, "spo2_low", "update"),
                By(25, "spo2_low", "update", "latched", "high"),
            ],
        ),
        (
            "a low perfusion index older than 5 s says nothing about a later SpO2",
            cat(vec![vec![(0, Input::V(Pi, 0.3))], every_second(Spo2, 10, 30, |_| 84.0)]),
            30,
            vec![By(10, "spo2_low", "start", "active", "high"), Never("spo2_low_poor_signal", "start")],
        ),
        (
            "a perfusion index sent as no value is forgotten: the SpO2 beside it alarms as usual",
            cat(vec![
                vec![(0, Input::V(Pi, 0.3)), (1, Input::S(Pi, None, ValueStatus::Unavailable))],
                every_second(Spo2, 1, 30, |_| 84.0),
            ]),
            30,
            vec![By(1, "spo2_low", "start", "active", "high")],
        ),
        (
            "the perfusion index itself never alarms, however low, and never goes missing",
            (0..200).map(|t| (t, Input::V(Pi, 0.05))).collect(),
            200,
            vec![Never("pi_low", "start"), Never("pi_no_data", "start")],
        ),
    ]);
}

#[test]
fn the_poor_signal_alarm_carries_the_perfusion_index_as_its_evidence() {
    let (events, _) = run_with(Profile::ketamine_chair(), &oximeter_with_pi(0, 30, 0.31, |_| 84.0), 30);
    let poor = events.iter().find(|e| e.condition == "spo2_low_poor_signal").expect("poor signal raised");
    assert_eq!(poor.evidence["perfusion_index"], 0.31);
    assert_eq!(poor.evidence["min_perfusion_index"], 0.6);
    assert_eq!(poor.evidence["cause"], "low_perfusion_index");
    assert_eq!(poor.evidence["rule"], "questionable_below_limit");
    // A threshold alarm at a good index shows the index too, without a cause.
    let (events, _) = run_with(Profile::ketamine_chair(), &oximeter_with_pi(0, 5, 2.5, |_| 84.0), 5);
    let low = events.iter().find(|e| e.condition == "spo2_low").expect("threshold alarm");
    assert_eq!(low.evidence["perfusion_index"], 2.5);
    assert!(low.evidence.get("cause").is_none(), "{:?}", low.evidence);
}

#[test]
fn a_minimum_perfusion_index_of_zero_turns_the_rule_off() {
    let mut profile = Profile::ketamine_chair();
    profile.spo2.min_perfusion_index = 0.0;
    let (events, _) = run_with(profile, &oximeter_with_pi(0, 30, 0.05, |_| 84.0), 30);
    assert!(fired(&events, "spo2_low") && !fired(&events, "spo2_low_poor_signal"), "{:#?}", seen(&events));
}

#[test]
fn blind_spots_are_reported() {
    check(vec![
        (
            "an infusion without a baseline says rise detection is off until a baseline is entered",
            cat(vec![
                vec![
                    session(0, None),
                    (10, Input::C(Command::InfusionStart)),
                    (100, Input::C(Command::SetBaseline { sys: 120.0, dia: 80.0 })),
                ],
                oximeter(0, 101),
            ]),
            101,
            vec![
                By(10, "baseline_missing", "start", "active", "medium"),
                By(100, "baseline_missing", "end", "cleared", "medium"),
            ],
        ),
        (
            "a new session clears the previous patient's blood-pressure alarm",
            vec![(0, Input::V(NibpSys, 170.0)), session(60, Some((120.0, 80.0)))],
            61,
            vec![By(60, "nibp_sys_high", "end", "cleared", "medium")],
        ),
    ]);
}

#[test]
fn technical_coverage() {
    let sensor = |flags| Input::D(vigil::alarm::DeviceSignal::Sensor { source: "chair-1/0".into(), flags });
    check(vec![
        (
            "with the cuff running every 5 min, overdue fires at 1.5 intervals, not after cycle plus grace",
            cat(vec![
                vec![session(0, Some((120.0, 80.0))), (10, Input::C(Command::InfusionStart))],
                oximeter(0, 1500),
                [20, 320, 620].iter().map(|&t| (t, Input::V(NibpSys, 125.0))).collect(),
            ]),
            1500,
            vec![By(620 + 450, "nibp_overdue", "start", "active", "medium")],
        ),
        (
            "a failed cuff cycle raises cuff_failure until the next reading",
            vec![(0, Input::S(NibpSys, None, ValueStatus::Unavailable)), (120, Input::V(NibpSys, 125.0))],
            126,
            vec![
                By(0, "cuff_failure", "start", "active", "medium"),
                By(125, "cuff_failure", "end", "cleared", "medium"),
            ],
        ),
        (
            "a sensor off during an infusion, unanswered, escalates to high after 3 min",
            cat(vec![
                vec![session(0, Some((120.0, 80.0))), (10, Input::C(Command::InfusionStart))],
                oximeter(0, 30),
                vec![(30, sensor(SensorFlags::SENSOR_OFF))],
            ]),
            300,
            vec![
                By(35, "sensor_off", "start", "active", "medium"),
                By(35 + 180, "sensor_off", "escalate", "active", "high"),
            ],
        ),
        (
            "the same sensor off outside an infusion stays medium",
            cat(vec![oximeter(0, 30), vec![(30, sensor(SensorFlags::SENSOR_OFF))]]),
            400,
            vec![By(35, "sensor_off", "start", "active", "medium"), Never("sensor_off", "escalate")],
        ),
        (
            "NEWS2 of 7 or more is medium (emergency review), and a higher score announces again",
            cat(vec![
                every_second(Rr, 0, 400, |_| 26.0),
                every_second(Spo2, 0, 400, |_| 95.0),
                every_second(Pr, 0, 400, |t| if t < 200 { 115.0 } else { 135.0 }),
            ]),
            400,
            vec![By(70, "news2", "start", "active", "low"), By(275, "news2", "escalate", "active", "medium")],
        ),
    ]);
}

#[test]
fn a_flapping_sensor_is_one_intermittent_alarm_not_a_new_alarm_per_flap() {
    let sensor = |flags| Input::D(vigil::alarm::DeviceSignal::Sensor { source: "chair-1/0".into(), flags });
    // Off for 10 s, on for 10 s, for 10 minutes: the first release started a new sensor_off every 20 s.
    let steps: Vec<Step> = (0..30)
        .flat_map(|k| [(k * 20, sensor(SensorFlags::SENSOR_OFF)), (k * 20 + 10, sensor(SensorFlags::default()))])
        .collect();
    let (events, _) = run_with(Profile::ketamine_chair(), &steps, 600);
    let starts: Vec<&AlarmEvent> =
        events.iter().filter(|e| e.condition == "sensor_off" && e.phase == AlarmPhase::Start).collect();
    assert_eq!(starts.len(), 3, "{:#?}", seen(&events));
    let last = starts.last().unwrap();
    assert!(last.message.starts_with("Intermittent: "), "{}", last.message);
    assert!(last.evidence.contains_key("intermittent"));
    // A minute of calm ends it.
    let (events, _) = run_with(Profile::ketamine_chair(), &steps, 600 + 70);
    assert!(events.iter().any(|e| e.alarm_id == last.alarm_id && e.phase == AlarmPhase::End));
}

#[test]
fn a_disconnect_explains_the_silence_of_what_its_source_measured() {
    let link = |on: bool| {
        let source = "chair-1/0".to_owned();
        Input::D(if on {
            vigil::alarm::DeviceSignal::Connected { source }
        } else {
            vigil::alarm::DeviceSignal::Disconnected { source, reason: "cable".into() }
        })
    };
    let from = |p, v| move |t: i64| (t, Input::From(p, v, "chair-1/0"));
    let steps = cat(vec![
        (0..30).map(from(Spo2, 97.0)).collect(),
        (0..30).map(from(Pr, 70.0)).collect(),
        // The ECG comes from another monitor that goes silent too: its no-data is not explained.
        (0..30).map(|t| (t, Input::From(Hr, 70.0, "chair-1/1"))).collect(),
        vec![(30, link(false))],
    ]);
    let (events, _) = run_with(Profile::ketamine_chair(), &steps, 120);
    let started: Vec<&str> = started(&events);
    assert_eq!(started, ["monitor_disconnected", "hr_no_data"], "{:#?}", seen(&events));
    let d = events.iter().find(|e| e.condition == "monitor_disconnected").unwrap();
    assert_eq!(d.evidence["explains_no_data_of"], serde_json::json!(["pr", "spo2"]));
    // Reconnected but still silent: the no-data alarms come.
    let mut later = steps.clone();
    later.push((130, link(true)));
    let (events, _) = run_with(Profile::ketamine_chair(), &later, 140);
    assert!(events.iter().any(|e| e.condition == "spo2_no_data"), "{:#?}", seen(&events));
}

#[test]
fn a_limit_override_outside_its_safe_range_shows_the_alarm_as_off() {
    let set = |t, key: &str, value| (t, Input::C(Command::SetLimit { key: key.into(), value }));
    let (events, _) = run_with(
        Profile::ketamine_chair(),
        &[
            set(0, "limits.spo2.low.high", Some(60.0)),
            set(0, "limits.spo2.low.medium", Some(70.0)),
            set(60, "limits.spo2.low.medium", None),
            set(60, "limits.spo2.low.high", None),
        ],
        61,
    );
    let off: Vec<&AlarmEvent> = events.iter().filter(|e| e.condition == "alarm_off").collect();
    assert_eq!(off.first().map(|e| e.phase), Some(AlarmPhase::Start), "{:#?}", seen(&events));
    assert!(off[0].message.contains("SpO2 low alarm off"), "{}", off[0].message);
    assert_eq!(off.last().map(|e| e.phase), Some(AlarmPhase::End), "restoring the profile's limits ends it");
}

#[test]
fn a_wall_clock_step_changes_no_timer() {
    let mut e = Engine::new("chair-1".into(), std::sync::Arc::new(Profile::ketamine_chair()), 1);
    let t =
        |mono_s: i64, step_s: i64| Now { mono_ms: t0().timestamp_millis() + mono_s * 1000, wall: at(mono_s + step_s) };
    e.observe(&reading(NibpSys, Some(170.0), ValueStatus::Valid, at(0)), t(0, 0));
    e.command(&Command::PauseAudio { seconds: 120 }, "nurse", t(1, 0)).unwrap();
    // The wall clock steps back an hour: the pause still ends 120 s later on the monotonic clock.
    assert!(e.tick(t(100, -3600)).is_empty());
    let expired: Vec<_> = e.tick(t(121, -3600)).into_iter().collect();
    assert_eq!(expired.len(), 1, "{expired:?}");
    let vigil::event::Event::Alarm(a) = &expired[0] else { panic!("{expired:?}") };
    assert_eq!((a.state, a.priority), (AlarmState::Active, Priority::Medium));
    // The event is labelled with the wall clock as it is now.
    assert_eq!(a.time, at(121 - 3600));
}
