//! Every real sample in `tests/fixtures/` (each with its provenance, sources in `docs/sources.md`) decodes as
//! its provenance file documents it.

use bytes::BytesMut;
use tokio_util::codec::Decoder;
use vigil::ingest::protocol::hl7::{self, Oru};
use vigil::ingest::protocol::masimo::{self, MasimoDecoder};
use vigil::ingest::protocol::mllp;
use vigil::ingest::protocol::{plausibility, Frame, SensorFlags};
use vigil::vitals::{Parameter, ValueStatus};

const MASIMO: &str = include_str!("fixtures/masimo/rad_serial_samples.txt");
const HL7: &str = include_str!("fixtures/hl7/pcd01_samples.txt");

fn masimo_lines() -> Vec<&'static str> {
    MASIMO.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect()
}

/// `## [n]` sections of the HL7 fixture, each joined with CR as on the wire.
fn hl7_messages() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in HL7.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            out.push((title.to_owned(), Vec::new()));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            out.last_mut().expect("a message after a title").1.push(line.to_owned());
        }
    }
    out.into_iter().map(|(t, lines)| (t, lines.join("\r").into_bytes())).collect()
}

fn get(f: &Frame, p: Parameter) -> (Option<f64>, ValueStatus) {
    let m = f.measurements.iter().find(|m| m.parameter == p).unwrap_or_else(|| panic!("{p} missing in {f:?}"));
    (m.value, m.status)
}

fn oru(n: usize) -> Oru {
    let (title, msg) = &hl7_messages()[n - 1];
    assert!(title.starts_with(&format!("[{n}]")), "{title}");
    hl7::parse_oru(msg).unwrap_or_else(|e| panic!("{title}: {e}"))
}

use ValueStatus::{Demo, Questionable, Unavailable, Valid};

/// SpO2 and its status, pulse and its status, sensor flags.
type Expected = (Option<f64>, ValueStatus, Option<f64>, ValueStatus, SensorFlags);

#[test]
fn every_masimo_sample_line_decodes_with_the_documented_values_and_flags() {
    let none = SensorFlags::default();
    #[rustfmt::skip]
    let expected: [Expected; 16] = [
        // [A] live ASCII 1
        (Some(98.0), Valid, Some(97.0), Valid, none),
        (Some(98.0), Valid, Some(96.0), Valid, none),
        (Some(98.0), Valid, Some(96.0), Valid, none),
        (Some(98.0), Valid, Some(96.0), Valid, none),
        (Some(98.0), Valid, Some(97.0), Valid, none),
        // [B] no sensor (EXC 001)
        (None, Unavailable, None, Unavailable, SensorFlags::NO_SENSOR),
        // Radical-7 "color": EXC C00 = low signal IQ + SET
        (Some(98.0), Questionable, Some(123.0), Questionable, SensorFlags::LOW_SIGNAL_IQ),
        // Radical-7 "blue": dashes
        (None, Unavailable, None, Unavailable, none),
        // [C] trend download
        (None, Unavailable, None, Unavailable, SensorFlags::SENSOR_OFF),
        (None, Unavailable, None, Unavailable, SensorFlags::SENSOR_OFF.union(SensorFlags::PULSE_SEARCH)),
        (Some(97.0), Valid, Some(69.0), Valid, none),
        (Some(96.0), Questionable, Some(74.0), Questionable, SensorFlags::LOW_SIGNAL_IQ),
        (Some(98.0), Valid, Some(78.0), Valid, none),
        (None, Unavailable, None, Unavailable, none),
        (None, Unavailable, None, Unavailable, SensorFlags::SENSOR_OFF),
        (Some(96.0), Valid, Some(78.0), Valid, none),
    ];
    let lines = masimo_lines();
    assert_eq!(lines.len(), 16, "the fixture has 16 sample lines");
    for (line, (spo2, spo2_status, pr, pr_status, flags)) in lines.iter().zip(expected) {
        let f = masimo::parse_line(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(get(&f, Parameter::Spo2), (spo2, spo2_status), "{line}");
        assert_eq!(get(&f, Parameter::Pr), (pr, pr_status), "{line}");
        assert_eq!(f.sensor, flags, "{line}");
        assert!(f.device_time.is_some(), "{line}: the line's own timestamp is kept");
    }
}

#[test]
fn masimo_live_lines_keep_serial_number_alarm_bits_and_their_own_clock() {
    let lines = masimo_lines();
    let f = masimo::parse_line(lines[0].as_bytes()).unwrap();
    assert_eq!(f.device_id.as_deref(), Some("0000056661"));
    assert_eq!(f.device_alarm_bits, Some(0));
    assert_eq!(f.device_time.unwrap().to_rfc3339(), "2016-02-22T22:47:45+00:00");
    let color = masimo::parse_line(lines[6].as_bytes()).unwrap();
    assert_eq!(color.device_id, None, "SN=---------- is no serial number");
    let trend = masimo::parse_line(lines[10].as_bytes()).unwrap();
    assert_eq!(trend.device_time.unwrap().to_rfc3339(), "2008-09-21T09:56:12+00:00");
}

#[test]
fn the_whole_masimo_fixture_streamed_as_crlf_bytes_gives_one_frame_per_line() {
    let mut wire = BytesMut::new();
    for l in masimo_lines() {
        wire.extend_from_slice(l.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    let mut d = MasimoDecoder::new();
    let mut frames = 0;
    while let Some(item) = d.decode(&mut wire).unwrap() {
        item.unwrap();
        frames += 1;
    }
    assert_eq!(frames, 16);
}

#[test]
fn mindray_vs900_message_gives_spo2_pulse_and_cuff_nibp_with_its_own_observation_time() {
    let o = oru(1);
    assert_eq!(o.header.control_id, "1914");
    assert_eq!(o.frame.device_id.as_deref(), Some("00A0370098007A80"));
    assert_eq!(o.frame.device_time.unwrap().to_rfc3339(), "2019-12-06T11:34:52+00:00");
    assert!(!o.frame.demo);
    assert_eq!(get(&o.frame, Parameter::Spo2), (Some(99.0), Valid));
    assert_eq!(get(&o.frame, Parameter::Pr), (Some(94.0), Valid));
    assert_eq!(get(&o.frame, Parameter::NibpSys), (Some(147.0), Valid));
    assert_eq!(get(&o.frame, Parameter::NibpDia), (Some(90.0), Valid));
    assert_eq!(get(&o.frame, Parameter::NibpMean), (Some(109.0), Valid));
    let sys = o.frame.measurements.iter().find(|m| m.parameter == Parameter::NibpSys).unwrap();
    assert_eq!(sys.observed.unwrap().to_rfc3339(), "2019-12-06T11:10:16+00:00", "OBX-14, not the message time");
    assert_eq!(o.frame.measurements.len(), 6, "temperature is not a Vigil parameter");
}

#[test]
fn mindray_messages_give_their_perfusion_index_first_in_the_frame() {
    // [1] MDC_BLD_PERF_INDEX 0.94 %, sent third, after SpO2 and pulse: the engine must know it before the SpO2.
    let o = oru(1);
    assert_eq!(o.frame.measurements[0].parameter, Parameter::Pi);
    assert_eq!(get(&o.frame, Parameter::Pi), (Some(0.94), Valid));
    let order: Vec<Parameter> = o.frame.measurements.iter().map(|m| m.parameter).collect();
    assert_eq!(order[1..3], [Parameter::Spo2, Parameter::Pr], "the other values keep their order");
    // [2] and [3] are demo mode: their perfusion index is demo like every value.
    assert_eq!(get(&oru(2).frame, Parameter::Pi), (Some(12.0), Demo));
    assert_eq!(get(&oru(3).frame, Parameter::Pi), (Some(3.06), Demo));
}

#[test]
fn every_masimo_sample_line_gives_its_perfusion_index_and_dashes_or_zero_as_no_value() {
    #[rustfmt::skip]
    let expected: [Option<(Option<f64>, ValueStatus)>; 16] = [
        Some((Some(3.6), Valid)), Some((Some(3.95), Valid)), Some((Some(4.25), Valid)), Some((Some(3.19), Valid)),
        Some((Some(2.41), Valid)),
        None, // [B] no sensor: the line has no PI field
        Some((Some(0.55), Questionable)), // Radical-7 colour, low signal IQ
        Some((None, Unavailable)),        // Radical-7 blue, PI=--.--%
        Some((None, Unavailable)), Some((None, Unavailable)), // trend PI=00.00, sensor off
        Some((Some(4.69), Valid)), Some((Some(2.28), Questionable)), Some((Some(3.64), Valid)),
        Some((None, Unavailable)), Some((None, Unavailable)), Some((Some(2.68), Valid)),
    ];
    for (line, want) in masimo_lines().iter().zip(expected) {
        let f = masimo::parse_line(line.as_bytes()).unwrap();
        let pi = f.measurements.iter().find(|m| m.parameter == Parameter::Pi).map(|m| (m.value, m.status));
        assert_eq!(pi, want, "{line}");
    }
}

#[test]
fn mindray_demo_messages_mark_every_value_demo() {
    for n in [2, 3] {
        let o = oru(n);
        assert!(o.frame.demo, "[{n}]");
        assert!(o.frame.measurements.iter().all(|m| m.status == Demo), "[{n}] {:?}", o.frame);
    }
    let o = oru(2);
    assert_eq!(get(&o.frame, Parameter::NibpSys), (Some(166.0), Demo));
    let o = oru(3);
    assert_eq!(o.frame.device_id.as_deref(), Some("00A037009B023649"));
    assert_eq!(get(&o.frame, Parameter::Rr), (Some(12.0), Demo), "pleth respiration 151658");
    assert_eq!(get(&o.frame, Parameter::Spo2), (Some(77.0), Demo));
}

#[test]
fn mindray_sentinels_minus_999_are_no_value() {
    let o = oru(4);
    assert_eq!(o.frame.device_id.as_deref(), Some("00A037009B000000"));
    for p in [Parameter::NibpSys, Parameter::Spo2, Parameter::Hr] {
        assert_eq!(get(&o.frame, p), (None, Unavailable), "{p}");
    }
    assert_eq!(o.frame.measurements.len(), 3, "-99.9 temperature is skipped as not ours");
}

#[test]
fn comen_spot_check_keeps_device_limits_and_uses_msh4_as_device_id() {
    let o = oru(5);
    assert_eq!(o.frame.device_id.as_deref(), Some("KC575235977G"));
    let limits = |p| o.frame.measurements.iter().find(|m| m.parameter == p).unwrap().device_limits;
    assert_eq!(limits(Parameter::NibpSys), Some((90.0, 160.0)));
    assert_eq!(limits(Parameter::NibpMean), Some((60.0, 110.0)));
    assert_eq!(limits(Parameter::NibpDia), Some((50.0, 90.0)));
    assert_eq!(limits(Parameter::Spo2), Some((85.0, 100.0)));
    assert_eq!(get(&o.frame, Parameter::Pr), (Some(60.0), Valid), "149522 MDC_PULS_RATE");
    let sys = o.frame.measurements.iter().find(|m| m.parameter == Parameter::NibpSys).unwrap();
    assert_eq!(sys.observed.unwrap().to_rfc3339(), "2026-07-26T15:13:31+00:00", "+0800 applied");
}

#[test]
fn oem_monitor_minus_100_is_no_value_and_the_mistyped_code_is_read_from_its_sub_id() {
    let o = oru(6);
    assert_eq!(get(&o.frame, Parameter::Spo2), (None, Unavailable));
    assert_eq!(get(&o.frame, Parameter::Pr), (None, Unavailable));
    assert_eq!(get(&o.frame, Parameter::NibpSys), (Some(142.0), Valid), "150031 with sub-id 1.1.9.150301");
    assert_eq!(get(&o.frame, Parameter::NibpMean), (Some(114.0), Valid));
    assert_eq!(get(&o.frame, Parameter::NibpDia), (Some(100.0), Valid));
}

#[test]
fn nist_gateway_message_with_ucum_units_gives_noninvasive_family_nibp_and_cuff_pulse() {
    let o = oru(7);
    assert_eq!(o.frame.device_id.as_deref(), Some("080019FFFE3ED02D"));
    assert_eq!(o.header.control_id, "0104ef190d604db188c3");
    assert_eq!(get(&o.frame, Parameter::NibpSys), (Some(120.0), Valid));
    assert_eq!(get(&o.frame, Parameter::NibpDia), (Some(80.0), Valid));
    assert_eq!(get(&o.frame, Parameter::NibpMean), (Some(93.0), Valid));
    assert_eq!(get(&o.frame, Parameter::Pr), (Some(63.0), Valid), "149546 in {{beat}}/min");
    assert_eq!(o.frame.measurements.len(), 4, "MDS/VMD/CHAN hierarchy rows carry no values");
}

#[test]
fn no_real_sample_has_a_value_the_plausibility_check_rejects() {
    for (title, msg) in hl7_messages() {
        let mut f = hl7::decode_message(&msg).unwrap();
        assert_eq!(plausibility::check(&mut f), vec![], "{title}");
    }
    for line in masimo_lines() {
        let mut f = masimo::parse_line(line.as_bytes()).unwrap();
        assert_eq!(plausibility::check(&mut f), vec![], "{line}");
    }
}

#[test]
fn all_hl7_samples_framed_in_mllp_back_to_back_decode_through_the_stream_decoder() {
    let mut wire = BytesMut::new();
    for (_, msg) in hl7_messages() {
        wire.extend_from_slice(&mllp::frame(&msg));
    }
    let mut d = hl7::Hl7Decoder::new(mllp::DEFAULT_MAX);
    let mut n = 0;
    while let Some(item) = d.decode(&mut wire).unwrap() {
        item.unwrap();
        n += 1;
    }
    assert_eq!(n, 7);
}

#[test]
fn the_resent_mindray_nibp_is_dated_24_minutes_before_its_message_whatever_the_receive_clock() {
    let o = oru(1);
    let sys = o.frame.measurements.iter().find(|m| m.parameter == Parameter::NibpSys).unwrap();
    let received = chrono::Utc::now();
    let measured = vigil::vitals::measured_at(sys.observed, o.frame.device_time, received).unwrap();
    assert_eq!((received - measured).num_seconds(), 24 * 60 + 36);
    let spo2 = o.frame.measurements.iter().find(|m| m.parameter == Parameter::Spo2).unwrap();
    assert_eq!(vigil::vitals::measured_at(spo2.observed, o.frame.device_time, received), Some(received));
}

#[test]
fn the_cuff_pulse_of_the_nist_gateway_is_a_spot_reading_and_the_oximeter_pulse_is_not() {
    let spot: Vec<(Parameter, bool)> = hl7_messages()
        .iter()
        .filter_map(|(_, msg)| hl7::parse_oru(msg).ok())
        .flat_map(|o| o.frame.measurements.into_iter().map(|m| (m.parameter, m.spot)))
        .filter(|(p, _)| *p == Parameter::Pr)
        .collect();
    assert!(spot.contains(&(Parameter::Pr, true)), "{spot:?}");
    assert!(spot.contains(&(Parameter::Pr, false)), "{spot:?}");
}
