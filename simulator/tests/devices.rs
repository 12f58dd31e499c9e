//! The bytes each personality puts on the wire have the real device's shape, and carry the displayed values.
//! (The daemon-side round trip lives in the root `tests/`; these check the wire format on its own.)

mod common;

use common::{opts, ticks};
use vigil_sim::devices::{hl7, nonin};
use vigil_sim::{Device, SensorState};

/// A Rad-8 ASCII 1 line, field by field, as in the capture in tests/fixtures/masimo/rad_serial_samples.txt [A] and the OpenICE regex.
fn parse_masimo(line: &str) -> (Option<u8>, Option<u16>, u32) {
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 12, "{line}");
    assert!(chrono::NaiveDateTime::parse_from_str(&format!("{} {}", fields[0], fields[1]), "%m/%d/%y %H:%M:%S").is_ok());
    let keys: Vec<&str> = fields[2..].iter().map(|f| f.split('=').next().unwrap()).collect();
    assert_eq!(keys, ["SN", "SPO2", "BPM", "PI", "SPCO", "SPMET", "DESAT", "PIDELTA", "ALARM", "EXC"], "{line}");
    let value = |i: usize| fields[i].split_once('=').unwrap().1;
    let spo2 = value(3).strip_suffix('%').unwrap();
    let bpm = value(4);
    assert!(spo2.len() == 3 && bpm.len() == 3, "{line}");
    let exc = u32::from_str_radix(value(11), 16).unwrap();
    (spo2.parse().ok(), bpm.parse().ok(), exc)
}

#[test]
fn masimo_lines_look_like_a_rad8_and_carry_the_displayed_values() {
    for tick in ticks(&opts("probe-off-and-artefacts", Device::Masimo, 4)) {
        if tick.sample.garbage > 0 || tick.bytes.is_empty() {
            continue;
        }
        let text = std::str::from_utf8(&tick.bytes).unwrap();
        let line = text.strip_suffix("\r\n").expect("CR LF");
        assert!(!line.contains(['\r', '\n']));
        let (spo2, bpm, exc) = parse_masimo(line);
        assert_eq!(spo2, tick.sample.shown.spo2);
        assert_eq!(bpm, tick.sample.shown.pulse);
        assert_eq!(
            exc & 0x800 != 0,
            tick.sample.sensor != SensorState::NoSensor,
            "SET bit while a sensor is connected"
        );
        match tick.sample.sensor {
            SensorState::Ok => assert_eq!(exc, 0x800),
            SensorState::ProbeOff { searching } => {
                assert!(exc & 0x020 != 0 && spo2.is_none());
                assert_eq!(exc & 0x008 != 0, searching);
            }
            SensorState::PulseSearch => assert_eq!(exc, 0x808),
            SensorState::NoSensor => assert_eq!(exc, 0x001),
            SensorState::Artefact => assert_eq!(exc, 0xC10),
        }
    }
}

#[test]
fn every_sensor_state_appears_in_the_probe_off_scenario() {
    let states: std::collections::HashSet<String> = ticks(&opts("probe-off-and-artefacts", Device::Masimo, 4))
        .iter()
        .map(|t| format!("{:?}", t.sample.sensor))
        .collect();
    assert_eq!(states.len(), 6, "{states:?}");
}

#[test]
fn nonin_sends_four_bytes_a_second_with_missing_values_as_511_and_127() {
    let t = ticks(&opts("probe-off-and-artefacts", Device::Nonin, 4));
    for tick in &t {
        if tick.sample.garbage > 0 {
            continue;
        }
        let b: [u8; 4] = tick.bytes.as_slice().try_into().unwrap();
        assert!(b[0] & 0x80 != 0 && b[1..].iter().all(|x| x & 0x80 == 0));
        let hr = (u16::from(b[0] & 0x03) << 7) | u16::from(b[1]);
        assert_eq!(hr, tick.sample.shown.pulse.unwrap_or(nonin::HR_MISSING));
        assert_eq!(b[2], tick.sample.shown.spo2.unwrap_or(nonin::SPO2_MISSING));
        let flags = b[0] & 0x7C;
        match tick.sample.sensor {
            SensorState::ProbeOff { .. } => {
                assert_eq!(flags, nonin::status::OOT);
                assert_eq!(b[3], nonin::status2::SNSA);
            }
            SensorState::PulseSearch => assert_eq!(flags, nonin::status::OOT),
            SensorState::NoSensor => assert_eq!(flags, nonin::status::SNSD),
            SensorState::Artefact => assert!(flags & nonin::status::ARTF != 0),
            SensorState::Ok => assert_eq!(flags & (nonin::status::ARTF | nonin::status::OOT), 0),
        }
    }
}

fn obx_values(message: &str) -> Vec<(String, String, String, String)> {
    message
        .split('\r')
        .filter(|s| s.starts_with("OBX|"))
        .map(|s| {
            let f: Vec<&str> = s.split('|').collect();
            let code = f[3].split('^').next().unwrap().to_owned();
            (code, f[5].to_owned(), f[8].to_owned(), f[14].to_owned())
        })
        .collect()
}

#[test]
fn hl7_sends_one_mllp_framed_oru_a_second_with_nibp_when_a_cycle_completes() {
    let o = opts("hypertensive-surge", Device::Hl7, 2);
    let t = ticks(&o);
    let mut control_ids = Vec::new();
    for tick in t.iter().take(600) {
        let bytes = &tick.bytes;
        assert_eq!(tick.messages, 1);
        assert_eq!(bytes[0], hl7::MLLP_START);
        assert!(bytes.ends_with(&[hl7::MLLP_END, hl7::MLLP_CR]));
        let text = std::str::from_utf8(&bytes[1..bytes.len() - 2]).unwrap();
        assert!(text.ends_with('\r') && !text.contains('\n'));
        let segs: Vec<&str> = text.trim_end_matches('\r').split('\r').collect();
        assert!(segs[0].starts_with("MSH|^~\\&|VIGIL_SIM^"));
        let msh: Vec<&str> = segs[0].split('|').collect();
        assert_eq!(msh[2].split('^').nth(2), Some("EUI-64"));
        assert_eq!(msh[8], "ORU^R01^ORU_R01");
        control_ids.push(msh[9].to_owned());
        assert_eq!(&segs[1][..4], "PID|");
        assert_eq!(&segs[2][..4], "PV1|");
        assert_eq!(&segs[3][..4], "OBR|");
        let obx = obx_values(text);
        assert_eq!(obx[0].0, "150456");
        assert_eq!(obx[0].1, tick.sample.shown.spo2.unwrap().to_string());
        assert_eq!(obx[1].0, "149530");
        assert_eq!(obx[1].1, tick.sample.shown.pulse.unwrap().to_string());
        let nibp: Vec<_> = obx.iter().filter(|o| o.0.starts_with("1503")).collect();
        match tick.sample.nibp {
            None => assert!(nibp.is_empty()),
            Some(n) => {
                let v = n.values.unwrap();
                assert_eq!(
                    nibp.iter().map(|o| (o.0.as_str(), o.1.clone())).collect::<Vec<_>>(),
                    [
                        ("150301", v.systolic.to_string()),
                        ("150303", v.mean.to_string()),
                        ("150302", v.diastolic.to_string())
                    ]
                );
                // OBX-14 is the cuff's measurement time, earlier than the message time.
                let obx14 = n.started.format("%Y%m%d%H%M%S+0000").to_string();
                assert!(nibp.iter().all(|o| o.3 == obx14));
                assert!(n.started < tick.sample.device_time);
            }
        }
    }
    let unique: std::collections::HashSet<_> = control_ids.iter().collect();
    assert_eq!(unique.len(), control_ids.len(), "MSH-10 must be unique per message");
}

#[test]
fn hl7_marks_demo_mode_in_obx_8_only_while_it_is_on() {
    let o = vigil_sim::FeedOptions { patient: 5, ..opts("ward-of-six", Device::Hl7, 1) };
    for tick in ticks(&o).iter().filter(|t| t.sample.garbage == 0) {
        let text = String::from_utf8_lossy(&tick.bytes);
        let demo = obx_values(&text).iter().all(|o| o.2 == "DEMO");
        let none = obx_values(&text).iter().all(|o| o.2.is_empty());
        assert!(if tick.sample.demo { demo } else { none }, "at {} s", tick.sample.offset_s);
    }
}

#[test]
fn hl7_line_noise_stays_outside_the_mllp_frames() {
    let o = vigil_sim::FeedOptions { patient: 5, ..opts("ward-of-six", Device::Hl7, 1) };
    let noisy: Vec<_> = ticks(&o).into_iter().filter(|t| t.sample.garbage > 0).collect();
    assert_eq!(noisy.len(), 1);
    let b = &noisy[0].bytes;
    let g = noisy[0].sample.garbage;
    assert!(!b[..g].contains(&hl7::MLLP_START) && !b[..g].contains(&hl7::MLLP_END));
    assert_eq!(b[g], hl7::MLLP_START);
}

#[test]
fn hl7_device_id_is_taken_from_the_options_or_derived_stably() {
    let given =
        vigil_sim::FeedOptions { device_id: Some("0A0B0C0D0E0F1011".into()), ..opts("calm-session", Device::Hl7, 1) };
    let first = ticks(&given).remove(0);
    assert!(String::from_utf8_lossy(&first.bytes).contains("VIGIL_SIM^0A0B0C0D0E0F1011^EUI-64"));
    let a = vigil_sim::Simulation::new(&opts("ward-of-six", Device::Hl7, 1), vigil_sim::fixed_epoch()).unwrap();
    let b = vigil_sim::Simulation::new(
        &vigil_sim::FeedOptions { patient: 1, ..opts("ward-of-six", Device::Hl7, 1) },
        vigil_sim::fixed_epoch(),
    )
    .unwrap();
    assert_ne!(a.device_id(), b.device_id(), "each bed needs its own MSH-3");
    let bad = vigil_sim::FeedOptions { device_id: Some("A|B".into()), ..opts("calm-session", Device::Hl7, 1) };
    assert!(vigil_sim::Simulation::new(&bad, vigil_sim::fixed_epoch()).is_err());
}

#[test]
fn a_failed_cuff_cycle_is_sent_as_minus_999_with_its_time() {
    let o = vigil_sim::FeedOptions { patient: 3, ..opts("ward-of-six", Device::Hl7, 1) };
    let failed = ticks(&o).into_iter().find(|t| t.sample.nibp.is_some_and(|n| n.values.is_none())).unwrap();
    let text = String::from_utf8_lossy(&failed.bytes).into_owned();
    let nibp: Vec<_> = obx_values(&text).into_iter().filter(|o| o.0.starts_with("1503")).collect();
    assert_eq!(nibp.len(), 3);
    assert!(nibp.iter().all(|o| o.1 == "-999"));
}

mod encoders {
    use proptest::prelude::*;
    use vigil_sim::devices::masimo::{encode as masimo, MasimoLine};
    use vigil_sim::devices::nonin::{encode as nonin, NoninFrame};

    /// A reference format #8 decoder written from the bit table in `nonin.rs`, independent of the encoder.
    fn decode_nonin(b: [u8; 4]) -> (Option<u16>, Option<u8>, u8, u8) {
        let hr = (u16::from(b[0] & 0x03) << 7) | u16::from(b[1] & 0x7F);
        let spo2 = b[2] & 0x7F;
        ((hr != 511).then_some(hr), (spo2 != 127).then_some(spo2), b[0] & 0x7C, b[3])
    }

    proptest! {
        #[test]
        fn nonin_frames_decode_back_to_what_was_encoded(
            hr in prop::option::of(0u16..=510), spo2 in prop::option::of(0u8..=100), status in 0u8..0x20, status2 in 0u8..0x40,
        ) {
            let status = status << 2;
            let frame = NoninFrame { hr, spo2, status, status2 };
            prop_assert_eq!(decode_nonin(nonin(&frame)), (hr, spo2, status, status2));
        }

        #[test]
        fn masimo_lines_keep_their_shape_for_any_value(
            spo2 in prop::option::of(any::<u8>()), bpm in prop::option::of(any::<u16>()),
            pi in prop::option::of(-5.0f64..200.0), alarm in 0u16..0x40, exc in 0u32..0x1000, secs in 0i64..4_000_000_000,
        ) {
            let time = chrono::DateTime::from_timestamp(secs, 0).unwrap().naive_utc();
            let line = MasimoLine { time, serial: 56661, spo2, bpm, pi, alarm, exc };
            let text = String::from_utf8(masimo(&line)).unwrap();
            prop_assert!(text.ends_with("\r\n"));
            let fields: Vec<&str> = text.trim_end().split(' ').collect();
            prop_assert_eq!(fields.len(), 12);
            let spo2_field = fields[3].trim_start_matches("SPO2=").trim_end_matches('%');
            prop_assert_eq!(spo2_field.len(), 3);
            prop_assert_eq!(spo2_field.parse::<u8>().ok(), spo2.map(|s| s.min(100)));
            prop_assert_eq!(fields[4].len(), "BPM=097".len());
            prop_assert_eq!(fields[5].len(), "PI=03.60%".len());
        }
    }
}
