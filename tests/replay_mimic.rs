//! Replay of the real MIMIC-II record s00001 (ICU, 1 sample per minute, 32 h; provenance in
//! `tests/fixtures/mimic/PROVENANCE.md`), converted by this test to the replay CSV.

use std::fmt::Write as _;

use serde_json::Value;
use vigil::replay::{run, ReplayArgs};

const NUMERICS: &str = include_str!("fixtures/mimic/s00001_numerics_1per_min.csv");

/// minute,HR,ABPSys,ABPDias,ABPMean,PULSE,RESP,SpO2,NBPSys,NBPDias,NBPMean → timestamp,bed,parameter,value.
/// Invasive ABP is not a Vigil parameter and is left out; blanks stay blank (missing); zeros stay zeros (the
/// monitor's "no value", which the engine must not take for asystole or desaturation).
fn to_replay_csv() -> String {
    let mut out = String::from("timestamp,bed,parameter,value\n");
    let columns = [(1, "hr"), (5, "pr"), (6, "rr"), (7, "spo2"), (8, "nibp_sys"), (9, "nibp_dia"), (10, "nibp_mean")];
    for line in NUMERICS.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let t: u32 = f[0].parse().unwrap();
        for (i, name) in columns {
            // NIBP is only present on cuff minutes; a blank NIBP is "no measurement this minute", not a missing
            // value, so it is not written at all.
            if name.starts_with("nibp") && f[i].is_empty() {
                continue;
            }
            writeln!(out, "{},s00001,{name},{}", t * 60, f[i]).unwrap();
        }
    }
    out
}

fn replay(profile: &str, compare: Option<&str>) -> (Vec<Value>, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s00001.csv");
    std::fs::write(&path, to_replay_csv()).unwrap();
    let mut args = ReplayArgs::new(&path);
    args.profile = profile.into();
    args.compare = compare.map(Into::into);
    args.start = "2896-10-10T00:31:26Z".into();
    let mut out = Vec::new();
    run(&args, &mut out).unwrap();
    let lines: Vec<Value> = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.into_iter().partition(|l| l.get("alarm_id").is_some())
}

fn starts(events: &[Value]) -> Vec<(u64, &str, &str)> {
    events
        .iter()
        .filter(|e| e["phase"] == "start")
        .map(|e| {
            (e["offset_s"].as_f64().unwrap() as u64, e["condition"].as_str().unwrap(), e["priority"].as_str().unwrap())
        })
        .collect()
}

#[test]
fn the_mimic_record_raises_the_alarms_reviewed_by_hand_and_its_zeros_never_alarm_as_asystole_or_desaturation() {
    let (events, tail) = replay("ketamine-chair", None);
    let summary = &tail[0]["summary"];
    let physiological: Vec<_> =
        starts(&events).into_iter().filter(|a| !a.1.ends_with("_no_data") && a.1 != "nibp_overdue").collect();
    // Reviewed minute by minute against s00001_numerics_1per_min.csv (offset = minute x 60):
    assert_eq!(
        physiological,
        [
            // min 62-63: RESP 8.8 then 8.1 (< 10 twice: the 10 s delay plus two confirming samples).
            (3780, "rr_low", "medium"),
            // min 64 RESP 9.8 stays inside the 2 /min hysteresis; min 65-66 (13.2, 18.1) clear it; min 70-71
            // (9.4, 8.8) start it again; min 72 RESP 7.5 < 8 escalates it to high (4320 s, below).
            (4260, "rr_low", "medium"),
            // min 72-75 (RESP 7.5, 8.6, 7, 6) and min 295-296 (RESP 2, 7.7): NEWS2 scores 3 for RR <= 8, but
            // that only repeats the rr_low alarm present then, so no advisory stands beside it.
            // min 172: NIBP 167/68 > 160, a spot reading: medium at once.
            (10320, "nibp_sys_high", "medium"),
            // min 1426-1427: HR 48.1, 49.8 and pulse 48.6, 49.6 < 50 on two consecutive minutes: one heart-rate
            // alarm with both rules in its evidence.
            (85620, "hr_low", "medium"),
        ]
    );
    let hr_low = events.iter().find(|e| e["condition"] == "hr_low" && e["phase"] == "start").unwrap();
    let rules: Vec<&str> =
        hr_low["evidence"]["rules"].as_array().unwrap().iter().map(|r| r["condition"].as_str().unwrap()).collect();
    assert_eq!(hr_low["evidence"]["family"], "heart_rate_low");
    assert!(rules.contains(&"hr_low"), "{rules:?}");
    assert!(events.iter().any(|e| e["alarm_id"] == hr_low["alarm_id"]
        && e["evidence"]["rules"].as_array().unwrap().iter().any(|r| r["condition"] == "pr_low")));
    // Escalations: rr_low into the high band at min 72 (RESP 7.5); the unanswered medium nibp_sys_high, hr_low
    // and pr_low after 3 min (a replay acknowledges nothing). Every later escalation of the same alarm is its
    // value entering the high band again (it always sounds again), or its condition coming back while latched:
    // a new activation with its own escalation timer (this ICU patient's RR hovers around the chair profile's
    // limit of 10 for hours).
    let escalations: Vec<_> = events
        .iter()
        .filter(|e| e["phase"] == "escalate")
        .map(|e| (e["offset_s"].as_f64().unwrap() as u64, e["condition"].as_str().unwrap(), e["alarm_id"].clone()))
        .collect();
    let first: Vec<_> = escalations.iter().map(|e| (e.0, e.1)).take(2).collect();
    assert_eq!(first, [(4320, "rr_low"), (4860, "rr_low")]);
    for reviewed in [(10500, "nibp_sys_high"), (85800, "hr_low")] {
        assert!(escalations.iter().any(|e| (e.0, e.1) == reviewed), "{reviewed:?} in {escalations:?}");
    }
    let mut seen_ids = std::collections::HashSet::new();
    for (t, condition, id) in &escalations {
        if !seen_ids.insert(id.clone()) {
            let this = events
                .iter()
                .find(|e| {
                    e["alarm_id"] == *id && e["phase"] == "escalate" && e["offset_s"].as_f64().unwrap() as u64 == *t
                })
                .unwrap();
            let reactivated = events.iter().any(|e| {
                e["alarm_id"] == *id
                    && e["offset_s"].as_f64().unwrap() as u64 <= *t
                    && e["evidence"].get("reactivated").is_some()
            });
            assert!(
                reactivated || this["evidence"]["band"] == "high",
                "{condition} escalated again at {t} neither by band nor after coming back from latched"
            );
        }
    }

    // The record's zeros: SpO2 is 0 ("no value") in 363 minutes, HR and PULSE are 0 in long stretches. None of
    // them is a desaturation or an asystole: every physiological alarm above saw a value > 0 ...
    for e in events.iter().filter(|e| e["kind"] == "threshold") {
        assert!(e["value"].as_f64().unwrap() > 0.0, "{e}");
    }
    assert!(events.iter().all(|e| e["condition"] != "spo2_low"), "SpO2 never fell below 92 for 25 SatSeconds");
    // ... and the stretches of zeros are technical no-data alarms instead (the probe was off, a nurse should
    // know): SpO2 and pulse 8 times each, HR and RR 4 times each. At 1 sample per minute replay raises the 10 s
    // no-data floor to 2 minutes and says so; the engine itself gives this once-a-minute source 2.5 periods
    // (150 s), so a single missing minute is no alarm.
    let by = &summary["by_condition"];
    assert_eq!((by["spo2_no_data"].as_u64(), by["pr_no_data"].as_u64()), (Some(8), Some(8)));
    assert_eq!((by["hr_no_data"].as_u64(), by["rr_no_data"].as_u64()), (Some(4), Some(4)));
    // Without a session the chair is watched for overdue NIBP at its own cuff rhythm (see the test below).
    assert_eq!(by["nibp_overdue"].as_u64(), Some(9));
    assert!(summary["adjustments"][0].as_str().unwrap().contains("from 10 to 120 s"));
    // The lone HR 11.5 at minute 1389, between minutes of zeros, is one unconfirmed sample: no hr_low, no
    // drift, no NEWS2 from it.
    assert!(physiological.iter().all(|a| !(83300..83600).contains(&a.0)));
    assert_eq!(summary["alarms"], 37);
    assert_eq!(summary["by_priority"]["medium"], 37);
    assert!(summary["by_priority"].get("low").is_none_or(|v| v == 0), "{summary}");
}

/// Seconds of the record's NIBP readings (a systolic with a value).
fn nibp_times() -> Vec<u64> {
    to_replay_csv()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.get(2) == Some(&"nibp_sys") && f.get(3).is_some_and(|v| !v.is_empty() && *v != "0"))
                .then(|| f[0].parse().unwrap())
        })
        .collect()
}

#[test]
fn a_chair_without_a_session_is_watched_for_overdue_nibp_in_every_long_gap_of_the_icu_record_and_only_there() {
    // This ICU record has no session and cycles its cuff every 15-60 min. A chair with no session is watched
    // from its first NIBP on at its own cuff rhythm (the longest of the last gaps), at least the pre-infusion
    // cycle of 10 min: overdue after 1.5 x that or that + 2 min, whichever is sooner.
    let (events, _) = replay("ketamine-chair", None);
    let overdue: Vec<u64> = starts(&events).into_iter().filter(|a| a.1 == "nibp_overdue").map(|a| a.0).collect();
    let readings = nibp_times();
    for &o in &overdue {
        let k = readings.iter().rposition(|&r| r < o).expect("overdue only after a first NIBP");
        let rhythm = (k.saturating_sub(2).max(1)..=k).map(|j| readings[j] - readings[j - 1]).max().unwrap_or(0);
        let waited = o - readings[k];
        assert!(
            waited >= 720.min(rhythm * 3 / 2),
            "overdue at {o} only {waited} s after a reading (rhythm {rhythm} s)"
        );
    }
    // A gap more than twice the rhythm before it (and over 12 min) always raises one.
    for w in readings.windows(5) {
        let rhythm = (1..4).map(|k| w[k] - w[k - 1]).max().unwrap();
        if w[4] - w[3] > (2 * rhythm).max(721) {
            assert!(overdue.iter().any(|&o| o > w[3] && o <= w[4]), "no overdue in the gap {:?}", &w[3..]);
        }
    }
    assert!(!overdue.is_empty());
}

#[test]
fn bed_seq_is_contiguous_and_alarm_ids_unique_over_the_whole_record() {
    let (events, _) = replay("ketamine-chair", None);
    for (k, e) in events.iter().enumerate() {
        assert_eq!(e["bed_seq"].as_u64(), Some(k as u64 + 1));
    }
    let mut ids: Vec<&str> =
        events.iter().filter(|e| e["phase"] == "start").map(|e| e["alarm_id"].as_str().unwrap()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
}

#[test]
fn compare_reports_both_profiles_on_the_same_record() {
    let (_, tail) = replay("ketamine-chair", Some("ketamine-chair-strict"));
    let compare = &tail[1]["compare"];
    assert_eq!(compare["ketamine-chair"]["alarms"], 37);
    // The strict profile's tighter limits start no more alarms here: SpO2 is never under 94 on two consecutive
    // minutes, and its systolic limit of 150 only moves the one NIBP alarm earlier (153 at min 107 instead of
    // 167 at min 172). In both profiles that alarm escalates unanswered, latches, and the later readings over
    // the limit (164 at min 1043; for the strict profile also 153 at min 1451) re-activate it instead of
    // starting new ones.
    assert_eq!(compare["ketamine-chair-strict"]["alarms"], 37);
    let (strict, _) = replay("ketamine-chair-strict", None);
    let bp: Vec<_> = starts(&strict).into_iter().filter(|a| a.1 == "nibp_sys_high").collect();
    assert_eq!(bp, [(6420, "nibp_sys_high", "medium")]);
    let (default, _) = replay("ketamine-chair", None);
    let reactivated = default
        .iter()
        .filter(|e| e["condition"] == "nibp_sys_high" && e["phase"] == "update" && e["state"] == "active")
        .map(|e| e["offset_s"].as_f64().unwrap() as u64)
        .collect::<Vec<_>>();
    assert_eq!(reactivated, [1043 * 60]);
}
