//! HL7 v2 ORU^R01 (IHE PCD-01) from multiparameter monitors and gateways, and the ACK Vigil answers with.
//!
//! What real messages do (docs/sources.md, "Devices and data"; samples in `tests/fixtures/hl7/pcd01_samples.txt`): NIBP
//! under two MDC code families; units as MDC codes or UCUM; OBX-8 `DEMO` in demo mode; invalid values sent as
//! numbers (-999, -99.9, -100); device alarm limits in OBX-7; a per-observation time in OBX-14; an empty OBX-1;
//! a mistyped code whose OBX-4 sub-id is right. Codes and units: docs/sources.md, "Codes and units".
//!
//! The parser works on bytes and converts only the fields it uses, so a patient name in another character set
//! cannot make the vital signs unreadable.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use chrono::{FixedOffset, NaiveDate, TimeZone, Utc};
use tokio_util::codec::Decoder;

use super::mllp::MllpCodec;
use super::{DecodeError, Frame, Measurement};
use crate::vitals::{Parameter, Timestamp, ValueStatus};

/// Why a message could not be taken, and so which ACK it gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hl7Error {
    /// No usable MSH segment: not HL7 at all, or its separators are broken. Answered with AE.
    #[error("not an HL7 v2 message: {0}")]
    NotHl7(String),
    /// A well-formed message Vigil does not take (not ORU^R01). Answered with AR.
    #[error("unsupported message type '{0}' (Vigil takes ORU^R01)")]
    Unsupported(String),
    /// An ORU^R01 whose content is broken. Answered with AE.
    #[error("malformed ORU^R01: {0}")]
    Malformed(String),
}

impl Hl7Error {
    /// The acknowledgment code this error earns (HL7 table 0008).
    pub fn ack_code(&self) -> AckCode {
        match self {
            Hl7Error::Unsupported(_) => AckCode::Reject,
            Hl7Error::NotHl7(_) | Hl7Error::Malformed(_) => AckCode::Error,
        }
    }

    /// HL7 table 0357 error code for the ERR segment.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Hl7Error::Unsupported(_) => ErrorCode::UnsupportedMessageType,
            Hl7Error::NotHl7(_) => ErrorCode::SegmentSequence,
            Hl7Error::Malformed(_) => ErrorCode::DataType,
        }
    }
}

impl From<Hl7Error> for DecodeError {
    fn from(e: Hl7Error) -> Self {
        DecodeError::Malformed(e.to_string())
    }
}

/// The separators a message declares in MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Separators {
    /// Field separator (MSH-1), usually `|`.
    pub field: u8,
    /// Component separator, usually `^`.
    pub component: u8,
    /// Repetition separator, usually `~`.
    pub repetition: u8,
    /// Escape character, usually `\`.
    pub escape: u8,
    /// Subcomponent separator, usually `&`.
    pub subcomponent: u8,
}

impl Default for Separators {
    fn default() -> Self {
        Separators { field: b'|', component: b'^', repetition: b'~', escape: b'\\', subcomponent: b'&' }
    }
}

impl Separators {
    /// MSH-2 as written.
    fn encoding_chars(&self) -> [u8; 4] {
        [self.component, self.repetition, self.escape, self.subcomponent]
    }

    /// Escapes text for a field (HL7 v2 escape sequences), and flattens line breaks that would end a segment.
    pub fn escape_text(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        self.push_escaped(&mut out, text);
        out
    }

    fn is_special(&self, b: u8) -> bool {
        b == self.escape
            || b == self.field
            || b == self.component
            || b == self.repetition
            || b == self.subcomponent
            || b == b'\r'
            || b == b'\n'
    }

    /// [`Separators::escape_text`] into `out`; text without special characters (the usual case) is copied as is.
    fn push_escaped(&self, out: &mut String, text: &str) {
        if !text.bytes().any(|b| self.is_special(b)) {
            out.push_str(text);
            return;
        }
        for c in text.chars() {
            let seq = match u8::try_from(c).ok() {
                Some(b) if b == self.escape => 'E',
                Some(b) if b == self.field => 'F',
                Some(b) if b == self.component => 'S',
                Some(b) if b == self.repetition => 'R',
                Some(b) if b == self.subcomponent => 'T',
                Some(b'\r' | b'\n') => {
                    out.push(' ');
                    continue;
                }
                _ => {
                    out.push(c);
                    continue;
                }
            };
            // The escape sequences use the declared escape character.
            out.push(char::from(self.escape));
            out.push(seq);
            out.push(char::from(self.escape));
        }
    }

    /// Copies a field verbatim, keeping its components (MSH-3 `APP^EUI^EUI-64`), without line breaks or field
    /// separators that would break the segment.
    fn push_raw(&self, out: &mut String, text: &str) {
        out.extend(text.chars().filter(|c| *c != '\r' && *c != '\n' && u8::try_from(*c).ok() != Some(self.field)));
    }
}

/// The MSH fields Vigil uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeader {
    /// Declared separators.
    pub separators: Separators,
    /// MSH-3 as sent (for the ACK's receiving application).
    pub sending_application: String,
    /// MSH-4 as sent (for the ACK's receiving facility).
    pub sending_facility: String,
    /// MSH-9 components 1 and 2, e.g. `ORU^R01`.
    pub message_type: String,
    /// MSH-10, echoed in MSA-2.
    pub control_id: String,
    /// MSH-12.
    pub version: String,
    /// The device id: MSH-3's EUI-64 (upper case), else MSH-3's first non-empty component, else MSH-4's first
    /// component (the Comen NC5 sends its serial number there and leaves MSH-3 empty: sample \[5\]).
    pub device_id: Option<String>,
    /// MSH-7.
    pub time: Option<Timestamp>,
}

/// A decoded ORU^R01: its header and the frame of values.
#[derive(Debug, Clone, PartialEq)]
pub struct Oru {
    /// The MSH fields.
    pub header: MessageHeader,
    /// The values (`frame.device_id` is the header's device id).
    pub frame: Frame,
}

/// Fields of one segment as byte slices; index = HL7 field number (MSH included: `MSH-1` is the separator).
struct Fields<'a> {
    items: [&'a [u8]; MAX_FIELDS],
    len: usize,
}

/// OBX-14 is the last field Vigil reads (MSH-12 in the header): later fields are not split out, which saves
/// scanning the long equipment-id tails real monitors append.
const MAX_FIELDS: usize = 15;

impl<'a> Fields<'a> {
    /// One pass with a plain loop: fields are a few bytes long, too short for memchr to pay off.
    fn split(segment: &'a [u8], sep: u8, is_msh: bool) -> Fields<'a> {
        let mut items: [&'a [u8]; MAX_FIELDS] = [&[]; MAX_FIELDS];
        let mut len = 0;
        let mut begin = 0;
        for (i, &b) in segment.iter().enumerate() {
            if b != sep {
                continue;
            }
            items[len] = &segment[begin..i];
            len += 1;
            begin = i + 1;
            if is_msh && len == 1 {
                // `MSH|^~\&|…`: the first separator is MSH-1 itself, so the next part is MSH-2.
                items[1] = &segment[i..i + 1];
                len = 2;
            }
            if len == MAX_FIELDS {
                return Fields { items, len };
            }
        }
        items[len] = &segment[begin..];
        len += 1;
        Fields { items, len }
    }

    fn get(&self, n: usize) -> &'a [u8] {
        if n < self.len {
            self.items[n]
        } else {
            &[]
        }
    }
}

/// Component `n` (1-based) of the first repetition of a field. One pass that stops as soon as the component
/// ends: this runs about ten times per observation, so it is on the hot path.
fn component<'a>(field: &'a [u8], sep: &Separators, n: usize) -> &'a [u8] {
    let (mut index, mut start) = (1, 0);
    for (i, &b) in field.iter().enumerate() {
        if b == sep.repetition || b == sep.component {
            if index == n {
                return &field[start..i];
            }
            if b == sep.repetition {
                return &[];
            }
            index += 1;
            start = i + 1;
        }
    }
    if index == n {
        &field[start..]
    } else {
        &[]
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

fn trimmed(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Splits a message into segments: CR is the HL7 separator; LF and CR LF are tolerated (captures, files).
fn segments(msg: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let ends = memchr::memchr2_iter(b'\r', b'\n', msg).chain(std::iter::once(msg.len()));
    ends.map(move |end| {
        let seg = &msg[start..end];
        start = end + 1;
        seg
    })
    .filter(|s| !s.iter().all(u8::is_ascii_whitespace))
}

/// Reads the MSH segment: separators, ids and type. Used on its own to address an ACK when the rest of the
/// message is broken.
pub fn parse_header(msg: &[u8]) -> Result<MessageHeader, Hl7Error> {
    let msh = segments(msg).next().ok_or_else(|| Hl7Error::NotHl7("empty message".into()))?;
    let msh = msh.trim_ascii_start();
    if msh.len() < 8 || &msh[..3] != b"MSH" {
        return Err(Hl7Error::NotHl7("the first segment is not MSH".into()));
    }
    let field = msh[3];
    let enc = msh[4..].split(|b| *b == field).next().unwrap_or_default();
    let d = Separators::default();
    let sep = Separators {
        field,
        component: enc.first().copied().unwrap_or(d.component),
        repetition: enc.get(1).copied().unwrap_or(d.repetition),
        escape: enc.get(2).copied().unwrap_or(d.escape),
        subcomponent: enc.get(3).copied().unwrap_or(d.subcomponent),
    };
    let all = [sep.field, sep.component, sep.repetition, sep.escape, sep.subcomponent];
    let distinct = all.iter().enumerate().all(|(i, a)| all[i + 1..].iter().all(|b| a != b));
    if enc.is_empty()
        || !distinct
        || all.iter().any(|b| !b.is_ascii() || b.is_ascii_alphanumeric() || b.is_ascii_whitespace())
    {
        return Err(Hl7Error::NotHl7("MSH-1/MSH-2 do not declare usable separators".into()));
    }
    let f = Fields::split(msh, field, true);
    let msh3 = f.get(3);
    let kind = component(msh3, &sep, 3);
    let id_part = component(msh3, &sep, 2);
    let device_id = if kind.eq_ignore_ascii_case(b"EUI-64") && !trimmed(id_part).is_empty() {
        Some(text(id_part).to_ascii_uppercase())
    } else {
        [component(msh3, &sep, 2), component(msh3, &sep, 1), component(f.get(4), &sep, 1)]
            .into_iter()
            .map(trimmed)
            .find(|c| !c.is_empty())
            .map(text)
    };
    let msg_type = f.get(9);
    let (t1, t2) = (text(component(msg_type, &sep, 1)), text(component(msg_type, &sep, 2)));
    Ok(MessageHeader {
        separators: sep,
        sending_application: text(msh3),
        sending_facility: text(f.get(4)),
        message_type: if t2.is_empty() { t1 } else { format!("{t1}^{t2}") },
        control_id: text(f.get(10)),
        version: text(component(f.get(12), &sep, 1)),
        device_id,
        time: parse_dtm(component(f.get(7), &sep, 1)),
    })
}

/// Parses an ORU^R01 into a [`Frame`], the perfusion index first ([`Frame::perfusion_first`]). Observations
/// Vigil has no parameter for (temperature, device hierarchy rows) are skipped; a value that is not a number, or in a unit that is wrong for its
/// parameter, becomes "no value" rather than a guess.
pub fn parse_oru(msg: &[u8]) -> Result<Oru, Hl7Error> {
    let header = parse_header(msg)?;
    let ty = header.message_type.as_str();
    if !(ty == "ORU^R01" || ty == "ORU") {
        return Err(Hl7Error::Unsupported(if ty.is_empty() { "(empty MSH-9)".into() } else { ty.into() }));
    }
    let sep = header.separators;
    let mut frame = Frame { device_id: header.device_id.clone(), device_time: header.time, ..Frame::default() };
    for seg in segments(msg).skip(1) {
        let seg = seg.trim_ascii_start();
        if seg.len() < 3 || !seg[..3].iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
            return Err(Hl7Error::Malformed("a segment without a segment id".into()));
        }
        if seg.len() > 3 && seg[3] != sep.field {
            return Err(Hl7Error::Malformed(format!(
                "segment '{}' is not followed by the field separator",
                text(&seg[..3])
            )));
        }
        if &seg[..3] != b"OBX" {
            continue; // PID, PV1, OBR and others carry nothing Vigil alarms on.
        }
        let f = Fields::split(seg, sep.field, false);
        if let Some(m) = observation(&f, &sep, &mut frame.demo) {
            frame.measurements.push(m);
        }
    }
    frame.perfusion_first();
    Ok(Oru { header, frame })
}

/// [`parse_oru`] for callers that want only the frame.
pub fn decode_message(msg: &[u8]) -> Result<Frame, DecodeError> {
    parse_oru(msg).map(|o| o.frame).map_err(DecodeError::from)
}

/// MDC numeric code → parameter (CLINICAL.md "Codes and units").
pub fn mdc_parameter(code: u32) -> Option<Parameter> {
    Some(match code {
        150456 => Parameter::Spo2,
        149530 | 149546 | 149522 => Parameter::Pr,
        147842 => Parameter::Hr,
        150021 | 150301 => Parameter::NibpSys,
        150022 | 150302 => Parameter::NibpDia,
        150023 | 150303 => Parameter::NibpMean,
        151562 | 151578 | 151658 => Parameter::Rr,
        // MDC_PULS_OXIM_PERF_REL, and MDC_BLD_PERF_INDEX as Mindray sends it (sample [1]).
        150448 | 150488 => Parameter::Pi,
        _ => return None,
    })
}

/// Values monitors send instead of "no value": -999, -99.9, -100 (Mindray and OEM samples), and the IEEE
/// 11073 FLOAT specials NaN 8388607, NRes -8388608, ±INF ±8388606, reserved -8388607.
pub fn is_sentinel(v: f64) -> bool {
    const SENTINELS: [f64; 8] = [-999.0, -99.9, -100.0, 8388607.0, -8388608.0, 8388606.0, -8388606.0, -8388607.0];
    SENTINELS.contains(&v)
}

/// Pulse rates taken by the NIBP cuff (`MDC_PULS_RATE_NON_INV`) or a spot check: spot readings, not the
/// continuous pulse rate.
const SPOT_PULSE: [u32; 2] = [149546, 149522];

/// The parameter of an OBX, and whether it is a spot measurement of a continuous parameter.
fn parameter_of(f: &Fields<'_>, sep: &Separators) -> Option<(Parameter, bool)> {
    let code_field = f.get(3);
    let code = trimmed(component(code_field, sep, 1));
    let system = trimmed(component(code_field, sep, 3));
    if system.eq_ignore_ascii_case(b"LN") {
        let code = std::str::from_utf8(code).ok()?;
        return Parameter::ALL.into_iter().find(|p| p.loinc() == Some(code)).map(|p| (p, false));
    }
    let known = |c: u32| mdc_parameter(c).map(|p| (p, SPOT_PULSE.contains(&c)));
    // A mistyped code (150031 for 150301, sample [6]) is tolerated when the sub-id's last part is a known code.
    parse_u32(code).and_then(known).or_else(|| {
        let sub = trimmed(f.get(4));
        let last = sub.rsplit(|b| *b == b'.').next().unwrap_or_default();
        parse_u32(last).and_then(known)
    })
}

fn parse_u32(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
}

/// An HL7 NM value: optional sign, digits, one decimal point. No exponents, no `inf`/`nan`.
fn parse_nm(b: &[u8]) -> Option<f64> {
    let b = trimmed(b);
    let digits = b.strip_prefix(b"-").or_else(|| b.strip_prefix(b"+")).unwrap_or(b);
    if digits.is_empty()
        || !digits.iter().all(|c| c.is_ascii_digit() || *c == b'.')
        || digits.iter().filter(|c| **c == b'.').count() > 1
        || digits == b"."
    {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// How a unit relates to a parameter's unit in Vigil.
#[derive(Debug, Clone, Copy, PartialEq)]
enum UnitFit {
    /// Already Vigil's unit (or none given): use as is.
    Native,
    /// Multiply by this factor (kPa → mmHg).
    Convert(f64),
    /// A unit that cannot be this parameter's, or one Vigil does not know.
    Wrong,
}

/// 1 kPa in mmHg.
const MMHG_PER_KPA: f64 = 7.500_616_827;

fn unit_fit(parameter: Parameter, unit_field: &[u8], sep: &Separators) -> UnitFit {
    let code = trimmed(component(unit_field, sep, 1));
    let name = trimmed(component(unit_field, sep, 2));
    if code.is_empty() && name.is_empty() {
        return UnitFit::Native;
    }
    let is = |options: &[&[u8]]| options.iter().any(|o| code.eq_ignore_ascii_case(o) || name.eq_ignore_ascii_case(o));
    // MDC unit codes from CLINICAL.md (264864, 262688, 266016, 264928); kPa is MDC_DIM_KILO_PASCAL 265987.
    // Only the unit family of the parameter is compared: this runs for every observation.
    let ok = match parameter {
        Parameter::Hr | Parameter::Pr | Parameter::Rr => is(&[
            b"264864",
            b"264928",
            b"264352",
            b"MDC_DIM_BEAT_PER_MIN",
            b"MDC_DIM_RESP_PER_MIN",
            b"MDC_DIM_PER_MIN",
            b"/min",
            b"1/min",
            b"{beat}/min",
            b"{beats}/min",
            b"{breath}/min",
            b"{breaths}/min",
            b"{resp}/min",
            b"bpm",
        ]),
        Parameter::Spo2 | Parameter::Pi => is(&[b"262688", b"MDC_DIM_PERCENT", b"%"]),
        Parameter::NibpSys | Parameter::NibpDia | Parameter::NibpMean => {
            if is(&[b"265987", b"MDC_DIM_KILO_PASCAL", b"kPa"]) {
                return UnitFit::Convert(MMHG_PER_KPA);
            }
            is(&[b"266016", b"MDC_DIM_MMHG", b"mm[Hg]", b"mmHg"])
        }
    };
    if ok {
        UnitFit::Native
    } else {
        UnitFit::Wrong
    }
}

/// OBX-7 `low^high` (Comen, sample \[5\]) or the HL7 reference-range form `low-high`.
fn parse_limits(field: &[u8], sep: &Separators, factor: f64) -> Option<(f64, f64)> {
    let field = trimmed(field);
    if field.is_empty() {
        return None;
    }
    let (lo, hi) = if field.contains(&sep.component) {
        (component(field, sep, 1), component(field, sep, 2))
    } else {
        let dash = field.iter().skip(1).position(|b| *b == b'-')? + 1;
        (&field[..dash], &field[dash + 1..])
    };
    Some((parse_nm(lo)? * factor, parse_nm(hi)? * factor))
}

fn observation(f: &Fields<'_>, sep: &Separators, demo: &mut bool) -> Option<Measurement> {
    let (parameter, spot) = parameter_of(f, sep)?;
    let value_type = trimmed(f.get(2));
    if !(value_type.is_empty() || value_type.eq_ignore_ascii_case(b"NM")) {
        return None; // a text or coded observation under a numeric code: not a value
    }
    let is_demo = f.get(8).split(|b| *b == sep.repetition).any(|r| trimmed(component(r, sep, 1)) == b"DEMO");
    *demo |= is_demo;
    // OBX-11 X: "results cannot be obtained"; W: "posted as wrong".
    let result_status = trimmed(f.get(11));
    let withdrawn = result_status == b"X" || result_status == b"W";
    let fit = unit_fit(parameter, f.get(6), sep);
    let factor = match fit {
        UnitFit::Convert(k) => k,
        _ => 1.0,
    };
    let raw = parse_nm(component(f.get(5), sep, 1));
    let value = match raw {
        _ if withdrawn || fit == UnitFit::Wrong => None,
        Some(v) if is_sentinel(v) => None,
        // 0 from an oximeter, ECG or cuff is "no value", never asystole or desaturation (data/README.md, mimic);
        // a perfusion index of 0 is the probe off.
        Some(v) if v == 0.0 && parameter != Parameter::Rr => None,
        Some(v) => Some(v * factor),
        None => None,
    };
    let status = match value {
        None => ValueStatus::Unavailable,
        Some(_) if is_demo => ValueStatus::Demo,
        Some(_) => ValueStatus::Valid,
    };
    Some(Measurement {
        parameter,
        value,
        status,
        observed: parse_dtm(component(f.get(14), sep, 1)),
        device_limits: parse_limits(f.get(7), sep, factor),
        spot,
    })
}

/// HL7 DTM `YYYYMMDDHHMM[SS[.S+]][+/-ZZZZ]` to UTC. Without an offset the time is taken as UTC: the device's
/// zone is unknown, and alarm timing uses receive time anyway. Less than minute precision is no time.
pub fn parse_dtm(b: &[u8]) -> Option<Timestamp> {
    let b = trimmed(b);
    let (body, offset) = match b.iter().position(|c| *c == b'+' || *c == b'-') {
        Some(i) => (&b[..i], Some(&b[i..])),
        None => (b, None),
    };
    let (whole, _fraction) = match body.iter().position(|c| *c == b'.') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &[][..]),
    };
    if !(whole.len() == 12 || whole.len() == 14) || !whole.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| whole[r].iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    let seconds = if whole.len() == 14 { num(12..14) } else { 0 };
    let naive = NaiveDate::from_ymd_opt(num(0..4) as i32, num(4..6), num(6..8))?.and_hms_opt(
        num(8..10),
        num(10..12),
        seconds,
    )?;
    let offset_s = match offset {
        None => 0,
        Some(o) if o.len() == 5 && o[1..].iter().all(u8::is_ascii_digit) => {
            let v = |i: usize| i32::from(o[i] - b'0');
            let s = (v(1) * 10 + v(2)) * 3600 + (v(3) * 10 + v(4)) * 60;
            if o[0] == b'-' {
                -s
            } else {
                s
            }
        }
        Some(_) => return None,
    };
    let tz = FixedOffset::east_opt(offset_s)?;
    tz.from_local_datetime(&naive).single().map(|t| t.with_timezone(&Utc))
}

/// HL7 acknowledgment code (table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// AA: accepted.
    Accept,
    /// AE: error in the message.
    Error,
    /// AR: rejected (unsupported type, unknown device).
    Reject,
}

impl AckCode {
    /// `AA`, `AE` or `AR`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AckCode::Accept => "AA",
            AckCode::Error => "AE",
            AckCode::Reject => "AR",
        }
    }
}

/// HL7 table 0357 codes used in ERR-3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 100: segment sequence error (no MSH).
    SegmentSequence,
    /// 102: data type error.
    DataType,
    /// 200: unsupported message type.
    UnsupportedMessageType,
    /// 204: unknown key identifier (an unknown device id).
    UnknownKey,
    /// 207: application internal error (too long, receiver unavailable).
    ApplicationInternal,
}

impl ErrorCode {
    const fn code_and_text(self) -> (u16, &'static str) {
        match self {
            ErrorCode::SegmentSequence => (100, "Segment sequence error"),
            ErrorCode::DataType => (102, "Data type error"),
            ErrorCode::UnsupportedMessageType => (200, "Unsupported message type"),
            ErrorCode::UnknownKey => (204, "Unknown key identifier"),
            ErrorCode::ApplicationInternal => (207, "Application internal error"),
        }
    }
}

static ACK_SEQ: AtomicU64 = AtomicU64::new(1);

/// Builds the ACK for a message (segments separated by CR, without MLLP framing): `MSA|AA|<MSH-10>`, or for
/// AE/AR also MSA-3 and an ERR segment with `reason`. Uses the sender's separators when its header was readable,
/// so a sender that declared unusual ones can read the answer.
pub fn build_ack(
    header: Option<&MessageHeader>,
    code: AckCode,
    error: Option<(ErrorCode, &str)>,
    now: Timestamp,
) -> Vec<u8> {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write;

    let sep = header.map(|h| h.separators).unwrap_or_default();
    let f = char::from(sep.field);
    let c = char::from(sep.component);
    let mut out = String::with_capacity(256);
    // `write!` into a String cannot fail; the results are ignored for that reason.
    out.push_str("MSH");
    out.push(f);
    out.extend(sep.encoding_chars().iter().map(|b| char::from(*b)));
    let _ = write!(out, "{f}VIGIL{f}VIGIL{f}");
    if let Some(h) = header {
        sep.push_raw(&mut out, &h.sending_application);
    }
    out.push(f);
    if let Some(h) = header {
        sep.push_raw(&mut out, &h.sending_facility);
    }
    // The time written by hand: a strftime pattern would be parsed on every call.
    let _ = write!(
        out,
        "{f}{:04}{:02}{:02}{:02}{:02}{:02}+0000{f}{f}ACK{c}R01{c}ACK{f}VIGIL{}{f}P{f}",
        now.year(),
        now.month(),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        ACK_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    match header.map(|h| h.version.as_str()) {
        Some(v) if !v.is_empty() => sep.push_escaped(&mut out, v),
        _ => out.push_str("2.6"),
    }
    let _ = write!(out, "\rMSA{f}{}{f}", code.as_str());
    if let Some(h) = header {
        sep.push_escaped(&mut out, &h.control_id);
    }
    if let Some((err, reason)) = error {
        let (n, label) = err.code_and_text();
        out.push(f);
        sep.push_escaped(&mut out, reason);
        let _ = write!(out, "\rERR{f}{f}{f}{n}{c}{label}{c}HL70357{f}E{f}{f}{f}{f}");
        sep.push_escaped(&mut out, reason);
    }
    out.push('\r');
    out.into_bytes()
}

/// Reads MSA-1 and MSA-2 from an ACK: for test clients and the simulator.
pub fn parse_ack(msg: &[u8]) -> Option<(String, String)> {
    let header = parse_header(msg).ok()?;
    let sep = header.separators;
    let msa = segments(msg).find(|s| s.starts_with(b"MSA"))?;
    let f = Fields::split(msa, sep.field, false);
    Some((text(f.get(1)), text(f.get(2))))
}

/// Streaming HL7 decoder for byte streams (MLLP over serial, replay): unwraps MLLP frames and parses each
/// message; framing errors and broken messages are items, never the end of the stream.
///
/// With [`Hl7Decoder::with_acks`] it also prepares the ACK each message earns (AE/AR at once; AA is the
/// caller's to send once the frame is accepted), for links where the monitor waits for answers (RS-232).
#[derive(Debug, Clone, Default)]
pub struct Hl7Decoder {
    mllp: MllpCodec,
    acks: bool,
    /// Boxed: a header is large, and decoders live inline in every pump.
    pending: Option<Box<PendingAck>>,
}

/// The answer a decoded message is owed.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingAck {
    /// The message's header, when it was readable.
    pub header: Option<MessageHeader>,
    /// AA, AE or AR.
    pub code: AckCode,
    /// Why, for AE/AR.
    pub error: Option<(ErrorCode, String)>,
}

impl PendingAck {
    /// The ACK message (without MLLP framing).
    pub fn build(&self, now: Timestamp) -> Vec<u8> {
        build_ack(self.header.as_ref(), self.code, self.error.as_ref().map(|(c, r)| (*c, r.as_str())), now)
    }
}

impl Hl7Decoder {
    /// A decoder dropping messages longer than `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        Hl7Decoder { mllp: MllpCodec::new(max_message_bytes), acks: false, pending: None }
    }

    /// A decoder that also prepares an ACK per message ([`Hl7Decoder::take_ack`]).
    pub fn with_acks(max_message_bytes: usize) -> Self {
        Hl7Decoder { acks: true, ..Self::new(max_message_bytes) }
    }

    /// Whether this decoder prepares ACKs.
    pub fn prepares_acks(&self) -> bool {
        self.acks
    }

    /// The ACK owed for the item just returned, if any (none for bytes between frames).
    pub fn take_ack(&mut self) -> Option<PendingAck> {
        self.pending.take().map(|b| *b)
    }

    fn item(&mut self, r: Option<Result<bytes::Bytes, DecodeError>>) -> Option<Result<Frame, DecodeError>> {
        let r = r?;
        if !self.acks {
            return Some(r.and_then(|msg| decode_message(&msg)));
        }
        let (result, pending) = match r {
            Err(e @ DecodeError::TooLong(_)) => {
                let error = Some((ErrorCode::ApplicationInternal, e.to_string()));
                (Err(e), Some(PendingAck { header: None, code: AckCode::Error, error }))
            }
            Err(e) => (Err(e), None),
            Ok(msg) => match parse_oru(&msg) {
                Ok(oru) => {
                    (Ok(oru.frame), Some(PendingAck { header: Some(oru.header), code: AckCode::Accept, error: None }))
                }
                Err(e) => {
                    let pending = PendingAck {
                        header: parse_header(&msg).ok(),
                        code: e.ack_code(),
                        error: Some((e.error_code(), e.to_string())),
                    };
                    (Err(e.into()), Some(pending))
                }
            },
        };
        self.pending = pending.map(Box::new);
        Some(result)
    }
}

impl Decoder for Hl7Decoder {
    type Item = Result<Frame, DecodeError>;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        let r = self.mllp.decode(buf)?;
        Ok(self.item(r))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        let r = self.mllp.decode_eof(buf)?;
        Ok(self.item(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(lines: &[&str]) -> Vec<u8> {
        lines.join("\r").into_bytes()
    }

    const MSH: &str = "MSH|^~\\&|MON^0011223344556677^EUI-64||||20240101120000||ORU^R01^ORU_R01|42|P|2.6";

    #[test]
    fn custom_separators_declared_in_msh_are_honoured() {
        let m = msg(&[
            "MSH#*!@%#MON*0011223344556677*EUI-64####20240101120000##ORU*R01#7#P#2.6",
            "OBX#1#NM#150456*MDC_PULS_OXIM_SAT_O2*MDC#1.3.1.150456#97#262688*MDC_DIM_PERCENT*MDC",
        ]);
        let oru = parse_oru(&m).unwrap();
        assert_eq!(oru.header.control_id, "7");
        assert_eq!(oru.frame.device_id.as_deref(), Some("0011223344556677"));
        assert_eq!(oru.frame.measurements[0].value, Some(97.0));
    }

    #[test]
    fn components_come_from_the_first_repetition_only() {
        let sep = Separators::default();
        assert_eq!(component(b"a^b^c~d^e", &sep, 1), b"a");
        assert_eq!(component(b"a^b^c~d^e", &sep, 3), b"c");
        assert_eq!(component(b"a^b^c~d^e", &sep, 4), b"");
        assert_eq!(component(b"a", &sep, 2), b"");
        assert_eq!(component(b"", &sep, 1), b"");
        assert_eq!(component(b"^x", &sep, 2), b"x");
    }

    #[test]
    fn kpa_is_converted_to_mmhg_with_its_limits() {
        let m = msg(&[MSH, "OBX|1|NM|150021^X^MDC|1.1.1.150021|16|kPa^kPa^UCUM|12^21"]);
        let f = decode_message(&m).unwrap();
        let v = f.measurements[0].value.unwrap();
        assert!((v - 120.0).abs() < 0.1, "{v}");
        let (lo, hi) = f.measurements[0].device_limits.unwrap();
        assert!((lo - 90.0).abs() < 0.1 && (hi - 157.5).abs() < 0.1);
    }

    #[test]
    fn a_unit_wrong_for_the_parameter_gives_no_value() {
        let m = msg(&[MSH, "OBX|1|NM|150456^X^MDC|1.3.1.150456|97|266016^MDC_DIM_MMHG^MDC"]);
        let f = decode_message(&m).unwrap();
        assert_eq!((f.measurements[0].value, f.measurements[0].status), (None, ValueStatus::Unavailable));
    }

    #[test]
    fn hr_pulse_and_respiration_variants_map_to_their_parameters() {
        for (code, p) in [
            (147842, Parameter::Hr),
            (149530, Parameter::Pr),
            (149546, Parameter::Pr),
            (149522, Parameter::Pr),
            (151562, Parameter::Rr),
            (151578, Parameter::Rr),
            (151658, Parameter::Rr),
            (150021, Parameter::NibpSys),
            (150302, Parameter::NibpDia),
        ] {
            assert_eq!(mdc_parameter(code), Some(p), "{code}");
        }
        assert_eq!(mdc_parameter(150488), Some(Parameter::Pi), "Mindray's MDC_BLD_PERF_INDEX");
        assert_eq!(mdc_parameter(150448), Some(Parameter::Pi), "MDC_PULS_OXIM_PERF_REL");
    }

    #[test]
    fn a_message_of_another_type_is_unsupported_and_garbage_is_not_hl7() {
        let m = msg(&["MSH|^~\\&|A||||20240101||ADT^A01|9|P|2.5"]);
        assert!(matches!(parse_oru(&m), Err(Hl7Error::Unsupported(t)) if t == "ADT^A01"));
        assert!(matches!(parse_oru(b"hello"), Err(Hl7Error::NotHl7(_))));
        assert!(matches!(parse_oru(b"MSH|||||"), Err(Hl7Error::NotHl7(_))));
    }

    #[test]
    fn dtm_offsets_are_applied_and_short_times_are_no_time() {
        assert_eq!(parse_dtm(b"20260726231331+0800").unwrap().to_rfc3339(), "2026-07-26T15:13:31+00:00");
        assert_eq!(parse_dtm(b"20260727124424.0000+0000").unwrap().to_rfc3339(), "2026-07-27T12:44:24+00:00");
        assert_eq!(parse_dtm(b"20191206"), None);
        assert_eq!(parse_dtm(b"20191306113452"), None);
    }

    #[test]
    fn the_ack_echoes_the_control_id_and_escapes_the_reason() {
        let header = parse_header(&msg(&[MSH])).unwrap();
        let ack = build_ack(Some(&header), AckCode::Accept, None, Utc::now());
        assert_eq!(parse_ack(&ack), Some(("AA".into(), "42".into())));
        let ack = build_ack(Some(&header), AckCode::Reject, Some((ErrorCode::UnknownKey, "id a|b")), Utc::now());
        let text = String::from_utf8(ack.clone()).unwrap();
        assert!(text.contains("MSA|AR|42|id a\\F\\b\r"), "{text}");
        assert!(text.contains("ERR|||204^Unknown key identifier^HL70357|E"), "{text}");
        assert_eq!(parse_ack(&ack), Some(("AR".into(), "42".into())));
    }
}
