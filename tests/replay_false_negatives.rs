//! Issue 10's "Done when", tried as a new user would: recordings written as files and replayed by the real
//! `vigil replay` binary, reading the JSON lines it prints.

use std::fmt::Write as _;
use std::process::Command;

use serde_json::Value;

/// Replays `csv` (header included) with the real binary; alarm events and the summary.
fn replay(name: &str, text: &str, extra: &[&str]) -> (Vec<Value>, Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil")).arg("replay").args(extra).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary = lines.iter().find_map(|l| l.get("summary").cloned()).expect("a summary line");
    (lines.into_iter().filter(|l| l.get("alarm_id").is_some()).collect(), summary)
}

fn at(events: &[Value], condition: &str) -> Vec<(f64, String, String, String)> {
    events
        .iter()
        .filter(|e| e["condition"] == condition)
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_owned();
            (e["offset_s"].as_f64().unwrap(), s("phase"), s("state"), s("priority"))
        })
        .collect()
}

#[test]
fn a_nurse_acknowledges_a_desaturation_that_then_deepens_and_replay_shows_a_fresh_high_alarm() {
    let mut csv = String::from("timestamp,bed,parameter,value\n");
    for t in 0..240u32 {
        let spo2 = match t {
            0..60 => 97,
            60..120 => 87,
            _ => 80,
        };
        writeln!(csv, "{t},chair-1,spo2,{spo2}").unwrap();
        if t == 90 {
            writeln!(csv, "{t},chair-1,event,acknowledge").unwrap();
        }
    }
    let (events, _) = replay("deepens.csv", &csv, &[]);
    let spo2 = at(&events, "spo2_low");
    assert_eq!(spo2[0], (60.0, "start".into(), "active".into(), "high".into()), "{spo2:?}");
    assert!(spo2.contains(&(90.0, "update".into(), "acknowledged".into(), "high".into())), "{spo2:?}");
    // 87 -> 80 is 7 points worse than when it was acknowledged: active (audible) again at once.
    assert!(spo2.contains(&(120.0, "update".into(), "active".into(), "high".into())), "{spo2:?}");
    let fresh = events.iter().find(|e| e["condition"] == "spo2_low" && e["offset_s"] == 120.0).unwrap();
    assert_eq!((fresh["value"].as_f64(), fresh["evidence"]["worst_value"].as_f64()), (Some(80.0), Some(80.0)));
    assert!(fresh["evidence"]["reannounced"].as_str().unwrap().contains("worse by 7"), "{fresh}");
}

#[test]
fn respiration_measured_as_zero_raises_apnoea_high() {
    let mut csv = String::from("timestamp,bed,parameter,value,status\n");
    for t in 0..60u32 {
        writeln!(csv, "{t},chair-1,rr,{},valid", if t < 10 { 14 } else { 0 }).unwrap();
    }
    let (events, _) = replay("apnoea.csv", &csv, &[]);
    assert_eq!(at(&events, "apnoea")[0], (30.0, "start".into(), "active".into(), "high".into()), "{events:#?}");
    // Without a status the file's 0 keeps meaning "no value" (monitor exports): no apnoea, a no-data alarm.
    let four = csv.replace(",status\n", "\n").replace(",valid\n", "\n");
    let (events, _) = replay("apnoea4.csv", &four, &[]);
    assert!(at(&events, "apnoea").is_empty());
    assert!(!at(&events, "rr_no_data").is_empty());
}

#[test]
fn an_hr_source_reporting_every_15_s_still_alarms() {
    let mut csv = String::from("timestamp,bed,parameter,value\n");
    for k in 0..20u32 {
        writeln!(csv, "{},chair-1,hr,{}", k * 15, if k < 4 { 80 } else { 150 }).unwrap();
    }
    let (events, _) = replay("slow_hr.csv", &csv, &[]);
    let hr = at(&events, "hr_high");
    assert_eq!(hr[0], (75.0, "start".into(), "active".into(), "high".into()), "{hr:?}");
    assert!(at(&events, "hr_no_data").is_empty(), "{events:#?}");
}

/// An HL7 ORU^R01 with SpO2 at its message time and an NIBP measured at `nibp` (HL7 DTM, UTC).
fn oru(control: u32, msh7: &str, nibp: &str) -> String {
    [
        format!("MSH|^~\\&|MINDRAY_VS900^00A0370098007A80^EUI-64||||{msh7}||ORU^R01^ORU_R01|{control}|P|2.6"),
        "PID|||^^^Hospital^PI||^^^^^^L".into(),
        format!("OBR|1|{control}^MINDRAY_VS900|{control}^MINDRAY_VS900|182777000^monitoring of patient^SCT|||{msh7}"),
        format!("OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3.1.150456|98|262688^MDC_DIM_PERCENT^MDC|||||R|||{msh7}"),
        format!("OBX|2|NM|150301^MDC_PRESS_CUFF_SYS^MDC|1.1.9.150301|147|266016^MDC_DIM_MMHG^MDC|||||R|||{nibp}"),
        format!("OBX|3|NM|150302^MDC_PRESS_CUFF_DIA^MDC|1.1.9.150302|90|266016^MDC_DIM_MMHG^MDC|||||R|||{nibp}"),
    ]
    .join("\r")
}

#[test]
fn a_resent_24_minute_old_nibp_counts_from_its_measurement_and_overdue_still_fires() {
    // A monitor that sends its last NIBP (measured 11:10:16) with every message from 11:34:52 on, one a minute
    // for 20 minutes, as the real Mindray sample does.
    let mut capture = Vec::new();
    for k in 0..20u32 {
        let (h, m) = (11 + (34 + k) / 60, (34 + k) % 60);
        let msg = oru(1000 + k, &format!("20191206{h:02}{m:02}52"), "20191206111016");
        capture.extend_from_slice(&[0x0b]);
        capture.extend_from_slice(msg.as_bytes());
        capture.extend_from_slice(&[0x1c, 0x0d]);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resent.hl7");
    std::fs::write(&path, &capture).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_vigil")).args(["replay", "--format", "hl7"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l.get("alarm_id").is_some())
        .collect();
    let overdue = at(&events, "nibp_overdue");
    // The reading is 24 min 36 s old when it first arrives: far past a chair's 10 min + 2 min, at once.
    assert_eq!(overdue.first().map(|o| (o.0, o.1.as_str())), Some((0.0, "start")), "{events:#?}");
    assert!(!overdue.iter().any(|o| o.1 == "end"), "the resent value never ends it: {overdue:?}");
    let e = events.iter().find(|e| e["condition"] == "nibp_overdue").unwrap();
    assert_eq!(e["evidence"]["last_reading"], "2019-12-06T11:10:16+00:00");
    assert_eq!(e["evidence"]["since_s"], 24 * 60 + 36);
}
