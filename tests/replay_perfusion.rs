//! `vigil replay` of a CSV with `pi` rows (issue 10 item 5, "use the perfusion index where the device sends
//! it"): the example in `docs/alarms.md` is the fixture `tests/fixtures/replay/low_perfusion.csv` (written by
//! hand for this test, not a recording) and replays as the document says.

use serde_json::Value;
use vigil::replay::{run, ReplayArgs};

const FIXTURE: &str = "tests/fixtures/replay/low_perfusion.csv";

/// (offset, condition, phase, priority) of every alarm event of a replay of `text`.
fn replay(text: &str) -> Vec<(f64, String, String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recording.csv");
    std::fs::write(&path, text).unwrap();
    let mut out = Vec::new();
    run(&ReplayArgs::new(&path), &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e.get("alarm_id").is_some())
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_owned();
            (e["offset_s"].as_f64().unwrap(), s("condition"), s("phase"), s("priority"))
        })
        .collect()
}

fn starts(events: &[(f64, String, String, String)], condition: &str) -> Vec<f64> {
    events.iter().filter(|e| e.1 == condition && e.2 == "start").map(|e| e.0).collect()
}

#[test]
fn a_desaturation_at_a_low_perfusion_index_replays_as_poor_signal_until_the_index_recovers() {
    let doc = std::fs::read_to_string("docs/alarms.md").unwrap();
    let from = doc.find("### SpO2 and the perfusion index").expect("the section in docs/alarms.md");
    let block = doc[from..].split("```csv\n").nth(1).expect("a ```csv block").split("```").next().unwrap();
    let fixture = std::fs::read_to_string(FIXTURE).unwrap();
    assert_eq!(block, fixture, "docs/alarms.md's example and the fixture differ");

    let events = replay(&fixture);
    // SpO2 84 at PI 0.3 from 5 s: questionable, so no threshold alarm; confirmed for 10 s it is poor signal.
    let poor = starts(&events, "spo2_low_poor_signal");
    assert_eq!(poor.len(), 1, "{events:?}");
    assert!((15.0..=16.0).contains(&poor[0]), "{events:?}");
    assert!(events.iter().any(|e| e.1 == "spo2_low_poor_signal" && e.3 == "medium"), "{events:?}");
    // The index recovers at 25 s: the same 84 % is valid and alarms high at once; poor signal ends.
    assert_eq!(starts(&events, "spo2_low"), [25.0], "{events:?}");
    assert!(events.iter().any(|e| e.0 == 25.0 && e.1 == "spo2_low_poor_signal" && e.2 == "end"), "{events:?}");
}

#[test]
fn the_same_recording_at_a_good_perfusion_index_alarms_as_without_one() {
    let fixture = std::fs::read_to_string(FIXTURE).unwrap();
    let good = fixture.replace(",pi,0.3", ",pi,2.4");
    let without = fixture.lines().filter(|l| !l.contains(",pi,")).collect::<Vec<_>>().join("\n") + "\n";
    let (good, without) = (replay(&good), replay(&without));
    assert_eq!(starts(&good, "spo2_low"), [5.0], "{good:?}");
    assert!(starts(&good, "spo2_low_poor_signal").is_empty(), "{good:?}");
    assert_eq!(good, without, "a good perfusion index changes nothing");
}
