//! Replay of raw device captures through the daemon's own decoders (`ingest::protocol`).

use std::fmt::Write as _;

use serde_json::Value;
use vigil::replay::{run, ReplayArgs};

fn replay(name: &str, bytes: &[u8], format: &str) -> (Vec<Value>, Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let mut args = ReplayArgs::new(&path);
    args.format = format.into();
    args.bed = Some("chair-3".into());
    let mut out = Vec::new();
    run(&args, &mut out).unwrap();
    let mut lines: Vec<Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary = lines.pop().unwrap();
    (lines, summary["summary"].clone())
}

fn starts(events: &[Value]) -> Vec<(f64, String, String)> {
    events
        .iter()
        .filter(|e| e["phase"] == "start")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_owned();
            (e["offset_s"].as_f64().unwrap(), s("condition"), s("priority"))
        })
        .collect()
}

#[test]
fn a_masimo_ascii_capture_replays_on_the_device_clock_with_sensor_flags() {
    // Rad-8 "ASCII 1" lines in the real format (tests/fixtures/masimo): 60 s at 97 %, a fall to 85 % for 20 s,
    // recovery, then the sensor comes off (EXC 020, dashes for values) for 12 s.
    let mut capture = String::new();
    for s in 0..120u32 {
        let (spo2, bpm, exc) = match s {
            60..80 => ("085", "101", "000800"),
            100..112 => ("---", "---", "000020"),
            _ => ("097", "076", "000800"),
        };
        writeln!(
            capture,
            "02/22/16 22:{:02}:{:02} SN=0000056661 SPO2={spo2}% BPM={bpm} PI=03.60% SPCO=--.-% SPMET=--.-% DESAT=-- PIDELTA=+-- ALARM=0000 EXC={exc}",
            s / 60,
            s % 60
        )
        .unwrap();
    }
    let (events, summary) = replay("rad8.txt", capture.as_bytes(), "auto");
    assert_eq!(summary["beds"], serde_json::json!(["chair-3"]));
    assert_eq!(
        starts(&events),
        [
            // 85 % is a deep drop: high at once, on the first line that says so.
            (60.0, "spo2_low".into(), "high".into()),
            // EXC 0x020 (sensor off) for 5 s: technical. SpO2 and pulse are silent from 100 s too, but the sensor
            // alarm already says why: no separate no-data alarms (one cause, one alarm).
            (105.0, "sensor_off".into(), "medium".into()),
        ]
    );
    assert_eq!(events[0]["time"], "2016-02-22T22:01:00Z", "the device's own clock");
}

#[test]
fn the_hl7_pcd01_samples_replay_through_the_hl7_decoder_and_demo_data_is_flagged() {
    // Real messages from several monitors and years (tests/fixtures/hl7): replay decodes them, flags the demo-mode
    // ones (OBX-8 DEMO) as a technical alarm, and takes no sentinel (-999, -100) for a patient value.
    let samples = include_bytes!("fixtures/captures/pcd01_samples.txt");
    let (events, summary) = replay("pcd01.txt", samples, "auto");
    assert!(summary["rows"].as_u64().unwrap() > 30, "{summary}");
    // Nothing physiological: every value in these messages is in range, and the sentinels are not values.
    assert!(events.iter().all(|e| e["kind"] == "technical"), "{events:#?}");
    // Demo mode: the messages marked DEMO (2020-02-12 and 2026-07-27) raise one demo alarm each time.
    let demo: Vec<_> = events
        .iter()
        .filter(|e| e["condition"] == "demo_data" && e["phase"] == "start")
        .map(|e| e["time"].as_str().unwrap()[..10].to_owned())
        .collect();
    assert_eq!(demo, ["2020-02-12", "2026-07-27"]);
    // Each message is a single snapshot of unrelated monitors years apart, so SpO2 and pulse fall silent 10 s
    // after each and no-data alarms follow; the messages are far too sparse to widen the no-data time.
    assert!(summary["adjustments"][0].as_str().unwrap().contains("kept at 10 s"), "{summary}");
}

#[test]
fn a_nonin_capture_replays_one_frame_per_second_and_flagged_values_never_alarm() {
    // Format #8 frames: status (bit 7 set, HR bits 8-7), HR low 7 bits, SpO2, status 2 (CLINICAL "Nonin").
    let frame = |status: u8, hr: u8, spo2: u8| [0x80 | status, hr, spo2, 0x00];
    let mut capture = Vec::new();
    for s in 0..90 {
        capture.extend(match s {
            // Artefact flag (0x04) for 6 s: SpO2 80 is questionable, never an alarm (10 s of it would raise the
            // technical no-data alarm, as nothing valid arrives).
            20..26 => frame(0x04, 90, 80),
            // A clean 85 %: a deep drop, high at once.
            60..70 => frame(0x00, 95, 85),
            _ => frame(0x00, 72, 97),
        });
        if s == 40 {
            capture.extend([0x13, 0x37]); // line noise: the decoder resynchronises
        }
    }
    let (events, summary) = replay("nonin.bin", &capture, "nonin");
    assert_eq!(starts(&events), [(60.0, "spo2_low".into(), "high".into())], "{summary}");
}

#[test]
fn an_s5_capture_from_the_simulator_replays_on_the_record_clock_and_raises_the_desaturation() {
    // tests/fixtures/captures/s5_desaturation.bin: `vigil-sim --scenario desaturation --device s5 --seed 7
    // --speed max --output file:…` (PROVENANCE.md), DRI records as the monitor sends them.
    let bytes = std::fs::read("tests/fixtures/captures/s5_desaturation.bin").unwrap();
    for format in ["s5", "auto"] {
        let (events, summary) = replay("s5.bin", &bytes, format);
        let spo2 = starts(&events).into_iter().find(|(_, c, _)| c == "spo2_low");
        let (offset, _, _) = spo2.unwrap_or_else(|| panic!("{format}: no spo2_low in {events:?}"));
        // The scenario's first desaturation starts at 60 s and is below 88 % about 90 s later; the engine sees
        // it on the 5-second records, at most a record late.
        assert!((60.0..200.0).contains(&offset), "{format}: spo2_low at {offset} s");
        assert_eq!(events[0]["time"].as_str().unwrap().get(..13), Some("2026-01-01T08"), "record clock");
        assert!(summary["rows"].as_u64().unwrap() > 2000, "{summary}");
    }
    // Garbage in front and a truncated tail are skipped as on the line.
    let mut damaged = b"\x00\x13line noise".to_vec();
    damaged.extend_from_slice(&bytes[..bytes.len() - 300]);
    let (events, _) = replay("damaged.bin", &damaged, "s5");
    assert!(starts(&events).iter().any(|(_, c, _)| c == "spo2_low"));
}

#[test]
fn an_intellivue_capture_from_the_simulator_replays_through_the_data_export_decoder() {
    // What an IntelliVue sends in a polled session, as `vigil-sim --device intellivue --output file:…` writes it.
    use vigil_sim::{Device, FeedOptions, Simulation, Speed};
    let opts = FeedOptions {
        scenario: "desaturation".into(),
        device: Device::Intellivue,
        seed: 7,
        speed: Speed::Max,
        patient: 0,
        device_id: None,
    };
    let capture: Vec<u8> =
        Simulation::new(&opts, vigil_sim::fixed_epoch()).unwrap().take(600).flat_map(|t| t.bytes).collect();
    assert!(!capture.is_empty(), "the simulator wrote a capture");
    let (events, summary) = replay("intellivue.bin", &capture, "intellivue");
    // The desaturation family starts as a falling trend and escalates to spo2_low as the nadir is reached.
    let low = events.iter().find(|e| e["condition"] == "spo2_low").unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(low["time"].as_str().unwrap().get(..16), Some("2026-01-01T08:01"), "on the capture's clock");
    assert!(summary["rows"].as_u64().unwrap() > 500, "{summary}");
}
