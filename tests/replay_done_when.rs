//! The "Done when" cases, tried as a new user would: a CSV recording through `vigil replay`
//! (`replay::run`), reading the JSON lines it prints.

use std::fmt::Write as _;

use serde_json::Value;
use vigil::replay::{run, ReplayArgs};

/// A recording under construction: rows of `timestamp,bed,parameter,value`.
#[derive(Default)]
struct Recording(String);

impl Recording {
    fn row(&mut self, t: u32, parameter: &str, value: impl std::fmt::Display) -> &mut Self {
        writeln!(self.0, "{t},chair-1,{parameter},{value}").unwrap();
        self
    }
    fn nibp(&mut self, t: u32, sys: f64, dia: f64) -> &mut Self {
        self.row(t, "nibp_sys", sys).row(t, "nibp_dia", dia).row(t, "nibp_mean", ((sys + 2.0 * dia) / 3.0).round())
    }
    /// Calm continuous parameters every second over [from, to), with a small deterministic wobble.
    fn calm(&mut self, from: u32, to: u32, spo2: impl Fn(u32) -> f64) -> &mut Self {
        for t in from..to {
            let w = [0.0, 1.0, 2.0, 1.0, 0.0, -1.0, -2.0, -1.0][(t % 8) as usize];
            self.row(t, "hr", 76.0 + w).row(t, "pr", 76.0 + w).row(t, "spo2", spo2(t));
            if t % 5 == 0 {
                self.row(t, "rr", 14.0 + w / 2.0);
            }
        }
        self
    }
    fn replay(&self) -> (Vec<Value>, Value) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recording.csv");
        // Replay streams and wants time-sorted input: the rows are built per parameter, so sort them (stable: rows
        // of one second keep the order they were written in).
        let mut rows: Vec<&str> = self.0.lines().collect();
        rows.sort_by_key(|l| l.split(',').next().unwrap().parse::<u32>().unwrap());
        std::fs::write(&path, format!("timestamp,bed,parameter,value\n{}\n", rows.join("\n"))).unwrap();
        let mut out = Vec::new();
        run(&ReplayArgs::new(&path), &mut out).unwrap();
        let mut lines: Vec<Value> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let summary = lines.pop().unwrap();
        (lines, summary["summary"].clone())
    }
}

fn starts(events: &[Value]) -> Vec<(f64, String, String)> {
    events
        .iter()
        .filter(|e| e["phase"] == "start")
        .map(|e| {
            (
                e["offset_s"].as_f64().unwrap(),
                e["condition"].as_str().unwrap().to_owned(),
                e["priority"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Ten minutes of pre-infusion with three NIBP readings (median 130/81), then the infusion starts at 620 s.
fn session_with_baseline_130(until: u32) -> Recording {
    let mut r = Recording::default();
    r.row(0, "event", "session_start");
    r.calm(0, until, |_| 97.0);
    r.nibp(60, 128.0, 80.0).nibp(360, 130.0, 82.0).nibp(600, 131.0, 81.0);
    r.row(620, "event", "infusion_start");
    r
}

#[test]
fn nibp_climbing_from_130_to_176_raises_a_trend_alarm_at_that_reading_and_a_high_alarm_at_185_112() {
    let mut r = session_with_baseline_130(2760);
    let climb =
        [(137.0, 84.0), (144.0, 86.0), (152.0, 89.0), (160.0, 92.0), (168.0, 96.0), (176.0, 100.0), (185.0, 112.0)];
    for (k, (s, d)) in climb.iter().enumerate() {
        r.nibp(900 + 300 * k as u32, *s, *d);
    }
    let (events, summary) = r.replay();
    let s = starts(&events);
    // The climb is one episode, one blood-pressure alarm: 168 > 160 at 2100 s starts it, medium (160 itself is
    // not above the limit); every later rule joins it.
    assert_eq!(s, [(2100.0, "nibp_sys_high".to_owned(), "medium".to_owned())]);
    let rules_at = |t: f64| -> Vec<Value> {
        let e = events.iter().rfind(|e| e["offset_s"] == t).unwrap_or_else(|| panic!("no event at {t}"));
        assert_eq!(e["evidence"]["family"], "blood_pressure_high");
        e["evidence"]["rules"].as_array().unwrap().iter().filter(|r| r["present"] == true).cloned().collect()
    };
    let names = |rules: &[Value]| rules.iter().map(|r| r["condition"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    // 176 at 2400 s is +46 over the median baseline 130: the rise-from-baseline rule fires at that reading, and
    // the robust slope (1.56 mmHg/min over 30 min, +47) passes its 1.5/min limit there too.
    let at_2400 = rules_at(2400.0);
    assert_eq!(names(&at_2400), ["nibp_sys_high", "nibp_sys_rise", "nibp_sys_rising"]);
    let rise = &at_2400[1];
    assert_eq!((rise["value"].as_f64(), rise["limit"].as_f64()), (Some(176.0), Some(170.0)));
    assert!(rise["message"].as_str().unwrap().contains("+46 over baseline 130"), "{rise}");
    // Nothing before 176: the earlier readings are +7..+38 over baseline and under 161.
    assert!(events.iter().all(|e| e["offset_s"].as_f64().unwrap() >= 2100.0));
    // 185/112 at 2700 s: systolic 185 > 180 and diastolic 112 > 110 enter the high band at once (a spot reading
    // is never delayed): an escalation of the same alarm, which had already turned high after 3 unanswered
    // minutes (2280 s), so it sounds again.
    assert!(events.iter().any(|e| e["phase"] == "escalate" && e["offset_s"] == 2280.0));
    assert!(events.iter().any(|e| e["offset_s"] == 2700.0 && e["phase"] == "escalate" && e["priority"] == "high"));
    assert!(names(&rules_at(2700.0)).contains(&"nibp_dia_high".to_owned()));
    assert_eq!(summary["alarms"], 1, "{summary}");
}

#[test]
fn a_four_second_spo2_dip_to_89_raises_nothing() {
    let mut r = Recording::default();
    r.calm(0, 600, |t| if (300..304).contains(&t) { 89.0 } else { 97.0 });
    r.nibp(10, 125.0, 78.0);
    let (events, summary) = r.replay();
    // 3 points x 4 s = 12 SatSeconds, under the default setting of 25; 89 is above the 88 high limit.
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(summary["alarms"], 0);
}

#[test]
fn a_fall_of_spo2_to_85_raises_a_high_alarm_within_seconds() {
    let mut r = Recording::default();
    // 97 until 300 s, then 93, 90, 87, 85 one second apart (a rapid desaturation), 85 held for a minute.
    r.calm(0, 420, |t| match t {
        0..300 => 97.0,
        300 => 93.0,
        301 => 90.0,
        302 => 87.0,
        303..363 => 85.0,
        _ => 97.0,
    });
    r.nibp(10, 125.0, 78.0);
    let (events, _) = r.replay();
    let s = starts(&events);
    // 87 is 5 points under the 92 medium limit (and under 88): high at once, at 302 s, no SatSeconds wait.
    assert_eq!(s.first(), Some(&(302.0, "spo2_low".into(), "high".into())), "{s:?}");
    let first = &events[0];
    assert_eq!((first["value"].as_f64(), first["limit"].as_f64()), (Some(87.0), Some(88.0)));
    assert_eq!(first["evidence"]["rule"], "deep_drop");
    // High alarms latch (profile): after recovery at 363 s it stays latched for a nurse to acknowledge.
    let last = events.iter().rfind(|e| e["alarm_id"] == first["alarm_id"]).unwrap();
    // The SpO2-falling rule, part of the same desaturation alarm, clears 7 s later (at half its thresholds).
    assert_eq!((last["state"].as_str(), last["offset_s"].as_f64()), (Some("latched"), Some(370.0)));
}

#[test]
fn a_calm_ninety_minute_session_raises_nothing() {
    let mut r = Recording::default();
    r.row(0, "event", "session_start");
    // SpO2 wandering 95..99, HR 74..78, RR 13..15.
    r.calm(0, 5400, |t| 97.0 + [0.0, 1.0, 2.0, 1.0, 0.0, -1.0, -2.0, -1.0][((t / 7) % 8) as usize]);
    // Pre-infusion every 5 min, infusion (40 min) every 5 min with the mean published rise (+16/+11 at 40 min,
    // Yale 2024), observation every 15 min.
    r.nibp(60, 124.0, 78.0).nibp(360, 126.0, 79.0);
    r.row(600, "event", "infusion_start");
    for k in 0..9u32 {
        let rise = 16.0 * f64::from(k) / 8.0;
        r.nibp(600 + 300 * k, 125.0 + rise, 78.0 + rise * 11.0 / 16.0);
    }
    r.row(3000, "event", "infusion_stop");
    for t in [3300, 4200, 5100] {
        r.nibp(t, 136.0, 85.0);
    }
    r.row(5399, "event", "session_end");
    let (events, summary) = r.replay();
    assert!(events.is_empty(), "{events:#?}");
    assert_eq!(summary["alarms"], 0);
    assert_eq!(summary["duration_s"], 5399.0);
}
