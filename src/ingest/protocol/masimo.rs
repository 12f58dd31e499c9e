//! Masimo Rad-8 / Radical-7 serial ASCII output ("ASCII 1" live lines and the "ASCII 2" trend download).
//!
//! One text line per second at 9600 8N1, no handshake (docs/sources.md, "Device protocols"). Field sets
//! differ by model and software version, so the line is read as `KEY=value` tokens in any order, never as fixed
//! columns (docs/sources.md, "Devices and data"). Examples:
//!
//! `SPO2`, `BPM`/`PR` and the perfusion index `PI` (percent) are read; dashes (`--.--`) or 0 are no value.
//!
//! ```text
//! 02/22/16 22:47:45 SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% ... ALARM=0000 EXC=000800
//! 09/21/08 09:56:12 SpO2=097 PR=069 PI=04.69 EXC=800:SET
//! ```

use bytes::BytesMut;
use chrono::{NaiveDate, TimeZone, Utc};
use tokio_util::codec::Decoder;

use super::{DecodeError, Frame, Measurement, SensorFlags};
use crate::vitals::{Parameter, Timestamp, ValueStatus};

/// Longest line accepted. Real lines are under 250 bytes (the Radical-7 "color" line is the longest sample);
/// anything longer is noise, and dropping it bounds the buffer.
pub const MAX_LINE: usize = 512;

/// EXC bits from the Rad-8 manual (docs/sources.md, "Devices and data").
pub mod exc {
    /// No sensor.
    pub const NO_SENSOR: u32 = 0x001;
    /// Defective sensor.
    pub const DEFECTIVE: u32 = 0x002;
    /// Low perfusion.
    pub const LOW_PERFUSION: u32 = 0x004;
    /// Pulse search.
    pub const PULSE_SEARCH: u32 = 0x008;
    /// Interference.
    pub const INTERFERENCE: u32 = 0x010;
    /// Sensor off the patient.
    pub const SENSOR_OFF: u32 = 0x020;
    /// Ambient light.
    pub const AMBIENT_LIGHT: u32 = 0x040;
    /// Unrecognised sensor.
    pub const UNRECOGNISED: u32 = 0x080;
    /// Low signal IQ.
    pub const LOW_SIGNAL_IQ: u32 = 0x400;
    /// SET processing active: informational, not a fault.
    pub const SET: u32 = 0x800;
}

/// Maps the EXC bit field to [`SensorFlags`]. Ambient light counts as interference and an unrecognised sensor as
/// a defective one: both leave the device unable to trust its numbers in the same way.
pub fn exc_flags(bits: u32) -> SensorFlags {
    const MAP: [(u32, SensorFlags); 9] = [
        (exc::NO_SENSOR, SensorFlags::NO_SENSOR),
        (exc::DEFECTIVE, SensorFlags::DEFECTIVE),
        (exc::LOW_PERFUSION, SensorFlags::LOW_PERFUSION),
        (exc::PULSE_SEARCH, SensorFlags::PULSE_SEARCH),
        (exc::INTERFERENCE, SensorFlags::INTERFERENCE),
        (exc::SENSOR_OFF, SensorFlags::SENSOR_OFF),
        (exc::AMBIENT_LIGHT, SensorFlags::INTERFERENCE),
        (exc::UNRECOGNISED, SensorFlags::DEFECTIVE),
        (exc::LOW_SIGNAL_IQ, SensorFlags::LOW_SIGNAL_IQ),
    ];
    MAP.iter().filter(|(bit, _)| bits & bit != 0).fold(SensorFlags::default(), |acc, (_, f)| acc.union(*f))
}

/// Parses one line (without its line end). Pure: the building block of [`MasimoDecoder`], also usable in replay.
///
/// A line must carry at least one of `SPO2`/`SpO2`, `BPM`/`PR`; a value that is neither a number nor dashes
/// makes the whole line malformed, because a corrupted line cannot be trusted in part.
pub fn parse_line(line: &[u8]) -> Result<Frame, DecodeError> {
    let text = std::str::from_utf8(line).map_err(|_| DecodeError::Malformed("masimo: line is not ASCII".into()))?;
    let mut tokens = text.split_ascii_whitespace().peekable();
    let mut frame = Frame::default();

    // The line's own timestamp `MM/DD/YY HH:MM:SS`: kept beside the receive time, never used for alarm timing.
    if let Some(date) = tokens.peek().copied().filter(|t| !t.contains('=')) {
        tokens.next();
        let time = tokens.next().filter(|t| !t.contains('=')).ok_or_else(|| malformed("date without a time"))?;
        frame.device_time = Some(parse_timestamp(date, time).ok_or_else(|| malformed("bad timestamp"))?);
    }

    let mut spo2: Option<Option<f64>> = None;
    let mut pulse: Option<Option<f64>> = None;
    let mut pi: Option<Option<f64>> = None;
    let mut exc_bits = 0u32;
    for token in tokens {
        let (key, value) = token.split_once('=').ok_or_else(|| malformed("token without '='"))?;
        if key.eq_ignore_ascii_case("SPO2") {
            spo2 = Some(number(value)?);
        } else if key.eq_ignore_ascii_case("BPM") || key.eq_ignore_ascii_case("PR") {
            pulse = Some(number(value)?);
        } else if key.eq_ignore_ascii_case("PI") {
            pi = Some(number(value)?);
        } else if key.eq_ignore_ascii_case("EXC") {
            exc_bits = hex_field(value).ok_or_else(|| malformed("bad EXC"))?;
        } else if key.eq_ignore_ascii_case("ALARM") {
            frame.device_alarm_bits = Some(hex_field(value).ok_or_else(|| malformed("bad ALARM"))?);
        } else if key.eq_ignore_ascii_case("SN") && !is_dashes(value) && !value.is_empty() {
            frame.device_id = Some(value.to_owned());
        }
        // Other keys (SPCO, SPMET, SPHB, PVI, PIDELTA, DESAT, EXC1 …) are not parameters Vigil reads.
    }
    if spo2.is_none() && pulse.is_none() {
        return Err(malformed("no SPO2 or pulse field"));
    }
    frame.sensor = exc_flags(exc_bits);
    // The perfusion index first: the engine judges the SpO2 of this line by it.
    for (parameter, value) in [(Parameter::Pi, pi), (Parameter::Spo2, spo2), (Parameter::Pr, pulse)] {
        if let Some(value) = value {
            frame.measurements.push(measurement(parameter, value, frame.sensor));
        }
    }
    Ok(frame)
}

/// A value becomes a measurement. An oximeter SpO2, pulse or perfusion index of 0 is "no value" (probe off,
/// searching), never a desaturation or asystole (docs/sources.md, "Devices and data"); the trend download writes
/// exactly that (`SpO2=000 PR=000 PI=00.00`).
fn measurement(parameter: Parameter, value: Option<f64>, sensor: SensorFlags) -> Measurement {
    let value = value.filter(|v| *v != 0.0);
    let (value, status) = match value {
        None => (None, ValueStatus::Unavailable),
        Some(_) if sensor.no_measurement() => (None, ValueStatus::Unavailable),
        Some(v) if sensor.doubtful() => (Some(v), ValueStatus::Questionable),
        Some(v) => (Some(v), ValueStatus::Valid),
    };
    Measurement { parameter, value, status, observed: None, device_limits: None, spot: false }
}

fn malformed(why: &str) -> DecodeError {
    DecodeError::Malformed(format!("masimo: {why}"))
}

fn is_dashes(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'-' | b'.' | b'+' | b'%'))
}

/// `098%`, `03.60`, `---%`, `--.-` → number or no value.
fn number(value: &str) -> Result<Option<f64>, DecodeError> {
    let v = value.strip_suffix('%').unwrap_or(value);
    if v.is_empty() || is_dashes(v) {
        return Ok(None);
    }
    if !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(malformed("value is not a number"));
    }
    v.parse::<f64>().map(Some).map_err(|_| malformed("value is not a number"))
}

/// `000800` or `820:OffPat,SET` → the hex bits before any `:` label list.
fn hex_field(value: &str) -> Option<u32> {
    let hex = value.split(':').next().unwrap_or("");
    if hex.is_empty() || hex.len() > 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// `MM/DD/YY` `HH:MM:SS`, taken as UTC: the monitor's clock zone is unknown, and alarm timing never uses it.
fn parse_timestamp(date: &str, time: &str) -> Option<Timestamp> {
    let d = date.as_bytes();
    let t = time.as_bytes();
    if d.len() != 8 || t.len() != 8 || d[2] != b'/' || d[5] != b'/' || t[2] != b':' || t[5] != b':' {
        return None;
    }
    let two = |s: &[u8], i: usize| -> Option<u32> {
        let (a, b) = (s[i], s[i + 1]);
        (a.is_ascii_digit() && b.is_ascii_digit()).then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
    };
    let (month, day, year) = (two(d, 0)?, two(d, 3)?, two(d, 6)?);
    let (h, m, s) = (two(t, 0)?, two(t, 3)?, two(t, 6)?);
    let naive = NaiveDate::from_ymd_opt(2000 + year as i32, month, day)?.and_hms_opt(h, m, s)?;
    Some(Utc.from_utc_datetime(&naive))
}

/// Streaming line decoder: one [`Frame`] or one [`DecodeError`] per line; a bad line never ends the stream.
///
/// Lines end at CR or LF (the monitor sends CR LF; either alone resynchronises). A line longer than
/// `max_line` is dropped as [`DecodeError::TooLong`] and the rest of it discarded up to the next line end, so
/// the buffer never holds more than `max_line` bytes of a line.
#[derive(Debug, Clone)]
pub struct MasimoDecoder {
    max_line: usize,
    /// Inside an over-long line: skip to the next line end.
    discarding: bool,
    /// Bytes of the buffer already searched for a line end.
    scanned: usize,
}

impl MasimoDecoder {
    /// A decoder with the default maximum line length.
    pub fn new() -> Self {
        Self::with_max_line(MAX_LINE)
    }
    /// A decoder with a chosen maximum line length.
    pub fn with_max_line(max_line: usize) -> Self {
        MasimoDecoder { max_line: max_line.max(16), discarding: false, scanned: 0 }
    }
}

impl Default for MasimoDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for MasimoDecoder {
    type Item = Result<Frame, DecodeError>;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        loop {
            let end = memchr::memchr2(b'\n', b'\r', &buf[self.scanned..]).map(|i| i + self.scanned);
            match end {
                Some(end) => {
                    let line = buf.split_to(end + 1);
                    self.scanned = 0;
                    let line = &line[..end];
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue; // the LF of CR LF, blank lines
                    }
                    if line.len() > self.max_line {
                        return Ok(Some(Err(DecodeError::TooLong(line.len()))));
                    }
                    return Ok(Some(parse_line(line)));
                }
                None if buf.len() > self.max_line => {
                    let dropped = buf.len();
                    buf.clear();
                    self.scanned = 0;
                    let first = !self.discarding;
                    self.discarding = true;
                    // Report an over-long line once, not once per read chunk of it.
                    return Ok(first.then_some(Err(DecodeError::TooLong(dropped))));
                }
                None => {
                    self.scanned = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        // A last line without its line end is still a line; then the buffer is empty and the stream ends cleanly.
        let rest = buf.split();
        self.scanned = 0;
        if std::mem::take(&mut self.discarding) || rest.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        Ok(Some(parse_line(&rest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = "02/22/16 22:47:45 SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% SPMET=--.-% DESAT=-- \
                        PIDELTA=+-- ALARM=0000 EXC=000800";

    fn value(f: &Frame, p: Parameter) -> (Option<f64>, ValueStatus) {
        let m = f.measurements.iter().find(|m| m.parameter == p).expect("parameter present");
        (m.value, m.status)
    }

    #[test]
    fn a_live_line_gives_spo2_pulse_serial_number_alarm_bits_and_device_time() {
        let f = parse_line(LIVE.as_bytes()).unwrap();
        assert_eq!(value(&f, Parameter::Spo2), (Some(98.0), ValueStatus::Valid));
        assert_eq!(value(&f, Parameter::Pr), (Some(97.0), ValueStatus::Valid));
        assert_eq!(f.device_id.as_deref(), Some("0000056661"));
        assert_eq!(f.device_alarm_bits, Some(0));
        assert_eq!(f.device_time.unwrap().to_rfc3339(), "2016-02-22T22:47:45+00:00");
        assert!(f.sensor.is_empty(), "SET (0x800) is informational");
    }

    #[test]
    fn tokens_are_read_in_any_order() {
        let f = parse_line(b"EXC=000000 BPM=061 ALARM=0012 SPO2=091%").unwrap();
        assert_eq!(value(&f, Parameter::Spo2), (Some(91.0), ValueStatus::Valid));
        assert_eq!(value(&f, Parameter::Pr), (Some(61.0), ValueStatus::Valid));
        assert_eq!(f.device_alarm_bits, Some(0x12));
        assert_eq!(f.device_time, None);
    }

    #[test]
    fn zero_spo2_and_pulse_are_no_value_never_a_desaturation() {
        let f = parse_line(b"09/21/08 09:56:18 SpO2=000 PR=000 PI=00.00 EXC=800:SET").unwrap();
        assert_eq!(value(&f, Parameter::Spo2), (None, ValueStatus::Unavailable));
        assert_eq!(value(&f, Parameter::Pr), (None, ValueStatus::Unavailable));
    }

    #[test]
    fn low_signal_iq_marks_values_questionable_and_sensor_off_unavailable() {
        let f = parse_line(b"09/21/08 09:56:14 SpO2=096 PR=074 PI=02.28 EXC=C00:LowSigIQ,SET").unwrap();
        assert!(f.sensor.contains(SensorFlags::LOW_SIGNAL_IQ));
        assert_eq!(value(&f, Parameter::Spo2), (Some(96.0), ValueStatus::Questionable));
        let f = parse_line(b"SpO2=096 PR=074 EXC=020").unwrap();
        assert!(f.sensor.contains(SensorFlags::SENSOR_OFF));
        assert_eq!(value(&f, Parameter::Spo2), (None, ValueStatus::Unavailable));
    }

    #[test]
    fn the_perfusion_index_comes_first_and_dashes_are_no_value() {
        let f = parse_line(LIVE.as_bytes()).unwrap();
        assert_eq!(f.measurements[0].parameter, Parameter::Pi, "the perfusion index comes first in the frame");
        assert_eq!(value(&f, Parameter::Pi), (Some(3.6), ValueStatus::Valid));
        let off = parse_line(b"05/15/07 08:12:21 SN=0000070986 SPO2=---% BPM=--- PI=--.--% EXC=000000").unwrap();
        assert_eq!(value(&off, Parameter::Pi), (None, ValueStatus::Unavailable));
        let line_without_pi = parse_line(b"03/19/16 13:37:12 SN=0000093112 SPO2=---% BPM=--- EXC=000001").unwrap();
        assert!(line_without_pi.measurements.iter().all(|m| m.parameter != Parameter::Pi));
    }

    #[test]
    fn a_corrupted_value_makes_the_line_malformed() {
        assert!(parse_line(b"SPO2=9x8% BPM=070").is_err());
        assert!(parse_line(b"02/22/16 22:47:45 PI=03.60%").is_err(), "no SpO2 or pulse");
        assert!(parse_line(b"13/45/16 22:47:45 SPO2=098%").is_err(), "impossible date");
    }

    #[test]
    fn the_decoder_resynchronises_at_the_next_line_end_after_garbage_and_over_long_lines() {
        let mut d = MasimoDecoder::with_max_line(64);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"\xff\xfe garbage\r\n");
        buf.extend_from_slice(&[b'x'; 100]);
        assert!(matches!(d.decode(&mut buf).unwrap(), Some(Err(DecodeError::Malformed(_)))));
        assert!(matches!(d.decode(&mut buf).unwrap(), Some(Err(DecodeError::TooLong(100)))));
        assert!(buf.is_empty());
        buf.extend_from_slice(&[b'x'; 100]);
        assert_eq!(d.decode(&mut buf).unwrap(), None, "the same over-long line is reported once");
        buf.extend_from_slice(b"tail\r\nSPO2=097% BPM=070\r\n");
        let f = d.decode(&mut buf).unwrap().unwrap().unwrap();
        assert_eq!(value(&f, Parameter::Spo2), (Some(97.0), ValueStatus::Valid));
        assert_eq!(d.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn a_last_line_without_line_end_is_decoded_at_end_of_stream() {
        let mut d = MasimoDecoder::new();
        let mut buf = BytesMut::from(&b"SPO2=097% BPM=070"[..]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert!(d.decode_eof(&mut buf).unwrap().unwrap().is_ok());
        assert_eq!(d.decode_eof(&mut buf).unwrap(), None);
    }
}
