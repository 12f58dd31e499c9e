//! HL7 v2.6 ORU^R01 (IHE PCD-01) in MLLP framing, shaped like the Mindray VS-900 message in
//! `tests/fixtures/hl7/pcd01_samples.txt` (sample 1): EUI-64 in MSH-3, MDC codes and MDC unit codes, NIBP under the cuff
//! family (150301/02/03) with the measurement time in OBX-14, `DEMO` in OBX-8 in demo mode, and -999 for an
//! invalid value as the Mindray XH80X "golden" message (sample 4) does.

use chrono::{DateTime, Utc};

use crate::sim::Sample;

/// MLLP start block.
pub const MLLP_START: u8 = 0x0B;
/// MLLP end block (followed by [`MLLP_CR`]).
pub const MLLP_END: u8 = 0x1C;
/// MLLP trailing carriage return.
pub const MLLP_CR: u8 = 0x0D;
/// The number a Mindray monitor sends for an invalid value.
pub const INVALID: i32 = -999;
/// Our MSH-3.1 / OBR application name.
pub const APPLICATION: &str = "VIGIL_SIM";

/// An NIBP result to report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NibpObservation {
    /// When the cuff measured (OBX-14); earlier than the message time.
    pub time: DateTime<Utc>,
    /// (systolic, diastolic, mean, pulse); `None` = the cycle failed, sent as -999.
    pub values: Option<(u16, u16, u16, u16)>,
}

/// One ORU^R01 message's content.
#[derive(Debug, Clone, PartialEq)]
pub struct OruMessage {
    /// EUI-64 as 16 upper-case hex digits (MSH-3.2).
    pub device_id: String,
    /// MSH-10 message control id.
    pub control_id: u64,
    /// MSH-7 and the continuous observations' OBX-14.
    pub time: DateTime<Utc>,
    /// PID-3 patient identifier.
    pub patient_id: String,
    /// PV1-3 bed.
    pub bed: String,
    /// SpO2 %; `None` sends -999.
    pub spo2: Option<u8>,
    /// Pulse rate /min; `None` sends -999.
    pub pulse: Option<u16>,
    /// Perfusion index %; `None` omits the OBX.
    pub pi: Option<f64>,
    /// Respiration /min; `None` omits the OBX.
    pub resp: Option<u8>,
    /// NIBP result when a cycle completed this second.
    pub nibp: Option<NibpObservation>,
    /// Demo mode: OBX-8 = `DEMO` on every observation.
    pub demo: bool,
}

impl OruMessage {
    /// The message a monitor sends for one second of the simulation (bed numbers from 1).
    pub fn from_sample(s: &Sample, device_id: &str, control_id: u64, bed: usize) -> OruMessage {
        OruMessage {
            device_id: device_id.to_owned(),
            control_id,
            time: s.device_time,
            patient_id: format!("SIM-{bed}"),
            bed: bed.to_string(),
            spo2: s.shown.spo2,
            pulse: s.shown.pulse,
            pi: s.shown.pi,
            resp: s.shown.resp,
            nibp: s.nibp.map(|n| NibpObservation {
                time: n.started,
                values: n.values.map(|v| (v.systolic, v.diastolic, v.mean, v.pulse)),
            }),
            demo: s.demo,
        }
    }
}

fn ts(t: &DateTime<Utc>) -> String {
    t.format("%Y%m%d%H%M%S+0000").to_string()
}

/// Encodes the message: segments each terminated by CR, as on the wire inside MLLP.
pub fn encode(msg: &OruMessage) -> String {
    let eui = &msg.device_id;
    let now = ts(&msg.time);
    let demo = if msg.demo { "DEMO" } else { "" };
    let id = msg.control_id;
    let mut segs = vec![
        format!(
            "MSH|^~\\&|{APPLICATION}^{eui}^EUI-64||||{now}||ORU^R01^ORU_R01|{id}|P|2.6|||AL|NE||UNICODE UTF-8|||\
             IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
        ),
        format!("PID|||{}^^^Hospital^PI||^^^^^^L", msg.patient_id),
        format!("PV1||I|^^{}", msg.bed),
        format!(
            "OBR|1|{id}^{APPLICATION}^{eui}^EUI-64|{id}^{APPLICATION}^{eui}^EUI-64|182777000^monitoring of patient^SCT|||\
             {now}"
        ),
    ];
    let mut n = 0;
    let mut obx = |code: &str, sub: &str, value: String, unit: &str, time: &str, tail: &str| {
        n += 1;
        format!("OBX|{n}|NM|{code}|{sub}|{value}|{unit}||{demo}|||R|||{time}{tail}")
    };
    let or_invalid = |v: Option<u16>| v.map_or(INVALID.to_string(), |v| v.to_string());
    const PERCENT: &str = "262688^MDC_DIM_PERCENT^MDC";
    const BPM: &str = "264864^MDC_DIM_BEAT_PER_MIN^MDC";
    const MMHG: &str = "266016^MDC_DIM_MMHG^MDC";
    let equipment = format!("||||{eui}^^{eui}^EUI-64");
    segs.push(obx(
        "150456^MDC_PULS_OXIM_SAT_O2^MDC",
        "1.3.1.150456",
        or_invalid(msg.spo2.map(u16::from)),
        PERCENT,
        &now,
        &equipment,
    ));
    segs.push(obx("149530^MDC_PULS_OXIM_PULS_RATE^MDC", "1.3.1.149530", or_invalid(msg.pulse), BPM, &now, ""));
    if let Some(pi) = msg.pi {
        segs.push(obx("150488^MDC_BLD_PERF_INDEX^MDC", "1.3.1.150488", format!("{pi:.2}"), PERCENT, &now, ""));
    }
    if let Some(resp) = msg.resp {
        segs.push(obx(
            "151562^MDC_RESP_RATE^MDC",
            "1.4.1.151562",
            resp.to_string(),
            "264928^MDC_DIM_RESP_PER_MIN^MDC",
            &now,
            "",
        ));
    }
    if let Some(nibp) = &msg.nibp {
        let t = ts(&nibp.time);
        let v = nibp.values;
        let aperiodic = "|||^APERIODIC";
        let rows = [
            ("150301^MDC_PRESS_CUFF_SYS^MDC", "1.1.9.150301", v.map(|v| v.0), MMHG),
            ("150303^MDC_PRESS_CUFF_MEAN^MDC", "1.1.9.150303", v.map(|v| v.2), MMHG),
            ("150302^MDC_PRESS_CUFF_DIA^MDC", "1.1.9.150302", v.map(|v| v.1), MMHG),
            ("149546^MDC_PULS_RATE_NON_INV^MDC", "1.1.9.149546", v.map(|v| v.3), BPM),
        ];
        for (code, sub, value, unit) in rows {
            segs.push(obx(code, sub, or_invalid(value), unit, &t, aperiodic));
        }
    }
    let mut out = segs.join("\r");
    out.push('\r');
    out
}

/// Wraps a payload in MLLP framing: 0x0B payload 0x1C 0x0D.
pub fn mllp_frame(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 3);
    v.push(MLLP_START);
    v.extend_from_slice(payload);
    v.extend_from_slice(&[MLLP_END, MLLP_CR]);
    v
}

/// Encodes and frames in one go.
pub fn encode_framed(msg: &OruMessage) -> Vec<u8> {
    mllp_frame(encode(msg).as_bytes())
}

/// The acknowledgment code and MSH-10 a receiver's ACK refers to (`MSA|AA|<id>`), if the bytes hold one.
pub fn parse_ack(message: &[u8]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(message);
    let msa = text.split(['\r', '\n']).find(|s| s.starts_with("MSA|"))?;
    let mut fields = msa.split('|').skip(1);
    let code = fields.next()?.to_owned();
    let id = fields.next().unwrap_or("").to_owned();
    Some((code, id))
}

/// Derives a stable EUI-64 from a seed: locally administered (bit 1 of the first octet set), so it can never
/// collide with a real vendor's OUI.
pub fn eui64_from_seed(seed: u64) -> String {
    let mut x = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let x = (x & 0x00FF_FFFF_FFFF_FFFF) | 0x0200_0000_0000_0000;
    format!("{x:016X}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn msg() -> OruMessage {
        OruMessage {
            device_id: "02A0370098007A80".into(),
            control_id: 1914,
            time: Utc.with_ymd_and_hms(2019, 12, 6, 11, 34, 52).unwrap(),
            patient_id: "SIM-1".into(),
            bed: "1".into(),
            spo2: Some(99),
            pulse: Some(94),
            pi: Some(0.94),
            resp: None,
            nibp: Some(NibpObservation {
                time: Utc.with_ymd_and_hms(2019, 12, 6, 11, 10, 16).unwrap(),
                values: Some((147, 90, 109, 88)),
            }),
            demo: false,
        }
    }

    #[test]
    fn message_matches_the_mindray_sample_segment_shapes() {
        let text = encode(&msg());
        let segs: Vec<&str> = text.trim_end_matches('\r').split('\r').collect();
        assert_eq!(
            segs[0],
            "MSH|^~\\&|VIGIL_SIM^02A0370098007A80^EUI-64||||20191206113452+0000||ORU^R01^ORU_R01|1914|P|2.6|||AL|NE||\
             UNICODE UTF-8|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
        );
        assert_eq!(
            segs[4],
            "OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3.1.150456|99|262688^MDC_DIM_PERCENT^MDC|||||R|||\
             20191206113452+0000||||02A0370098007A80^^02A0370098007A80^EUI-64"
        );
        assert_eq!(
            segs[7],
            "OBX|4|NM|150301^MDC_PRESS_CUFF_SYS^MDC|1.1.9.150301|147|266016^MDC_DIM_MMHG^MDC|||||R|||\
             20191206111016+0000|||^APERIODIC"
        );
        assert!(segs[9].contains("150302^MDC_PRESS_CUFF_DIA^MDC|1.1.9.150302|90|"));
    }

    #[test]
    fn demo_mode_puts_demo_in_obx_8() {
        let text = encode(&OruMessage { demo: true, ..msg() });
        for obx in text.split('\r').filter(|s| s.starts_with("OBX")) {
            assert_eq!(obx.split('|').nth(8), Some("DEMO"), "{obx}");
        }
    }

    #[test]
    fn missing_values_and_failed_cuff_cycles_are_sent_as_minus_999() {
        let m = OruMessage {
            spo2: None,
            pulse: None,
            nibp: Some(NibpObservation { time: msg().time, values: None }),
            ..msg()
        };
        let text = encode(&m);
        let values: Vec<&str> =
            text.split('\r').filter(|s| s.starts_with("OBX")).map(|s| s.split('|').nth(5).unwrap()).collect();
        assert_eq!(values, ["-999", "-999", "0.94", "-999", "-999", "-999", "-999"]);
    }

    #[test]
    fn mllp_framing_wraps_the_payload() {
        assert_eq!(mllp_frame(b"MSH|x\r"), b"\x0bMSH|x\r\x1c\x0d".to_vec());
    }

    #[test]
    fn ack_parsing_finds_the_control_id() {
        assert_eq!(
            parse_ack(b"MSH|^~\\&|VIGIL||||20260101||ACK|9|P|2.6\rMSA|AA|1914\r"),
            Some(("AA".into(), "1914".into()))
        );
        assert_eq!(parse_ack(b"garbage"), None);
    }

    #[test]
    fn derived_device_ids_are_stable_locally_administered_eui64s() {
        let a = eui64_from_seed(7);
        assert_eq!(a, eui64_from_seed(7));
        assert_ne!(a, eui64_from_seed(8));
        assert_eq!(a.len(), 16);
        assert_eq!(u8::from_str_radix(&a[..2], 16).unwrap() & 0x02, 0x02);
    }
}
