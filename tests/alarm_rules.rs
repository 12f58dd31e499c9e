//! Table-driven tests, one table per rule family, with explicit times. Each row: a name, scripted inputs, the
//! last second to run, and exactly the alarm events expected (second, condition, phase, priority, state).

mod alarm_support;

use alarm_support::*;
use vigil::event::Command;
use vigil::vitals::{Parameter::*, ValueStatus};

fn check(cases: Vec<(&str, Vec<Step>, i64, Vec<Seen>)>) {
    for (name, steps, end, want) in cases {
        let got = seen(&run(&steps, end));
        assert_eq!(got, want, "case: {name}");
    }
}

#[test]
fn threshold_alarms_take_priority_from_the_band_wait_out_the_delay_and_clear_with_hysteresis() {
    check(vec![
        (
            "hr 125 for 9 s is under the 10 s condition delay",
            every_second(Hr, 0, 30, |t| if t < 9 { 125.0 } else { 100.0 }),
            29,
            vec![],
        ),
        (
            "hr 125 sustained alarms medium 10 s after it started",
            every_second(Hr, 0, 30, |_| 125.0),
            29,
            vec![ev(10, "hr_high", "start", "medium", "active")],
        ),
        (
            "hr 145 sustained alarms high after the same delay",
            every_second(Hr, 0, 30, |_| 145.0),
            29,
            vec![ev(10, "hr_high", "start", "high", "active")],
        ),
        (
            "hr 125 then 145 escalates the same alarm at once, then de-escalates",
            every_second(Hr, 0, 60, |t| match t {
                0..20 => 125.0,
                20..40 => 145.0,
                _ => 130.0,
            }),
            59,
            vec![
                ev(10, "hr_high", "start", "medium", "active"),
                ev(20, "hr_high", "escalate", "high", "active"),
                ev(40, "hr_high", "de-escalate", "medium", "active"),
            ],
        ),
        (
            "hr back to 118 is inside the 3 bpm hysteresis and keeps the alarm; 117 ends it (medium does not latch)",
            every_second(Hr, 0, 40, |t| match t {
                0..15 => 125.0,
                15..25 => 118.0,
                _ => 117.0,
            }),
            39,
            vec![ev(10, "hr_high", "start", "medium", "active"), ev(25, "hr_high", "end", "medium", "cleared")],
        ),
        (
            "hr 45 is medium low, 38 high low",
            every_second(Hr, 0, 40, |t| if t < 20 { 45.0 } else { 38.0 }),
            39,
            vec![ev(10, "hr_low", "start", "medium", "active"), ev(20, "hr_low", "escalate", "high", "active")],
        ),
        (
            "a single NIBP spot reading of 185 alarms high at once and latches when the next reading is normal",
            vec![(5, Input::V(NibpSys, 185.0)), (300, Input::V(NibpSys, 140.0))],
            310,
            vec![
                ev(5, "nibp_sys_high", "start", "high", "active"),
                ev(300, "nibp_sys_high", "update", "high", "latched"),
            ],
        ),
        (
            "NIBP systolic 89 is medium low at once, 79 high; 89 also scores 3 in NEWS2, but an urgent score that \
             only repeats a present threshold alarm raises no advisory beside it",
            vec![(5, Input::V(NibpSys, 89.0)), (100, Input::V(NibpSys, 79.0))],
            110,
            vec![
                ev(5, "nibp_sys_low", "start", "medium", "active"),
                ev(100, "nibp_sys_low", "escalate", "high", "active"),
            ],
        ),
        (
            "NIBP at exactly the limits does not alarm (limits are strict)",
            vec![
                (5, Input::V(NibpSys, 160.0)),
                (5, Input::V(NibpDia, 100.0)),
                (5, Input::V(NibpMean, 65.0)),
                (200, Input::V(NibpSys, 90.0)),
            ],
            210,
            vec![],
        ),
        (
            "NIBP diastolic 112 is high, mean 60 medium low",
            vec![(5, Input::V(NibpDia, 112.0)), (5, Input::V(NibpMean, 60.0))],
            10,
            vec![
                ev(5, "nibp_dia_high", "start", "high", "active"),
                ev(5, "nibp_mean_low", "start", "medium", "active"),
            ],
        ),
        (
            "rr 32 for 10 s is medium high; rr 7 is high low",
            every_second(Rr, 0, 60, |t| if t < 30 { 32.0 } else { 7.0 }),
            59,
            vec![
                ev(10, "rr_high", "start", "medium", "active"),
                ev(30, "rr_high", "end", "medium", "cleared"),
                ev(40, "rr_low", "start", "high", "active"),
            ],
        ),
    ]);
}

#[test]
fn spo2_uses_satseconds_for_the_medium_band_and_alarms_high_at_once_for_a_deep_drop() {
    check(vec![
        (
            "91 % accumulates 1 point per second: 25 SatSeconds after 25 s",
            every_second(Spo2, 0, 60, |t| if t < 10 { 97.0 } else { 91.0 }),
            59,
            vec![ev(35, "spo2_low", "start", "medium", "active")],
        ),
        (
            "89 % for 4 s is 12 SatSeconds: nothing",
            every_second(Spo2, 0, 60, |t| if (10..14).contains(&t) { 89.0 } else { 97.0 }),
            59,
            vec![],
        ),
        (
            "three 1-second dips to 91 within 60 s: the safety net alarms at the third",
            every_second(Spo2, 0, 60, |t| if [10, 25, 40].contains(&t) { 91.0 } else { 97.0 }),
            59,
            vec![ev(40, "spo2_low", "start", "medium", "active"), ev(41, "spo2_low", "end", "medium", "cleared")],
        ),
        (
            "87 % (5 under 92) is high at once, and latches when SpO2 recovers",
            every_second(Spo2, 0, 60, |t| if (10..20).contains(&t) { 87.0 } else { 97.0 }),
            59,
            vec![ev(10, "spo2_low", "start", "high", "active"), ev(20, "spo2_low", "update", "high", "latched")],
        ),
        (
            "88 % is not a deep drop (limits are strict) but 4 points x 7 s reaches 25 SatSeconds",
            every_second(Spo2, 0, 60, |t| if (10..30).contains(&t) { 88.0 } else { 97.0 }),
            59,
            vec![ev(17, "spo2_low", "start", "medium", "active"), ev(30, "spo2_low", "end", "medium", "cleared")],
        ),
    ]);
}

#[test]
fn only_valid_non_zero_readings_raise_physiological_alarms() {
    let bad = |status: ValueStatus, v: Option<f64>| {
        cat(vec![
            every_second(Spo2, 0, 5, |_| 97.0),
            (5..60).map(|t| (t, Input::S(Spo2, v, status))).collect(),
            every_second(Hr, 0, 5, |_| 75.0),
            (5..60).map(|t| (t, Input::S(Hr, v, status))).collect(),
        ])
    };
    check(vec![
        (
            "questionable SpO2 80 / HR 30 raise no threshold alarm; after 10 s without valid data a technical alarm \
             says so, and SpO2 questionable below its limit for 10 s is 'SpO2 low, poor signal'",
            bad(ValueStatus::Questionable, Some(30.0)),
            59,
            vec![
                ev(14, "hr_no_data", "start", "medium", "active"),
                ev(14, "spo2_no_data", "start", "medium", "active"),
                ev(15, "spo2_low_poor_signal", "start", "medium", "active"),
            ],
        ),
        (
            "unavailable values behave the same",
            bad(ValueStatus::Unavailable, None),
            20,
            vec![
                ev(14, "hr_no_data", "start", "medium", "active"),
                ev(14, "spo2_no_data", "start", "medium", "active"),
            ],
        ),
        (
            "a valid 0 is a value (which zeros mean 'no value' is the decoder's decision, stated as unavailable): \
             SpO2 0 is a deep drop at once, HR 0 is high after its 10 s condition delay",
            bad(ValueStatus::Valid, Some(0.0)),
            20,
            vec![ev(5, "spo2_low", "start", "high", "active"), ev(15, "hr_low", "start", "high", "active")],
        ),
    ]);
}

#[test]
fn trend_rules_rise_from_baseline_slopes_and_drift() {
    let session = cat(vec![
        vec![
            (0, Input::C(Command::SessionStart { patient: None, baseline_sys: Some(110.0), baseline_dia: Some(80.0) })),
            (10, Input::C(Command::InfusionStart)),
        ],
        oximeter(0, 2000),
    ]);
    let mut rise = session.clone();
    rise.extend([(300, Input::V(NibpSys, 149.0)), (600, Input::V(NibpSys, 150.0)), (900, Input::V(NibpSys, 144.0))]);
    let mut dia = session.clone();
    dia.extend([(300, Input::V(NibpDia, 104.0)), (400, Input::V(NibpDia, 99.0)), (600, Input::V(NibpDia, 94.0))]);
    let mut before = vec![(
        0,
        Input::C(Command::SessionStart { patient: None, baseline_sys: Some(130.0), baseline_dia: Some(80.0) }),
    )];
    before.push((300, Input::V(NibpSys, 175.0)));
    before.extend(oximeter(0, 320));
    check(vec![
        (
            "systolic +39 over 110 is not a rise, +40 is (esketamine label); unanswered for 3 min it escalates to \
             high, so when +34 (under the 5 mmHg hysteresis) clears the condition it stays latched",
            rise,
            910,
            vec![
                ev(600, "nibp_sys_rise", "start", "medium", "active"),
                ev(780, "nibp_sys_rise", "escalate", "high", "active"),
                ev(900, "nibp_sys_rise", "update", "high", "latched"),
            ],
        ),
        (
            "diastolic +24 is medium high (104 > 100) but +25 is needed for the rise rule; 99 is inside the \
             hysteresis, 94 clears after the alarm escalated unanswered, so it latches",
            dia,
            610,
            vec![
                ev(300, "nibp_dia_high", "start", "medium", "active"),
                ev(480, "nibp_dia_high", "escalate", "high", "active"),
                ev(600, "nibp_dia_high", "update", "high", "latched"),
            ],
        ),
        (
            "no rise alarm before the infusion starts",
            before,
            310,
            vec![ev(300, "nibp_sys_high", "start", "medium", "active")],
        ),
        (
            "a steady 1.6 %/min SpO2 fall from 99 is flagged low once under 95 (94.9 at 355 s), before any limit \
             is crossed; it ends 75 s after SpO2 levels off at 93 (425 s), when the 2-min slope is under half",
            every_second(
                Spo2,
                0,
                700,
                |t| if t < 200 { 99.0 } else { (99.0 - (t - 200) as f64 * 1.6 / 60.0).max(93.0) },
            ),
            699,
            vec![ev(355, "spo2_falling", "start", "low", "active"), ev(500, "spo2_falling", "end", "low", "cleared")],
        ),
        (
            "heart rate 75 then a sustained 105 (inside limits) is a drift after about 2 min (k 15, h 1800 bpm.s)",
            every_second(Hr, 0, 1200, |t| if t < 900 { 75.0 } else { 105.0 }),
            1199,
            vec![ev(1026, "hr_drift", "start", "low", "active")],
        ),
    ]);
}

#[test]
fn news2_is_an_advisory_that_never_escalates() {
    // RR 22 (2) + SpO2 93 (2) + pulse 95 (1) = 5: urgent review; no limit is crossed.
    let steps = cat(vec![
        every_second(Rr, 0, 600, |_| 22.0),
        every_second(Spo2, 0, 600, |_| 93.0),
        every_second(Hr, 0, 600, |_| 95.0),
    ]);
    let got = seen(&run(&steps, 599));
    // Data starts at second 0 after that second's tick; the first tick that scores is second 1; 60 s delay.
    assert_eq!(got, vec![ev(61, "news2", "start", "low", "active")]);
    let events = run(&steps, 599);
    assert_eq!(events[0].kind, vigil::event::AlarmKind::Advisory);
    assert_eq!(events[0].value, Some(5.0));
    assert_eq!(events[0].evidence["not_scored"], serde_json::json!(["nibp_sys"]));
}
