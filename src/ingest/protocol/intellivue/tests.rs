//! Golden frames written by hand from the Data Export structures (the lengths counted by hand, the FCS-16
//! worked out separately from RFC 1662's algorithm), and the session state machine.

use super::session::{Link, LinkChange, Session, ANSWER_TIMEOUT_MS, PACE_FRAMES, PACE_WINDOW_MS, RESULT_TIMEOUT_MS};
use super::*;

fn decode_all(bytes: &[u8]) -> Vec<Result<Frame, DecodeError>> {
    crate::ingest::protocol::decode_all(IntelliVueDecoder::new(), bytes)
}

/// A numerics poll result as an MP90 sends it: SpO2 85.0 (exponent −1), pleth pulse 72, NIBP 120/80 (93)
/// with its measurement time, a perfusion index 1.50 (dimensionless, as IntelliVue sends it) and an invalid ECG HR.
#[rustfmt::skip]
const NUMERICS: [u8; 192] = [
    0xE1, 0x00, 0x00, 0x02,                         // session header: data
    0x00, 0x02, 0x00, 0xB8,                         // ROapdus: result, 184 bytes
    0x00, 0x05, 0x00, 0x07, 0x00, 0xB2,             // RORSapdu: invoke 5, confirmed action, 178
    0x00, 0x21, 0x00, 0x00, 0x00, 0x00,             // ActionResult: the MDS
    0xF1, 0x3B, 0x00, 0xA8,                         //   extended poll, 168
    0x00, 0x01, 0x00, 0x00,                         // poll number 1, sequence 0
    0x00, 0x00, 0x10, 0x00,                         // relative time
    0x20, 0x26, 0x12, 0x01, 0x14, 0x30, 0x00, 0x00, // absolute time 2026-12-01 14:30:00.00
    0x00, 0x01, 0x00, 0x06, 0x08, 0x03,             // numerics, metric observed values
    0x00, 0x01, 0x00, 0x8E,                         // poll info list: 1 context, 142 bytes
    0x00, 0x00, 0x00, 0x05, 0x00, 0x88,             //   context 0: 5 objects, 136 bytes
    0x00, 0x50, 0x00, 0x01, 0x00, 0x0E,             //   handle 0x50, 1 attribute, 14 bytes
    0x09, 0x50, 0x00, 0x0A, 0x4B, 0xB8, 0x00, 0x00, 0x02, 0x20, 0xFF, 0x00, 0x03, 0x52, // SpO2 850e-1 %
    0x00, 0x51, 0x00, 0x01, 0x00, 0x0E,
    0x09, 0x50, 0x00, 0x0A, 0x48, 0x22, 0x00, 0x00, 0x0A, 0xA0, 0x00, 0x00, 0x00, 0x48, // pulse 72 /min
    0x00, 0x52, 0x00, 0x02, 0x00, 0x32,             //   NIBP: 2 attributes, 50 bytes
    0x09, 0x4B, 0x00, 0x22, 0x00, 0x03, 0x00, 0x1E, //   compound value: 3 values, 30 bytes
    0x4A, 0x05, 0x00, 0x00, 0x0F, 0x20, 0x00, 0x00, 0x00, 0x78, // sys 120 mmHg
    0x4A, 0x06, 0x00, 0x00, 0x0F, 0x20, 0x00, 0x00, 0x00, 0x50, // dia 80
    0x4A, 0x07, 0x00, 0x00, 0x0F, 0x20, 0x00, 0x00, 0x00, 0x5D, // mean 93
    0x09, 0x90, 0x00, 0x08, 0x20, 0x26, 0x12, 0x01, 0x14, 0x29, 0x30, 0x00, // measured 14:29:30
    0x00, 0x53, 0x00, 0x01, 0x00, 0x0E,
    0x09, 0x50, 0x00, 0x0A, 0x4B, 0xB0, 0x00, 0x00, 0x02, 0x00, 0xFE, 0x00, 0x00, 0x96, // perf 150e-2
    0x00, 0x54, 0x00, 0x01, 0x00, 0x0E,
    0x09, 0x50, 0x00, 0x0A, 0x41, 0x82, 0x80, 0x00, 0x0A, 0xA0, 0x00, 0x7F, 0xFF, 0xFF, // HR NaN, invalid
];
/// FCS-16 of `11 01 00 C0` and [`NUMERICS`].
const NUMERICS_FCS: u16 = 0x179E;
/// The frame header of [`NUMERICS`]: its length, 0x00C0, has a flag byte, sent escaped as `7D E0`.
const NUMERICS_HEADER: [u8; 5] = [0x11, 0x01, 0x00, ESC, 0xE0];

/// An alert poll result: the monitor's own medium-priority "SpO2 LOW", no technical alarms.
#[rustfmt::skip]
const ALERTS: [u8; 124] = [
    0xE1, 0x00, 0x00, 0x02,
    0x00, 0x02, 0x00, 0x74,                         // result, 116
    0x00, 0x06, 0x00, 0x07, 0x00, 0x6E,             // invoke 6, confirmed action, 110
    0x00, 0x21, 0x00, 0x00, 0x00, 0x00,
    0xF1, 0x3B, 0x00, 0x64,                         // extended poll, 100
    0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x1F, 0x40,
    0x20, 0x26, 0x12, 0x01, 0x14, 0x30, 0x01, 0x00,
    0x00, 0x01, 0x00, 0x36, 0x08, 0x01,             // alert monitor, all attributes
    0x00, 0x01, 0x00, 0x4A,                         // 1 context, 74
    0x00, 0x00, 0x00, 0x01, 0x00, 0x44,             //   1 object, 68
    0x00, 0x01, 0x00, 0x02, 0x00, 0x3E,             //   handle 1, 2 attributes, 62
    0x09, 0x02, 0x00, 0x32,                         //   patient alarms, 50
    0x00, 0x01, 0x00, 0x2E,                         //     1 entry, 46
    0x4B, 0xB8, 0x00, 0x3E, 0x02, 0x00, 0x00, 0x08, //     SpO2, NOM_EVT_LO, MED_PRI_P_AL, new
    0x00, 0x06, 0x00, 0x00, 0x00, 0x50,             //     raised by the numeric 0x50
    0x02, 0x04, 0x00, 0x1C,                         //     STR_ALMON_INFO, 28
    0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x10, // instance, text id, priority, flags, 16
    0x00, 0x53, 0x00, 0x70, 0x00, 0x4F, 0x00, 0x32, 0x00, 0x20, 0x00, 0x4C, 0x00, 0x4F, 0x00, 0x57, // "SpO2 LOW"
    0x09, 0x04, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, //   technical alarms: none
];
const ALERTS_FCS: u16 = 0x8E11;
const ALERTS_HEADER: [u8; 4] = [0x11, 0x01, 0x00, 0x7C];

/// A frame laid out by hand: `header` as it goes on the wire (escaped where needed), a payload without bytes
/// that need escaping, the FCS low byte first.
fn framed(header: &[u8], payload: &[u8], fcs: u16) -> Vec<u8> {
    assert!(!payload.iter().any(|b| matches!(*b, BOF | EOF | ESC)));
    let mut out = vec![BOF];
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    out.extend_from_slice(&fcs.to_le_bytes());
    out.push(EOF);
    out
}

#[test]
fn the_fcs_is_rfc_1662s_and_a_frame_with_its_fcs_checks_to_the_good_residue() {
    assert_eq!(fcs16(b"123456789"), 0x906E, "CRC-16/X.25 check value");
    let mut data = b"\x11\x01\x00\x02\xAB\xCD".to_vec();
    let fcs = fcs16(&data);
    data.extend_from_slice(&fcs.to_le_bytes());
    // RFC 1662: the FCS over data and transmitted FCS leaves the good residue 0xF0B8 (before complement).
    assert_eq!(!fcs16(&data), 0xF0B8);
}

#[test]
fn frames_escape_the_flag_and_escape_bytes_and_the_deframer_undoes_it() {
    let golden = [BOF, 0x11, 0x01, 0x00, 0x03, ESC, 0x5D, ESC, 0xE0, ESC, 0xE1, 0x02, 0xE5, EOF];
    assert_eq!(frame(&[0x7D, 0xC0, 0xC1]), golden);
    let mut d = Deframer::new();
    let mut buf = BytesMut::from(&golden[..]);
    assert_eq!(d.next(&mut buf), Some(Ok(vec![0x7D, 0xC0, 0xC1])));
}

#[test]
fn a_hand_written_numerics_result_decodes_to_perfusion_index_spo2_pulse_and_one_nibp_and_keeps_the_rest() {
    let wire = framed(&NUMERICS_HEADER, &NUMERICS, NUMERICS_FCS);
    assert_eq!(frame(&NUMERICS), wire, "our framing matches the hand-made frame");
    let frames = decode_all(&wire);
    assert_eq!(frames.len(), 1, "{frames:?}");
    let f = frames[0].as_ref().unwrap();
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    assert_eq!(f.device_time, Some(t("2026-12-01T14:30:00Z")));
    let got: Vec<(Parameter, Option<f64>, ValueStatus)> =
        f.measurements.iter().map(|m| (m.parameter, m.value, m.status)).collect();
    assert_eq!(
        got,
        [
            (Parameter::Pi, Some(1.5), ValueStatus::Valid),
            (Parameter::Spo2, Some(85.0), ValueStatus::Valid),
            (Parameter::Pr, Some(72.0), ValueStatus::Valid),
            (Parameter::NibpSys, Some(120.0), ValueStatus::Valid),
            (Parameter::NibpDia, Some(80.0), ValueStatus::Valid),
            (Parameter::NibpMean, Some(93.0), ValueStatus::Valid),
            (Parameter::Hr, None, ValueStatus::Unavailable),
        ]
    );
    let sys = &f.measurements[3];
    assert_eq!(sys.observed, Some(t("2026-12-01T14:29:30Z")), "NIBP carries its measurement time");
    assert_eq!(f.device_alarms, None, "a numerics result says nothing about alarms");

    // Every numeric, with its MDC code; the perfusion indicator's is Vigil's perfusion index code.
    let Ok(Pdu::Poll(p)) = parse_pdu(&NUMERICS) else { panic!("a poll result") };
    assert_eq!(p.numerics.len(), 7);
    let perf = p.numerics.iter().find(|n| n.physio_id == 0x4BB0).unwrap();
    assert_eq!((perf.value, perf.mdc()), (Some(1.5), Parameter::Pi.mdc_code()));
    assert_eq!(perf.measurement().map(|m| (m.parameter, m.value)), Some((Parameter::Pi, Some(1.5))));
    assert_eq!(p.numerics[0].mdc(), Parameter::Spo2.mdc_code(), "(2 << 16) + physio id is Vigil's MDC code");
}

/// A numerics poll result with SpO2 85.0 beside two numerics that are none of Vigil's parameters: a temperature
/// (`NOM_TEMP` 0x4B48, MDC 150344) of 36.9 °C (`NOM_DIM_DEGC` 0x17A0) and a questionable ST-II (`NOM_ECG_AMPL_ST_II`
/// 0x0102) of −0.3 mm (`NOM_DIM_MILLI_M` 0x0512), the temperature sent twice.
#[rustfmt::skip]
const OTHER_NUMERICS: [u8; 136] = [
    0xE1, 0x00, 0x00, 0x02,                         // session header: data
    0x00, 0x02, 0x00, 0x80,                         // ROapdus: result, 128 bytes
    0x00, 0x05, 0x00, 0x07, 0x00, 0x7A,             // RORSapdu: invoke 5, confirmed action, 122
    0x00, 0x21, 0x00, 0x00, 0x00, 0x00,             // ActionResult: the MDS
    0xF1, 0x3B, 0x00, 0x70,                         //   extended poll, 112
    0x00, 0x01, 0x00, 0x00,                         // poll number 1, sequence 0
    0x00, 0x00, 0x10, 0x00,                         // relative time
    0x20, 0x26, 0x12, 0x01, 0x14, 0x30, 0x00, 0x00, // absolute time 2026-12-01 14:30:00.00
    0x00, 0x01, 0x00, 0x06, 0x08, 0x03,             // numerics, metric observed values
    0x00, 0x01, 0x00, 0x56,                         // poll info list: 1 context, 86 bytes
    0x00, 0x00, 0x00, 0x04, 0x00, 0x50,             //   context 0: 4 objects, 80 bytes
    0x00, 0x50, 0x00, 0x01, 0x00, 0x0E,             //   handle 0x50, 1 attribute, 14 bytes
    0x09, 0x50, 0x00, 0x0A, 0x4B, 0xB8, 0x00, 0x00, 0x02, 0x20, 0xFF, 0x00, 0x03, 0x52, // SpO2 850e-1 %
    0x00, 0x60, 0x00, 0x01, 0x00, 0x0E,
    0x09, 0x50, 0x00, 0x0A, 0x4B, 0x48, 0x00, 0x00, 0x17, 0xA0, 0xFF, 0x00, 0x01, 0x71, // temp 369e-1 °C
    0x00, 0x61, 0x00, 0x01, 0x00, 0x0E,
    0x09, 0x50, 0x00, 0x0A, 0x01, 0x02, 0x40, 0x00, 0x05, 0x12, 0xFF, 0xFF, 0xFF, 0xFD, // ST-II −3e-1 mm, questionable
    0x00, 0x62, 0x00, 0x01, 0x00, 0x0E,
    0x09, 0x50, 0x00, 0x0A, 0x4B, 0x48, 0x00, 0x00, 0x17, 0xA0, 0xFF, 0x00, 0x01, 0x72, // temp again, 37.0 °C
];

#[test]
fn numerics_that_are_none_of_vigils_parameters_are_kept_as_other_numerics_by_mdc_code_and_never_measurements() {
    let frames = decode_all(&frame(&OTHER_NUMERICS));
    assert_eq!(frames.len(), 1, "{frames:?}");
    let f = frames[0].as_ref().unwrap();
    let got: Vec<_> = f.measurements.iter().map(|m| (m.parameter, m.value)).collect();
    assert_eq!(got, [(Parameter::Spo2, Some(85.0))], "only SpO2 is one of Vigil's parameters");
    let other: Vec<_> =
        f.other.iter().map(|o| (o.mdc_code, o.unit_code, o.value.map(|v| (v * 10.0).round()), o.status)).collect();
    assert_eq!(
        other,
        [
            (150_344, 268_192, Some(369.0), ValueStatus::Valid), // MDC_TEMP in MDC_DIM_DEGC, the first one sent
            (131_330, 263_442, Some(-3.0), ValueStatus::Questionable), // MDC_ECG_AMPL_ST_II in MDC_DIM_MILLI_M
        ]
    );
}

#[test]
fn the_same_nibp_polled_again_is_not_a_new_measurement() {
    let mut wire = framed(&NUMERICS_HEADER, &NUMERICS, NUMERICS_FCS);
    wire.extend(framed(&NUMERICS_HEADER, &NUMERICS, NUMERICS_FCS));
    let frames = decode_all(&wire);
    let second = frames[1].as_ref().unwrap();
    assert!(second.measurements.iter().all(|m| !m.parameter.is_nibp()), "{second:?}");
    assert!(second.measurements.iter().any(|m| m.parameter == Parameter::Spo2));
}

#[test]
fn a_hand_written_alert_result_is_the_monitors_spo2_low_alarm_with_its_text_and_priority() {
    let frames = decode_all(&framed(&ALERTS_HEADER, &ALERTS, ALERTS_FCS));
    let f = frames[0].as_ref().unwrap();
    let alarms = f.device_alarms.as_ref().expect("an alert result is a complete list");
    assert_eq!(alarms.len(), 1);
    let a = &alarms[0];
    assert_eq!(a.text, "SpO2 LOW", "UTF-16BE text from STR_ALMON_INFO");
    assert_eq!(a.priority, DeviceAlarmPriority::Medium);
    assert_eq!(a.parameter, Some(Parameter::Spo2));
    assert!(!a.technical);
    assert_eq!(a.key, "p:4bb8:003e:0050");
    let Ok(Pdu::Poll(p)) = parse_pdu(&ALERTS) else { panic!("a poll result") };
    assert_eq!(p.patient_alarms.unwrap()[0].state_name(), "active");
    assert_eq!(p.technical_alarms, Some(vec![]));
}

#[test]
fn float_type_special_values_are_no_value_and_exponents_scale() {
    for raw in [0x007F_FFFF, 0x0080_0000, 0x007F_FFFE, 0x0080_0002, 0x0080_0001, 0xFF7F_FFFF] {
        assert_eq!(float_value(raw), None, "{raw:08X}");
    }
    assert_eq!(float_value(0xFF00_0352), Some(85.0));
    assert_eq!(float_value(0x0200_0003), Some(300.0));
    assert_eq!(float_value(0x00FF_FFFF), Some(-1.0), "the mantissa is signed");
    assert_eq!(float_value(float_type(37.25, 2)), Some(37.25));
}

#[test]
fn measurement_state_bits_map_to_value_status() {
    assert_eq!(status_of(0), ValueStatus::Valid);
    assert_eq!(status_of(msmt::INVALID), ValueStatus::Unavailable);
    assert_eq!(status_of(msmt::UNAVAILABLE), ValueStatus::Unavailable);
    assert_eq!(status_of(msmt::CALIBRATION_ONGOING), ValueStatus::Unavailable);
    assert_eq!(status_of(msmt::QUESTIONABLE), ValueStatus::Questionable);
    assert_eq!(status_of(msmt::TEST_DATA), ValueStatus::Questionable);
    assert_eq!(status_of(msmt::DEMO_DATA), ValueStatus::Demo);
}

#[test]
fn garbage_bad_checksums_and_truncated_frames_are_counted_and_the_next_good_frame_still_decodes() {
    let good = framed(&NUMERICS_HEADER, &NUMERICS, NUMERICS_FCS);
    let mut bad_fcs = good.clone();
    let n = bad_fcs.len();
    bad_fcs[n - 3] ^= 0x01;
    let mut wire = b"noise".to_vec();
    wire.extend(&bad_fcs);
    wire.extend(&good[..40]); // cut short by the next frame's C0
    wire.extend(&good);
    wire.extend(&good[..10]); // the stream ends inside a frame
    let items = decode_all(&wire);
    let errors: Vec<String> = items.iter().filter_map(|i| i.as_ref().err()).map(ToString::to_string).collect();
    assert_eq!(items.iter().filter(|i| i.is_ok()).count(), 1);
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(errors[0].contains("outside a frame"));
    assert!(errors[1].contains("checksum"));
    assert!(errors[2].contains("cut short"));
    assert!(errors[3].contains("ended inside"));
}

#[test]
fn structures_that_claim_more_bytes_than_they_have_are_errors_not_panics() {
    for cut in 1..NUMERICS.len() {
        let _ = parse_pdu(&NUMERICS[..cut]);
    }
    let mut liar = NUMERICS;
    liar[48] = 0xFF; // the poll info list's length
    assert!(parse_pdu(&liar).is_err());
}

#[test]
fn the_association_request_has_consistent_session_and_presentation_lengths() {
    let aarq = association_request();
    assert_eq!(aarq[0], spdu::CONNECT);
    assert_eq!(usize::from(aarq[1]), aarq.len() - 2, "the session length indicator covers the rest");
    assert_eq!(aarq[16], 0xC1);
    assert_eq!(usize::from(aarq[17]), aarq.len() - 18, "the presentation length covers the rest");
    assert_eq!(parse_pdu(&aarq), Ok(Pdu::AssociationRequest));
    let mds = mds_create_result(1);
    assert_eq!(frame(&mds), {
        let mut v = vec![BOF, 0x11, 0x01, 0x00, 0x1C];
        v.extend_from_slice(&[0xE1, 0x00, 0x00, 0x02, 0x00, 0x02, 0x00, 0x14, 0x00, 0x01, 0x00, 0x01, 0x00, 0x0E]);
        v.extend_from_slice(&[0x00, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0D, 0x06, 0x00, 0x00]);
        v.extend_from_slice(&[0xC3, 0x09, EOF]);
        v
    });
}

fn sent(s: &mut Session, now: u64) -> Vec<Pdu> {
    s.poll(now);
    let mut out = Vec::new();
    while let Some(bytes) = s.take_outgoing(now) {
        let payload = if bytes[0] == BOF {
            Deframer::new().next(&mut BytesMut::from(&bytes[..])).unwrap().unwrap()
        } else {
            bytes
        };
        out.push(parse_pdu(&payload).unwrap());
    }
    out
}

#[test]
fn the_session_associates_answers_the_mds_create_polls_and_reassociates_when_results_stop() {
    let mut s = Session::new(Link::Lan);
    assert_eq!(sent(&mut s, 0), [Pdu::AssociationRequest]);
    s.on_pdu(&Pdu::AssociationAccepted);
    assert!(sent(&mut s, 100).is_empty());
    s.on_pdu(&Pdu::MdsCreate { invoke_id: 9, clock: None });
    let out = sent(&mut s, 200);
    assert_eq!(out.len(), 2, "the MDS Create result and the first numerics poll: {out:?}");
    assert_eq!(s.take_link_change(), Some(LinkChange::Up));
    assert_eq!(sent(&mut s, 700).len(), 1, "the alert poll half a period later");
    s.on_pdu(&Pdu::Poll(PollResult::default()));
    assert_eq!(sent(&mut s, 1200).len(), 1, "the next numerics poll a second later");
    // The monitor restarts: no more results.
    let quiet = 1200 + RESULT_TIMEOUT_MS;
    let out = sent(&mut s, quiet);
    assert_eq!(out, [Pdu::AssociationRequest], "asks again once results stop");
    assert!(matches!(s.take_link_change(), Some(LinkChange::Down(r)) if r.contains("no poll result")));
    assert!(!s.is_associated());
    // Not answered either: asked again, and the bed was told only once.
    assert_eq!(sent(&mut s, quiet + ANSWER_TIMEOUT_MS), [Pdu::AssociationRequest]);
    assert_eq!(s.take_link_change(), None);
    s.on_pdu(&Pdu::AssociationAccepted);
    s.on_pdu(&Pdu::MdsCreate { invoke_id: 1, clock: None });
    sent(&mut s, quiet + ANSWER_TIMEOUT_MS + 10);
    assert_eq!(s.take_link_change(), Some(LinkChange::Up));
    assert_eq!(s.associations(), 2);
    assert!(matches!(parse_pdu(&s.release().unwrap()), Ok(Pdu::ReleaseRequest)));
}

#[test]
fn a_release_from_the_monitor_is_answered_and_an_abort_is_reported() {
    let mut s = Session::new(Link::Lan);
    sent(&mut s, 0);
    s.on_pdu(&Pdu::AssociationAccepted);
    s.on_pdu(&Pdu::MdsCreate { invoke_id: 1, clock: None });
    sent(&mut s, 10);
    s.take_link_change();
    s.on_pdu(&Pdu::ReleaseRequest);
    assert_eq!(sent(&mut s, 20), [Pdu::ReleaseResponse]);
    assert!(matches!(s.take_link_change(), Some(LinkChange::Down(r)) if r.contains("released")));
    assert_eq!(sent(&mut s, 20 + super::session::RETRY_MS), [Pdu::AssociationRequest]);
}

#[test]
fn the_serial_link_sends_at_most_four_frames_per_128_ms() {
    let mut s = Session::new(Link::Serial);
    sent(&mut s, 0);
    s.on_pdu(&Pdu::AssociationAccepted);
    s.on_pdu(&Pdu::MdsCreate { invoke_id: 1, clock: None });
    // Pile up more than the window allows: the MDS result, then numerics and alert polls for a few seconds.
    for t in (10..4000).step_by(500) {
        s.on_pdu(&Pdu::Poll(PollResult::default()));
        s.poll(t);
    }
    let mut times = Vec::new();
    let mut now = 4000;
    while now < 5000 {
        while let Some(bytes) = s.take_outgoing(now) {
            assert_eq!(bytes[0], BOF, "framed on the serial link");
            times.push(now);
        }
        now = s.next_due(now).max(now + 1);
    }
    assert!(times.len() > PACE_FRAMES, "{times:?}");
    for w in times.windows(PACE_FRAMES + 1) {
        assert!(w[PACE_FRAMES] - w[0] >= PACE_WINDOW_MS, "{times:?}");
    }
}

#[test]
fn nom_puls_rate_is_a_pulse_and_alert_text_keeps_what_follows_a_nul() {
    assert_eq!(parameter_of(physio::PULS_RATE), Some(Parameter::Pr));
    let text: Vec<u8> = [0x0053u16, 0x0070, 0x004F, 0x0032, 0x0000, 0x0020, 0x004C, 0x004F, 0x0057, 0x0000]
        .iter()
        .flat_map(|u| u.to_be_bytes())
        .collect();
    assert_eq!(utf16_text(&text), "SpO2 LOW", "OpenICE drops NULs and control characters, it does not stop");
}

/// A connect indication as OpenICE lays it out: nomenclature `00 00 01 00`, ROIV event report
/// `NOM_NOTI_CONN_INDIC`, attributes: system type (skipped), protocol support (ACSE/UDP 24105, Data Export/UDP
/// 24105), network address (MAC, 10.1.2.50, 255.255.255.0).
#[rustfmt::skip]
pub(super) const CONNECT_INDICATION: [u8; 82] = [
    0x00, 0x00, 0x01, 0x00,                         // nomenclature 1.0
    0x00, 0x01, 0x00, 0x4A,                         // invoke, 74
    0x00, 0x00, 0x00, 0x00, 0x00, 0x44,             // invoke id 0, event report, 68
    0x00, 0x21, 0x00, 0x00, 0x00, 0x00,             //   the MDS
    0x00, 0x00, 0x00, 0x00, 0x0D, 0x17, 0x00, 0x36, //   event time, NOM_NOTI_CONN_INDIC, 54
    0x00, 0x03, 0x00, 0x32,                         //   3 attributes, 50
    0x09, 0x86, 0x00, 0x04, 0x00, 0x01, 0x00, 0x21, //   system type
    0xF1, 0x01, 0x00, 0x14, 0x00, 0x02, 0x00, 0x10, //   protocol support: 2 entries, 16
    0x00, 0x01, 0x00, 0x01, 0x5E, 0x29, 0x00, 0x00, //     ACSE, UDP, 24105
    0x00, 0x05, 0x00, 0x01, 0x5E, 0x29, 0x00, 0x00, //     Data Export, UDP, 24105
    0xF1, 0x00, 0x00, 0x0E,                         //   network address, 14
    0x00, 0x09, 0xFB, 0x01, 0x02, 0x03, 0x0A, 0x01, 0x02, 0x32, 0xFF, 0xFF, 0xFF, 0x00,
];

#[test]
fn a_connect_indication_names_the_monitors_address_and_its_data_export_port() {
    let ci = parse_connect_indication(&CONNECT_INDICATION).unwrap();
    assert_eq!(ci.ip, Some(std::net::Ipv4Addr::new(10, 1, 2, 50)));
    assert_eq!(ci.data_port, Some(24105));
    assert!(parse_connect_indication(&CONNECT_INDICATION[..40]).is_err(), "cut short is an error, not a panic");
    assert!(parse_connect_indication(&association_request()).is_err());
}

#[test]
fn a_perfusion_indicator_of_nan_or_zero_is_no_value() {
    let perf = |value| Numeric {
        handle: 0x53,
        physio_id: physio::PULS_OXIM_PERF_REL,
        state: 0,
        unit: unit::DIMLESS,
        value,
        time: None,
        relative_time: None,
    };
    for value in [None, Some(0.0)] {
        let m = perf(value).measurement().unwrap();
        assert_eq!((m.parameter, m.value, m.status), (Parameter::Pi, None, ValueStatus::Unavailable), "{value:?}");
    }
    assert_eq!(perf(Some(0.4)).measurement().unwrap().value, Some(0.4));
}
