//! `vigil replay` as a new user runs it: the real binary on a recording file, JSON lines on stdout.

use std::process::Command;

use serde_json::Value;

#[test]
fn vigil_replay_prints_one_json_line_per_alarm_event_then_the_summary_and_the_comparison() {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["replay", "tests/fixtures/replay/nibp_climb_session.csv", "--compare", "ketamine-chair-strict"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (events, tail) = lines.split_at(lines.len() - 2);
    let fields = [
        "offset_s",
        "time",
        "bed",
        "alarm_id",
        "seq",
        "bed_seq",
        "kind",
        "condition",
        "parameter",
        "priority",
        "phase",
        "state",
        "value",
        "limit",
        "evidence",
    ];
    for e in events {
        let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        for f in fields {
            assert!(keys.contains(&f), "{f} missing in {e}");
        }
        assert_eq!(keys.len(), fields.len(), "{e}");
    }
    // The same recording as the done-when test: one blood-pressure alarm; the rise rule joins it at the 176
    // reading (2400 s), the diastolic 112 makes it high at 2700 s.
    let rule_at = |condition: &str, t: f64| {
        events.iter().any(|e| {
            e["offset_s"] == t
                && e["evidence"]["family"] == "blood_pressure_high"
                && e["evidence"]["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["condition"] == condition && r["present"] == true)
        })
    };
    assert!(rule_at("nibp_sys_rise", 2400.0));
    assert!(events.iter().any(|e| e["phase"] == "escalate" && e["priority"] == "high" && e["offset_s"] == 2700.0));
    assert!(rule_at("nibp_dia_high", 2700.0));
    assert!(tail[0]["summary"]["alarms_per_hour"].as_f64().unwrap() > 0.0);
    // The comparison line names both profiles with their alarm counts.
    assert_eq!(tail[1]["compare"]["ketamine-chair"]["alarms"], tail[0]["summary"]["alarms"]);
    assert!(tail[1]["compare"]["ketamine-chair-strict"]["alarms"].as_u64().is_some());
}

#[test]
fn vigil_replay_refuses_a_file_it_cannot_read_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "timestamp,bed,parameter,value\n0,chair-1,heart,70\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil")).args(["replay", bad.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv:2") && err.contains("parameter 'heart'"), "{err}");
}
