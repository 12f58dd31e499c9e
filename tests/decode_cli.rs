//! `vigil decode`, run as a user would: the binary on a capture file, JSON lines on stdout.

use std::path::Path;
use std::process::Command;

fn decode(format: &str, file: &Path) -> (i32, Vec<serde_json::Value>, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_vigil")).args(["decode", "--format", format]).arg(file).output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (out.status.code().unwrap_or(-1), lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

const CAPTURE: &str = "tests/fixtures/intellivue/desaturation-150s.bin";
/// From the s5 branch: `vigil-sim --scenario desaturation --device s5 --seed 7` (see its PROVENANCE).
const S5_CAPTURE: &str = "tests/fixtures/captures/s5_desaturation.bin";

#[test]
fn decoding_an_intellivue_capture_prints_its_numerics_and_the_monitors_own_alarms_then_a_summary() {
    let (code, lines, stderr) = decode("intellivue", Path::new(CAPTURE));
    assert_eq!(code, 0, "{stderr}");
    let readings: Vec<_> = lines.iter().filter(|l| l["kind"] == "reading").collect();
    let spo2: Vec<f64> =
        readings.iter().filter(|r| r["parameter"] == "spo2").filter_map(|r| r["value"].as_f64()).collect();
    assert!(spo2.len() >= 140, "one SpO2 a second: {}", spo2.len());
    assert!(spo2.iter().any(|v| *v < 85.0) && spo2.iter().any(|v| *v > 95.0), "the desaturation is there");
    let first = readings[0];
    for key in ["parameter", "value", "status", "device_time", "mdc"] {
        assert!(first.get(key).is_some(), "{key} in {first}");
    }
    assert_eq!(first["mdc"], 150456);
    assert!(readings.iter().any(|r| r["parameter"] == "pi" && r["mdc"] == 150448), "the perfusion indicator is PI");
    let alarms: Vec<_> = lines.iter().filter(|l| l["kind"] == "device_alarm").collect();
    assert!(!alarms.is_empty());
    assert!(alarms.iter().all(|a| a["text"] == "SpO2 LOW" && a["source"] == "monitor" && a["priority"] == "medium"));
    assert_eq!(alarms[0]["state"], "active");
    let summary = lines.last().unwrap();
    assert_eq!(summary["kind"], "summary");
    assert_eq!(summary["frames_bad"], 0);
    assert!(summary["frames_ok"].as_u64().unwrap() > 300);
}

#[test]
fn a_damaged_capture_counts_its_bad_frames_and_still_decodes_the_good_ones() {
    let mut bytes = std::fs::read(CAPTURE).unwrap();
    for i in (500..bytes.len()).step_by(4000) {
        bytes[i] ^= 0x5A;
    }
    bytes.truncate(bytes.len() - 20);
    let dir = tempfile::tempdir().unwrap();
    let damaged = dir.path().join("damaged.bin");
    std::fs::write(&damaged, &bytes).unwrap();
    let (code, lines, _) = decode("intellivue", &damaged);
    assert_eq!(code, 0);
    let summary = lines.last().unwrap();
    let bad = summary["frames_bad"].as_u64().unwrap();
    assert!(bad >= 10, "{summary}");
    assert!(summary["frames_ok"].as_u64().unwrap() > 250, "{summary}");
    assert!(summary["errors"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains("checksum")));
}

#[test]
fn other_formats_decode_through_the_same_command_and_an_unknown_one_is_refused() {
    let (code, lines, _) = decode("masimo", Path::new("tests/fixtures/masimo/rad_serial_samples.txt"));
    assert_eq!(code, 0);
    assert!(lines.iter().any(|l| l["kind"] == "reading" && l["parameter"] == "spo2" && l["mdc"] == 150456));
    let (code, lines, _) = decode("s5", Path::new(S5_CAPTURE));
    assert_eq!(code, 0);
    assert!(lines.iter().any(|l| l["kind"] == "reading" && l["parameter"] == "spo2"), "S/5 numerics");
    assert!(lines.iter().any(|l| l["kind"] == "device_alarm"), "S/5 alarm records");
    // An IntelliVue capture read as S/5 is all bad frames, said so, not a crash.
    let (code, lines, _) = decode("s5", Path::new(CAPTURE));
    assert_eq!(code, 0);
    assert_eq!(lines.last().unwrap()["readings"], 0);
    let (code, _, stderr) = decode("philips", Path::new(CAPTURE));
    assert_eq!(code, 65);
    assert!(stderr.contains("unknown --format"), "{stderr}");
}
