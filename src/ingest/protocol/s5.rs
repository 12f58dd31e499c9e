//! GE Datex-Ohmeda S/5 (AS/3, CS/3, S/5 and the Compact/Light monitors) Datex Record Interface (DRI) over the
//! monitor's serial computer interface: the monitor → host direction, plus the two requests the host sends.
//!
//! Sources (docs/sources.md, "GE Datex-Ohmeda S/5 DRI"): the record layouts of the S/5 DRI specification
//! (Datex-Ohmeda doc. 8005313 / M1017617, "S/5 Computer Interface Specification") as transcribed in public open
//! implementations: xeonfusion/VSCapture (`VSCapture/Class1.cs`, `Class2.cs`: link settings, framing, the
//! physiological request, the basic class layout and the "no data" sentinels) and the C headers of a public Qt
//! S/5 client (`datex.h`: `dri_al_msg`, `al_disp_al`, `al_tx_cmds`); the request bytes of pyCollect
//! (`START_PARAM_HEX`) confirm the header layout and the checksum.
//!
//! ## Link
//! 19200 baud, 8 data bits, even parity, 1 stop bit, RTS/CTS flow control (some monitors are set to 9600).
//!
//! ## Frames
//! `7E <record, escaped> <checksum, escaped> 7E`. Inside a frame `7E` is sent as `7D 5E` and `7D` as `7D 5D`
//! (the byte XOR 0x20). The checksum is the sum of the unescaped record bytes modulo 256.
//!
//! ## Record (little-endian)
//! | offset | field |
//! |---|---|
//! | 0 | `r_len` i16: record length including this header |
//! | 2 | `r_nbr` u8, `dri_level` u8 |
//! | 4 | `plug_id` u16 |
//! | 6 | `r_time` u32: Unix time |
//! | 10 | 4 reserved bytes |
//! | 14 | `r_maintype` i16: 0 physiological (`DRI_MT_PHDB`), 1 waveform, 4 alarm (`DRI_MT_ALARM`), 5 network |
//! | 16 | 8 × (`sr_offset` i16, `sr_type` u8): sub-record offsets from byte 40; type 0xFF ends the list |
//! | 40 | sub-records |
//!
//! A physiological sub-record (`sr_type` 1 displayed values, 2 10-second trend, 3 60-second trend) is 278 bytes:
//! `time` u32, 270 bytes of one data class, `marker` u8, a reserved byte, `cl_drilvl_subt` u16 whose bits 8–11
//! name the class (0 basic, 1–3 extensions). Only the basic class is read. Its groups each start with a 6-byte
//! header (`status` u32: bit 0 the measurement exists, bit 1 it is active, further bits per group; `label` u16)
//! followed by i16 values:
//!
//! | offset in class | group | values read |
//! |---|---|---|
//! | 0 | ECG | `hr` /min → `hr`; `imp_rr` /min → `rr` (when CO2 gives none); status bits 7–9 noise, artefact, learning → questionable |
//! | 72 | NIBP | `sys`, `dia`, `mean` in 1/100 mmHg → `nibp_*`; `hr` /min → `pr` (spot) |
//! | 118 | SpO2 | `SpO2` in 1/100 % → `spo2`; `pr` /min → `pr` |
//! | 132 | CO2 | `rr` /min → `rr` |
//!
//! A value at or below −32001 (`DATA_INVALID_LIMIT`; −32767 invalid, −32766 not updated, −32765 discontinuity,
//! −32764 under range, −32763 over range, −32762 not calibrated) is no value. A group whose `exists` or `active`
//! bit is clear is not reported at all (the module is absent or switched off), so an S/5 without ECG leads does
//! not claim an ECG heart rate. The S/5 shows the last NIBP result until the next cycle: the decoder reports an
//! NIBP only when its values differ from the last one it reported.
//!
//! An alarm record (`r_maintype` 4) carries a `dri_al_msg` sub-record (`sr_type` 1, `DRI_AL_STATUS`): i16
//! reserved, `sound_on_off`, two reserved i16, `silence_info`, then 5 × `al_disp_al` (`text` char\[80],
//! `text_changed`, `color` 0–3, `color_changed`, 6 reserved i16), then 5 reserved i16. Booleans and enums are
//! 16 bits (the S/5's compiler), so a message is 510 bytes. Each displayed alarm with text becomes a
//! [`DeviceAlarm`]; the list in the frame is the monitor's complete current set. Colour maps to priority:
//! 3 (red) → high, 2 (yellow) → medium, 1 (white) → low, 0 → info. The record does not say whether an alarm is
//! physiological or technical, nor which parameter it is about: both are read from the text (see
//! [`alarm_from_text`]).
//!
//! The host starts transmission with [`start_requests`] (displayed values every 5 seconds, or the 10 s or 60 s
//! trend at its period, as [`PhdbRequest`] says; the alarm status and then differential alarm mode) at every
//! (re)connect: the monitor forgets them when it restarts.

use bytes::{Buf, BytesMut};
use chrono::DateTime;
use tokio_util::codec::Decoder;

use super::{DecodeError, DeviceAlarm, DeviceAlarmPriority, Frame, Measurement, Talker};
use crate::vitals::{Parameter, Timestamp, ValueStatus};

/// Frame flag.
pub const FLAG: u8 = 0x7E;
/// Escape byte: the next byte is XOR [`ESCAPE_XOR`].
pub const ESCAPE: u8 = 0x7D;
/// What an escaped byte is XORed with.
pub const ESCAPE_XOR: u8 = 0x20;
/// Record header length.
pub const HEADER_LEN: usize = 40;
/// Largest record: the header and 1450 bytes of sub-records.
pub const MAX_RECORD: usize = HEADER_LEN + 1450;
/// Number of sub-record descriptors in a header.
pub const MAX_SUBRECORDS: usize = 8;
/// `sr_type` that ends the descriptor list.
pub const END_OF_LIST: u8 = 0xFF;

/// Main types.
pub mod maintype {
    /// Physiological data (`DRI_MT_PHDB`).
    pub const PHDB: i16 = 0;
    /// Waveforms (`DRI_MT_WAVE`): not read.
    pub const WAVE: i16 = 1;
    /// Alarms (`DRI_MT_ALARM`).
    pub const ALARM: i16 = 4;
}

/// Physiological sub-record types (`sr_type` of a `DRI_MT_PHDB` record).
pub mod phdb {
    /// A transmission request (host → monitor).
    pub const REQUEST: u8 = 0;
    /// Displayed values (`DRI_PH_DISPL`).
    pub const DISPLAYED: u8 = 1;
    /// 10-second trend (`DRI_PH_10S_TREND`).
    pub const TREND_10S: u8 = 2;
    /// 60-second trend (`DRI_PH_60S_TREND`).
    pub const TREND_60S: u8 = 3;
    /// Length of one physiological sub-record.
    pub const SUBRECORD_LEN: usize = 278;
    /// Offset of the class data in the sub-record (after `time`).
    pub const CLASS_AT: usize = 4;
    /// Offset of `cl_drilvl_subt` in the sub-record.
    pub const CLASS_WORD_AT: usize = 276;
    /// Class number of the basic class.
    pub const CLASS_BASIC: u16 = 0;
    /// Group offsets in the basic class.
    pub const ECG_AT: usize = 0;
    /// NIBP group.
    pub const NIBP_AT: usize = 72;
    /// SpO2 group.
    pub const SPO2_AT: usize = 118;
    /// CO2 group.
    pub const CO2_AT: usize = 132;
}

/// Alarm sub-record types and commands.
pub mod alarm {
    /// `sr_type` of an alarm status message (`DRI_AL_STATUS`) and of an alarm request (0).
    pub const STATUS: u8 = 1;
    /// Command: send the alarm status once (`DRI_AL_XMIT_STATUS`).
    pub const XMIT_STATUS: i16 = 0;
    /// Command: send the alarm status whenever it changes (`DRI_AL_ENTER_DIFFMODE`).
    pub const ENTER_DIFFMODE: i16 = 2;
    /// Command: stop differential mode (`DRI_AL_EXIT_DIFFMODE`).
    pub const EXIT_DIFFMODE: i16 = 3;
    /// Displayed alarms in a message.
    pub const SLOTS: usize = 5;
    /// Offset of the first `al_disp_al` in `dri_al_msg`.
    pub const FIRST_SLOT_AT: usize = 10;
    /// Length of one `al_disp_al`.
    pub const SLOT_LEN: usize = 98;
    /// Length of the text field.
    pub const TEXT_LEN: usize = 80;
    /// Length of `dri_al_msg`.
    pub const MESSAGE_LEN: usize = FIRST_SLOT_AT + SLOTS * SLOT_LEN + 10;
}

/// Values at or below this are "no data" sentinels (`DATA_INVALID_LIMIT`).
pub const DATA_INVALID_LIMIT: i16 = -32001;

/// DRI levels the physiological request is sent at (S/5 2005, 2003 and 2001 software), as VSCapture does: a
/// monitor answers the request at its own level.
pub const REQUEST_LEVELS: [u8; 3] = [0x09, 0x08, 0x07];

/// Group status bits.
pub mod status {
    /// The measurement exists (module present).
    pub const EXISTS: u32 = 1;
    /// The measurement is active.
    pub const ACTIVE: u32 = 1 << 1;
    /// ECG: noise.
    pub const ECG_NOISE: u32 = 1 << 7;
    /// ECG: artefact.
    pub const ECG_ARTEFACT: u32 = 1 << 8;
    /// ECG: learning (the monitor is relearning the QRS).
    pub const ECG_LEARNING: u32 = 1 << 9;
}

/// The 8-bit checksum: the sum of the unescaped record bytes.
pub fn checksum(record: &[u8]) -> u8 {
    record.iter().fold(0u8, |s, b| s.wrapping_add(*b))
}

/// Frames a record for the wire: flags, escaping and the checksum (escaped as well).
pub fn frame(record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.len() + 8);
    out.push(FLAG);
    for b in record.iter().copied().chain(std::iter::once(checksum(record))) {
        if b == FLAG || b == ESCAPE {
            out.extend([ESCAPE, b ^ ESCAPE_XOR]);
        } else {
            out.push(b);
        }
    }
    out.push(FLAG);
    out
}

/// A 40-byte header for a record of `len` bytes with one sub-record of `sr_type` at offset 0.
fn request_header(len: usize, level: u8, maintype: i16, sr_type: u8) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN];
    h[0..2].copy_from_slice(&(len as i16).to_le_bytes());
    h[3] = level;
    h[14..16].copy_from_slice(&maintype.to_le_bytes());
    h[18] = sr_type;
    h[21] = END_OF_LIST;
    h
}

/// The physiological data request (`datex_record_req`, 49 bytes): `sr_type` 0, then `phdb_rcrd_type` u8,
/// `tx_ival` i16 seconds, `phdb_class_bf` u32 (0: the basic class only), 2 reserved bytes. Interval 0 stops it.
pub fn phdb_request(record_type: u8, interval_s: i16, level: u8) -> Vec<u8> {
    let mut r = request_header(HEADER_LEN + 9, level, maintype::PHDB, phdb::REQUEST);
    r.push(record_type);
    r.extend(interval_s.to_le_bytes());
    r.extend(0u32.to_le_bytes());
    r.extend([0, 0]);
    r
}

/// The alarm request (`datex_alarm_req`, 52 bytes): `sr_type` 0, then `cmd` i16 and 5 reserved i16.
pub fn alarm_request(cmd: i16) -> Vec<u8> {
    let mut r = request_header(HEADER_LEN + 12, 0, maintype::ALARM, 0);
    r.extend(cmd.to_le_bytes());
    r.extend([0u8; 10]);
    r
}

/// Default interval of the displayed-values request, seconds (VSCapture's default; the S/5 sends no faster).
pub const DEFAULT_INTERVAL_S: i16 = 5;

/// Which physiological records the host asks for (`phdb_rcrd_type` and `tx_ival` of the request): the
/// displayed values every [`DEFAULT_INTERVAL_S`] seconds, or one of the monitor's trends at its own period (a
/// record once per period, so alarms see a change up to that much later; docs/devices.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhdbRequest {
    /// `phdb_rcrd_type`: [`phdb::DISPLAYED`], [`phdb::TREND_10S`] or [`phdb::TREND_60S`].
    pub record_type: u8,
    /// `tx_ival`, seconds.
    pub interval_s: i16,
}

impl PhdbRequest {
    /// Displayed values every [`DEFAULT_INTERVAL_S`] seconds (the default).
    pub const DISPLAYED: PhdbRequest = PhdbRequest { record_type: phdb::DISPLAYED, interval_s: DEFAULT_INTERVAL_S };
    /// The 10-second trend, every 10 s.
    pub const TREND_10S: PhdbRequest = PhdbRequest { record_type: phdb::TREND_10S, interval_s: 10 };
    /// The 60-second trend, every 60 s (as a public C S/5 client asks for it: `DRI_PH_60S_TREND`, `tx_ival` 60).
    pub const TREND_60S: PhdbRequest = PhdbRequest { record_type: phdb::TREND_60S, interval_s: 60 };
}

impl Default for PhdbRequest {
    fn default() -> Self {
        PhdbRequest::DISPLAYED
    }
}

/// Everything the host sends when the link comes up, framed: the physiological request at each of
/// [`REQUEST_LEVELS`], the alarm status request and differential alarm mode.
pub fn start_requests(request: PhdbRequest) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = REQUEST_LEVELS
        .iter()
        .map(|level| frame(&phdb_request(request.record_type, request.interval_s, *level)))
        .collect();
    out.push(frame(&alarm_request(alarm::XMIT_STATUS)));
    out.push(frame(&alarm_request(alarm::ENTER_DIFFMODE)));
    out
}

/// Default time without a record before the requests go out again, ms (the default `silence_alarm_s` for s5).
pub const DEFAULT_REPEAT_MS: u64 = 15_000;

/// The host side of the S/5 link: [`start_requests`] when the connection opens, and again whenever
/// `repeat_ms` pass without a good record (a monitor that restarted has forgotten them). At most one set of
/// requests waits to be written.
#[derive(Debug, Clone)]
pub struct S5Requests {
    repeat_ms: u64,
    request: PhdbRequest,
    due: u64,
    heard: bool,
    outbox: std::collections::VecDeque<Vec<u8>>,
}

impl S5Requests {
    /// `request` at once, then after `repeat_ms` without a record.
    pub fn new(repeat_ms: u64, request: PhdbRequest) -> S5Requests {
        S5Requests { repeat_ms: repeat_ms.max(1), request, due: 0, heard: false, outbox: Default::default() }
    }
}

impl Talker for S5Requests {
    fn poll(&mut self, now: u64) {
        if std::mem::take(&mut self.heard) {
            self.due = now.saturating_add(self.repeat_ms);
        }
        if now >= self.due {
            self.outbox = start_requests(self.request).into();
            self.due = now.saturating_add(self.repeat_ms);
        }
    }

    fn take_outgoing(&mut self, _now: u64) -> Option<Vec<u8>> {
        self.outbox.pop_front()
    }

    fn next_due(&self, now: u64) -> u64 {
        if self.outbox.is_empty() {
            self.due
        } else {
            now
        }
    }
}

fn i16_at(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes([*b.get(at)?, *b.get(at + 1)?, *b.get(at + 2)?, *b.get(at + 3)?]))
}

fn malformed(what: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(format!("s5: {}", what.into()))
}

/// The record header's fields that decoding uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// `r_time` as a timestamp (`None` for 0).
    pub time: Option<Timestamp>,
    /// `r_maintype`.
    pub maintype: i16,
    /// (`sr_offset`, `sr_type`) up to the end-of-list marker.
    pub subrecords: Vec<(usize, u8)>,
    /// `r_len`: the record's length, header included (the frame may be longer).
    pub len: usize,
}

/// Parses and checks a record header against the frame's length (which may exceed `r_len`, not fall short of it).
pub fn parse_header(record: &[u8]) -> Result<Header, DecodeError> {
    if record.len() < HEADER_LEN {
        return Err(malformed(format!("record of {} bytes is shorter than its header", record.len())));
    }
    let r_len = i16_at(record, 0).unwrap_or(0);
    // `r_len` counts the header; a frame may carry padding after the record, never less than it claims.
    let Some(len) = usize::try_from(r_len).ok().filter(|l| (HEADER_LEN..=record.len()).contains(l)) else {
        return Err(malformed(format!("r_len {r_len} but the frame has {} bytes", record.len())));
    };
    let record = &record[..len];
    let time = u32_at(record, 6).filter(|t| *t != 0).and_then(|t| DateTime::from_timestamp(i64::from(t), 0));
    let maintype = i16_at(record, 14).unwrap_or(-1);
    let mut subrecords = Vec::new();
    for i in 0..MAX_SUBRECORDS {
        let at = 16 + 3 * i;
        let ty = record[at + 2];
        if ty == END_OF_LIST {
            break;
        }
        let offset = i16_at(record, at).unwrap_or(-1);
        let offset = usize::try_from(offset).map_err(|_| malformed(format!("sub-record {i} offset {offset}")))?;
        if HEADER_LEN + offset > record.len() {
            return Err(malformed(format!("sub-record {i} offset {offset} beyond the record")));
        }
        subrecords.push((offset, ty));
    }
    Ok(Header { time, maintype, subrecords, len })
}

/// The bytes of sub-record `i`: from its offset to the next sub-record's (or the end of the record).
fn subrecord<'a>(record: &'a [u8], header: &Header, i: usize) -> &'a [u8] {
    let data = &record[HEADER_LEN..];
    let start = header.subrecords[i].0;
    let end = header.subrecords.get(i + 1).map_or(data.len(), |(o, _)| *o).clamp(start, data.len());
    &data[start..end]
}

/// Decodes one unescaped record (without its checksum). `last_nibp` is the last NIBP triple reported, updated
/// when a new one is reported.
pub fn parse_record(record: &[u8], last_nibp: &mut Option<[i16; 3]>) -> Result<Frame, DecodeError> {
    let header = parse_header(record)?;
    let record = &record[..header.len];
    let mut frame = Frame { device_time: header.time, ..Frame::default() };
    match header.maintype {
        maintype::PHDB => {
            // Several sub-records (e.g. trends): the last basic-class one is the latest.
            let mut basic = None;
            for (i, (_, ty)) in header.subrecords.iter().enumerate() {
                if !matches!(*ty, phdb::DISPLAYED | phdb::TREND_10S | phdb::TREND_60S) {
                    continue;
                }
                let sr = subrecord(record, &header, i);
                if sr.len() < phdb::SUBRECORD_LEN {
                    return Err(malformed(format!("physiological sub-record of {} bytes (expected 278)", sr.len())));
                }
                let class = (u16_at(sr, phdb::CLASS_WORD_AT).unwrap_or(0) >> 8) & 0x0F;
                if class == phdb::CLASS_BASIC {
                    basic = Some(sr);
                }
            }
            if let Some(sr) = basic {
                let time = u32_at(sr, 0).filter(|t| *t != 0).and_then(|t| DateTime::from_timestamp(i64::from(t), 0));
                frame.device_time = time.or(frame.device_time);
                frame.measurements = basic_measurements(&sr[phdb::CLASS_AT..phdb::CLASS_AT + 270], last_nibp);
            }
        }
        maintype::ALARM => {
            if let Some(i) = header.subrecords.iter().position(|(_, ty)| *ty == alarm::STATUS) {
                let sr = subrecord(record, &header, i);
                if sr.len() < alarm::MESSAGE_LEN - 10 {
                    return Err(malformed(format!("alarm message of {} bytes (expected 510)", sr.len())));
                }
                frame.device_alarms = Some(alarms(sr));
            }
        }
        // Waveforms, network and other records: valid frames that carry nothing Vigil reads.
        _ => {}
    }
    Ok(frame)
}

/// A raw value: `None` for the "no data" sentinels.
fn value(raw: i16, scale: f64) -> Option<f64> {
    (raw > DATA_INVALID_LIMIT).then(|| f64::from(raw) * scale)
}

fn reading(parameter: Parameter, value: Option<f64>, doubtful: bool, spot: bool) -> Measurement {
    let status = match value {
        None => ValueStatus::Unavailable,
        Some(_) if doubtful => ValueStatus::Questionable,
        Some(_) => ValueStatus::Valid,
    };
    Measurement { parameter, value, status, observed: None, device_limits: None, spot }
}

/// The group's status word when the measurement exists and is active.
fn live_group(class: &[u8], at: usize) -> Option<u32> {
    let s = u32_at(class, at)?;
    (s & (status::EXISTS | status::ACTIVE) == status::EXISTS | status::ACTIVE).then_some(s)
}

fn basic_measurements(class: &[u8], last_nibp: &mut Option<[i16; 3]>) -> Vec<Measurement> {
    let raw = |at: usize| i16_at(class, at).unwrap_or(i16::MIN);
    let mut out = Vec::new();
    let ecg = live_group(class, phdb::ECG_AT);
    if let Some(s) = ecg {
        let doubtful = s & (status::ECG_NOISE | status::ECG_ARTEFACT | status::ECG_LEARNING) != 0;
        out.push(reading(Parameter::Hr, value(raw(phdb::ECG_AT + 6), 1.0), doubtful, false));
    }
    if live_group(class, phdb::SPO2_AT).is_some() {
        out.push(reading(Parameter::Spo2, value(raw(phdb::SPO2_AT + 6), 0.01), false, false));
        out.push(reading(Parameter::Pr, value(raw(phdb::SPO2_AT + 8), 1.0), false, false));
    }
    let co2_rr = live_group(class, phdb::CO2_AT).and_then(|_| value(raw(phdb::CO2_AT + 10), 1.0));
    let imp_rr = ecg.and_then(|_| value(raw(phdb::ECG_AT + 14), 1.0));
    if co2_rr.is_some() || imp_rr.is_some() {
        out.push(reading(Parameter::Rr, co2_rr.or(imp_rr), false, false));
    }
    if live_group(class, phdb::NIBP_AT).is_some() {
        let triple = [raw(phdb::NIBP_AT + 6), raw(phdb::NIBP_AT + 8), raw(phdb::NIBP_AT + 10)];
        let complete = triple.iter().all(|r| *r > DATA_INVALID_LIMIT);
        if complete && *last_nibp != Some(triple) {
            *last_nibp = Some(triple);
            for (parameter, r) in [Parameter::NibpSys, Parameter::NibpDia, Parameter::NibpMean].into_iter().zip(triple)
            {
                out.push(reading(parameter, value(r, 0.01), false, false));
            }
            if let Some(pr) = value(raw(phdb::NIBP_AT + 12), 1.0) {
                out.push(reading(Parameter::Pr, Some(pr), false, true));
            }
        }
    }
    out
}

fn alarms(msg: &[u8]) -> Vec<DeviceAlarm> {
    (0..alarm::SLOTS)
        .filter_map(|i| {
            let slot = msg.get(alarm::FIRST_SLOT_AT + i * alarm::SLOT_LEN..)?;
            let text = slot.get(..alarm::TEXT_LEN)?;
            let text = &text[..text.iter().position(|b| *b == 0).unwrap_or(text.len())];
            // ISO 8859-1: every byte is the character of the same number.
            let text: String = text.iter().map(|b| char::from(*b)).collect();
            let text = text.trim();
            if text.is_empty() {
                return None;
            }
            let color = i16_at(slot, alarm::TEXT_LEN + 2).unwrap_or(0);
            let priority = match color {
                3 => DeviceAlarmPriority::High,
                2 => DeviceAlarmPriority::Medium,
                1 => DeviceAlarmPriority::Low,
                _ => DeviceAlarmPriority::Info,
            };
            Some(alarm_from_text(text, priority))
        })
        .collect()
}

/// A device alarm from its S/5 text. The parameter is the one the text starts with (`SpO2 LOW` → SpO2, `HR HIGH`
/// → HR, `NIBP …` → NIBP systolic, `RR`/`RESP`/`APNEA` → RR, `PR`/`PULSE` → PR); the alarm is technical when the
/// text names an equipment condition (probe, sensor, leads, cuff, cable, "off", "check", "no …", "replace").
/// The key is the text itself: it is what the monitor shows, and the same alarm keeps the same text.
pub fn alarm_from_text(text: &str, priority: DeviceAlarmPriority) -> DeviceAlarm {
    let upper = text.to_ascii_uppercase();
    let first = upper.split_whitespace().next().unwrap_or("");
    let parameter = match first {
        "SPO2" => Some(Parameter::Spo2),
        "HR" => Some(Parameter::Hr),
        "NIBP" => Some(Parameter::NibpSys),
        "RR" | "RESP" | "APNEA" => Some(Parameter::Rr),
        "PR" | "PULSE" => Some(Parameter::Pr),
        _ => None,
    };
    const TECHNICAL: [&str; 10] =
        ["PROBE", "SENSOR", "LEADS", "LEAD", "CUFF", "CABLE", "OFF", "CHECK", "NO", "REPLACE"];
    let technical = upper.split_whitespace().any(|w| TECHNICAL.contains(&w));
    // The text comes from an 80-byte field: at most 80 characters, so it needs no further bound.
    let text = text.to_owned();
    DeviceAlarm { key: text.clone(), priority, technical, text, parameter }
}

/// Streaming DRI decoder: finds `7E`-delimited frames, unescapes, checks the checksum and decodes the record.
/// Bytes before the first flag are reported once as [`DecodeError::Malformed`], bytes between two frames as one
/// malformed frame (their checksum fails); a frame over [`MAX_RECORD`]
/// bytes is dropped as [`DecodeError::TooLong`] without being buffered; the buffer never holds more than one
/// frame.
#[derive(Debug, Clone, Default)]
pub struct S5Decoder {
    in_frame: bool,
    escape: bool,
    dropping: bool,
    garbage: usize,
    record: Vec<u8>,
    last_nibp: Option<[i16; 3]>,
    talker: Option<S5Requests>,
}

impl S5Decoder {
    /// A decoder that only listens (captures, replay).
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder for a live link: it also asks for the records `request` names ([`S5Requests`]).
    pub fn talking(repeat_ms: u64, request: PhdbRequest) -> Self {
        S5Decoder { talker: Some(S5Requests::new(repeat_ms, request)), ..Self::default() }
    }

    /// Whether this decoder asks for the records (a live link).
    pub fn talks(&self) -> bool {
        self.talker.is_some()
    }

    /// The requests, on a live link.
    pub fn talker_mut(&mut self) -> Option<&mut S5Requests> {
        self.talker.as_mut()
    }

    fn finish(&mut self) -> Result<Frame, DecodeError> {
        let mut record = std::mem::take(&mut self.record);
        let Some(sum) = record.pop() else { return Err(malformed("empty frame")) };
        if self.escape {
            self.escape = false;
            return Err(malformed("frame ends inside an escape"));
        }
        if checksum(&record) != sum {
            return Err(malformed(format!("checksum {sum:#04x}, computed {:#04x}", checksum(&record))));
        }
        let frame = parse_record(&record, &mut self.last_nibp)?;
        if let Some(t) = self.talker.as_mut() {
            t.heard = true;
        }
        Ok(frame)
    }
}

impl Decoder for S5Decoder {
    type Item = Result<Frame, DecodeError>;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        let mut used = 0;
        let mut item = None;
        for &b in buf.iter() {
            used += 1;
            if !self.in_frame {
                if b == FLAG {
                    self.in_frame = true;
                    self.escape = false;
                    self.dropping = false;
                    self.record.clear();
                    if self.garbage > 0 {
                        let n = std::mem::take(&mut self.garbage);
                        item = Some(Err(malformed(format!("{n} bytes outside a frame"))));
                        break;
                    }
                } else {
                    self.garbage += 1;
                }
                continue;
            }
            if b == FLAG {
                // Every flag closes what came before it and opens the next frame, so a frame cut short by the
                // next one's start flag costs only itself, and bytes between frames are one bad frame.
                if std::mem::take(&mut self.dropping) || self.record.is_empty() {
                    self.record.clear();
                    self.escape = false;
                    continue;
                }
                item = Some(self.finish());
                break;
            }
            if self.dropping {
                continue;
            }
            let b = if std::mem::take(&mut self.escape) {
                b ^ ESCAPE_XOR
            } else if b == ESCAPE {
                self.escape = true;
                continue;
            } else {
                b
            };
            // The record plus its checksum byte.
            if self.record.len() > MAX_RECORD {
                let n = self.record.len();
                self.record.clear();
                self.dropping = true;
                item = Some(Err(DecodeError::TooLong(n + 1)));
                break;
            }
            self.record.push(b);
        }
        buf.advance(used);
        Ok(item)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        if self.garbage > 0 {
            let n = std::mem::take(&mut self.garbage);
            return Ok(Some(Err(malformed(format!("{n} bytes outside a frame")))));
        }
        if self.in_frame && !self.record.is_empty() && !self.dropping {
            let n = self.record.len();
            self.record.clear();
            return Ok(Some(Err(malformed(format!("stream ended inside a frame ({n} bytes)")))));
        }
        Ok(None)
    }
}

/// Builds records the way an S/5 does: for tests, replay fixtures and benchmarks (the simulator has its own
/// encoder, so round-trip tests compare two implementations).
pub mod build {
    use super::*;

    /// One basic-class group: status word and the i16 values after its header.
    pub fn group(class: &mut [u8], at: usize, status: u32, values: &[i16]) {
        class[at..at + 4].copy_from_slice(&status.to_le_bytes());
        for (i, v) in values.iter().enumerate() {
            class[at + 6 + 2 * i..at + 8 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
    }

    /// A basic class with every group absent (status 0, values `DATA_INVALID`).
    pub fn empty_class() -> Vec<u8> {
        let mut class = vec![0u8; 270];
        for at in (0..268).step_by(2) {
            class[at..at + 2].copy_from_slice(&(-32767i16).to_le_bytes());
        }
        for at in [0, 16, 30, 44, 58, 72, 86, 94, 102, 110, 118, 132, 146, 156, 166, 178, 200, 214, 232, 240, 254] {
            class[at..at + 6].fill(0);
        }
        class
    }

    /// A physiological record with one displayed-values sub-record of `class` at Unix time `time`.
    pub fn phdb_record(time: u32, sr_type: u8, class: &[u8]) -> Vec<u8> {
        let mut sr = time.to_le_bytes().to_vec();
        sr.extend_from_slice(class);
        sr.extend([0, 0]);
        sr.extend((phdb::CLASS_BASIC << 8 | u16::from(sr_type)).to_le_bytes());
        record(time, maintype::PHDB, &[(sr_type, sr)])
    }

    /// An alarm status record with up to 5 (text, colour) alarms.
    pub fn alarm_record(time: u32, shown: &[(&str, i16)]) -> Vec<u8> {
        let mut msg = vec![0u8; alarm::MESSAGE_LEN];
        for (i, (text, color)) in shown.iter().take(alarm::SLOTS).enumerate() {
            let at = alarm::FIRST_SLOT_AT + i * alarm::SLOT_LEN;
            let t = text.as_bytes();
            let n = t.len().min(alarm::TEXT_LEN - 1);
            msg[at..at + n].copy_from_slice(&t[..n]);
            msg[at + alarm::TEXT_LEN + 2..at + alarm::TEXT_LEN + 4].copy_from_slice(&color.to_le_bytes());
        }
        record(time, maintype::ALARM, &[(alarm::STATUS, msg)])
    }

    /// A record with a header and the given sub-records.
    pub fn record(time: u32, maintype: i16, subrecords: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[6..10].copy_from_slice(&time.to_le_bytes());
        h[14..16].copy_from_slice(&maintype.to_le_bytes());
        let mut data = Vec::new();
        for i in 0..MAX_SUBRECORDS {
            let at = 16 + 3 * i;
            match subrecords.get(i) {
                Some((ty, bytes)) => {
                    h[at..at + 2].copy_from_slice(&(data.len() as i16).to_le_bytes());
                    h[at + 2] = *ty;
                    data.extend_from_slice(bytes);
                }
                None => {
                    h[at + 2] = END_OF_LIST;
                    break;
                }
            }
        }
        let len = (HEADER_LEN + data.len()) as i16;
        h[0..2].copy_from_slice(&len.to_le_bytes());
        h.extend(data);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<Result<Frame, DecodeError>> {
        super::super::decode_all(S5Decoder::new(), bytes)
    }

    fn values(f: &Frame) -> Vec<(Parameter, Option<f64>, ValueStatus)> {
        f.measurements.iter().map(|m| (m.parameter, m.value, m.status)).collect()
    }

    const LIVE: u32 = status::EXISTS | status::ACTIVE;

    #[test]
    fn the_request_matches_the_bytes_pycollect_sends_apart_from_its_time_and_plug_fields() {
        // pyCollect START_PARAM_HEX: 7E 31 00 … 00 FF … 01 0A 00 08 00 00 00 00 00 BF 7E (r_time, plug id set).
        let r = phdb_request(phdb::DISPLAYED, 10, 0);
        assert_eq!(r.len(), 49);
        assert_eq!(&r[0..2], &[0x31, 0x00]);
        assert_eq!(r[21], 0xFF);
        assert_eq!(&r[40..43], &[0x01, 0x0A, 0x00]);
        let framed = frame(&r);
        assert_eq!((framed[0], framed[framed.len() - 1]), (FLAG, FLAG));
        // Their frame with its r_time/plug_id and class bits: the checksum rule reproduces their checksum byte.
        let theirs = "31 00 00 00 e8 fd 25 04 07 67 00 00 00 00 00 00 00 00 00 00 00 ff 00 00 00 00 00 00 00 00 00 00 \
                      00 00 00 00 00 00 00 00 01 0a 00 08 00 00 00 00 00";
        let theirs: Vec<u8> = theirs.split_whitespace().map(|w| u8::from_str_radix(w, 16).unwrap()).collect();
        assert_eq!(theirs.len(), 49);
        assert_eq!(&theirs[..2], &r[..2]);
        assert_eq!(&theirs[14..22], &r[14..22], "maintype and descriptors");
        assert_eq!(checksum(&theirs), 0xBF);
    }

    #[test]
    fn the_requests_go_out_at_once_and_again_only_after_a_silence() {
        let mut d = S5Decoder::talking(10_000, PhdbRequest::default());
        let t = d.talker_mut().unwrap();
        t.poll(0);
        let first: Vec<Vec<u8>> = std::iter::from_fn(|| t.take_outgoing(0)).collect();
        assert_eq!(first, start_requests(PhdbRequest::DISPLAYED));
        assert_eq!(t.next_due(0), 10_000);
        // A record at 8 s puts the next request off to 18 s.
        let mut class = empty_class();
        group(&mut class, phdb::SPO2_AT, LIVE, &[9500, 70, 0, 0]);
        let mut buf = BytesMut::from(&frame(&phdb_record(1, phdb::DISPLAYED, &class))[..]);
        assert!(d.decode(&mut buf).unwrap().unwrap().is_ok());
        let t = d.talker_mut().unwrap();
        t.poll(8_000);
        assert!(t.take_outgoing(8_000).is_none());
        t.poll(17_999);
        assert!(t.take_outgoing(17_999).is_none());
        t.poll(18_000);
        assert_eq!(std::iter::from_fn(|| t.take_outgoing(18_000)).count(), 5);
    }

    /// The record of the first request [`start_requests`] sends (the levels differ only in byte 3).
    fn first_request(request: PhdbRequest) -> Vec<u8> {
        let record = phdb_request(request.record_type, request.interval_s, REQUEST_LEVELS[0]);
        assert_eq!(start_requests(request)[0], frame(&record));
        record
    }

    #[test]
    fn a_trend_setting_asks_for_the_trend_record_type_at_its_period_and_display_stays_the_default() {
        // phdb_rcrd_type at byte 40, tx_ival (i16 LE) at 41..43.
        assert_eq!(&first_request(PhdbRequest::default())[40..43], &[phdb::DISPLAYED, 5, 0]);
        assert_eq!(&first_request(PhdbRequest::TREND_10S)[40..43], &[phdb::TREND_10S, 10, 0]);
        assert_eq!(&first_request(PhdbRequest::TREND_60S)[40..43], &[phdb::TREND_60S, 60, 0]);
        for request in [PhdbRequest::TREND_10S, PhdbRequest::TREND_60S] {
            let all = start_requests(request);
            assert_eq!(all.len(), REQUEST_LEVELS.len() + 2, "one per DRI level, then the two alarm requests");
            assert_ne!(all[0], start_requests(PhdbRequest::DISPLAYED)[0], "{request:?}");
            assert_eq!(all[REQUEST_LEVELS.len()..], start_requests(PhdbRequest::DISPLAYED)[REQUEST_LEVELS.len()..]);
        }
        // The live decoder sends the trend request it was given, at once and at every repeat.
        let mut d = S5Decoder::talking(1_000, PhdbRequest::TREND_60S);
        let t = d.talker_mut().unwrap();
        t.poll(0);
        assert_eq!(t.take_outgoing(0), Some(start_requests(PhdbRequest::TREND_60S).remove(0)));
    }

    #[test]
    fn ten_and_sixty_second_trend_records_decode_into_scaled_readings_at_the_trend_time() {
        for sr_type in [phdb::TREND_10S, phdb::TREND_60S] {
            let mut class = empty_class();
            group(&mut class, phdb::SPO2_AT, LIVE, &[9420, 88, 0, 0]);
            group(&mut class, phdb::NIBP_AT, LIVE, &[13150, 8425, 10000, -32766]);
            let record = phdb_record(1_767_254_460, sr_type, &class);
            let frames = decode_all(&frame(&record));
            assert_eq!(frames.len(), 1, "{frames:?}");
            let f = frames[0].as_ref().unwrap();
            assert_eq!(f.device_time.unwrap().to_rfc3339(), "2026-01-01T08:01:00+00:00");
            assert_eq!(
                values(f),
                vec![
                    (Parameter::Spo2, Some(94.2), ValueStatus::Valid),
                    (Parameter::Pr, Some(88.0), ValueStatus::Valid),
                    (Parameter::NibpSys, Some(131.5), ValueStatus::Valid),
                    (Parameter::NibpDia, Some(84.25), ValueStatus::Valid),
                    (Parameter::NibpMean, Some(100.0), ValueStatus::Valid),
                ],
                "sr_type {sr_type}"
            );
        }
    }

    #[test]
    fn flag_and_escape_bytes_inside_a_record_are_escaped_and_come_back() {
        let record = [0x31, 0x7E, 0x00, 0x7D, 0x5E];
        let framed = frame(&record);
        assert_eq!(&framed[1..8], &[0x31, 0x7D, 0x5E, 0x00, 0x7D, 0x5D, 0x5E]);
        assert!(!framed[1..framed.len() - 1].contains(&FLAG));
    }

    #[test]
    fn a_displayed_values_record_written_by_hand_decodes_to_scaled_values() {
        let mut class = empty_class();
        group(&mut class, phdb::ECG_AT, LIVE, &[72, 0, 0, 0, 14]);
        group(&mut class, phdb::SPO2_AT, LIVE, &[9650, 71, 0, -32767]);
        group(&mut class, phdb::NIBP_AT, LIVE, &[12000, 8000, 9333, 70]);
        // A hand-written frame: the record, its checksum, flags; the time 2026-01-01T08:00:00Z.
        let record = phdb_record(1_767_254_400, phdb::DISPLAYED, &class);
        let sum = record.iter().map(|b| u32::from(*b)).sum::<u32>() % 256;
        assert_eq!(u32::from(checksum(&record)), sum);
        let frames = decode_all(&frame(&record));
        let f = frames[0].as_ref().unwrap();
        assert_eq!(f.device_time.unwrap().to_rfc3339(), "2026-01-01T08:00:00+00:00");
        assert_eq!(
            values(f),
            vec![
                (Parameter::Hr, Some(72.0), ValueStatus::Valid),
                (Parameter::Spo2, Some(96.5), ValueStatus::Valid),
                (Parameter::Pr, Some(71.0), ValueStatus::Valid),
                (Parameter::Rr, Some(14.0), ValueStatus::Valid),
                (Parameter::NibpSys, Some(120.0), ValueStatus::Valid),
                (Parameter::NibpDia, Some(80.0), ValueStatus::Valid),
                (Parameter::NibpMean, Some(93.33), ValueStatus::Valid),
                (Parameter::Pr, Some(70.0), ValueStatus::Valid),
            ]
        );
        assert!(f.measurements.last().unwrap().spot);
    }

    #[test]
    fn every_no_data_sentinel_is_no_value_and_absent_groups_report_nothing() {
        for sentinel in [-32767i16, -32766, -32765, -32764, -32763, -32762] {
            let mut class = empty_class();
            group(&mut class, phdb::SPO2_AT, LIVE, &[sentinel, sentinel, 0, 0]);
            let f = parse_record(&phdb_record(1, phdb::DISPLAYED, &class), &mut None).unwrap();
            assert_eq!(
                values(&f),
                vec![
                    (Parameter::Spo2, None, ValueStatus::Unavailable),
                    (Parameter::Pr, None, ValueStatus::Unavailable)
                ],
                "sentinel {sentinel}"
            );
        }
        let mut class = empty_class();
        group(&mut class, phdb::ECG_AT, status::EXISTS, &[72, 0, 0, 0, 14]);
        let f = parse_record(&phdb_record(1, phdb::TREND_10S, &class), &mut None).unwrap();
        assert!(f.measurements.is_empty(), "an inactive ECG gives no heart rate: {f:?}");
    }

    #[test]
    fn ecg_noise_makes_the_heart_rate_questionable_and_a_repeated_nibp_is_reported_once() {
        let mut class = empty_class();
        group(&mut class, phdb::ECG_AT, LIVE | status::ECG_ARTEFACT, &[130, 0, 0, 0, -32767]);
        group(&mut class, phdb::NIBP_AT, LIVE, &[11000, 7000, 8333, -32767]);
        let mut last = None;
        let f = parse_record(&phdb_record(1, phdb::DISPLAYED, &class), &mut last).unwrap();
        assert_eq!(f.measurements[0].status, ValueStatus::Questionable);
        assert_eq!(f.measurements.iter().filter(|m| m.parameter == Parameter::NibpSys).count(), 1);
        let again = parse_record(&phdb_record(6, phdb::DISPLAYED, &class), &mut last).unwrap();
        assert!(again.measurements.iter().all(|m| m.parameter == Parameter::Hr), "{again:?}");
    }

    #[test]
    fn an_alarm_record_gives_the_complete_list_with_priorities_and_parameters() {
        let record = alarm_record(1, &[("SpO2 LOW", 2), ("ECG LEADS OFF", 1), ("APNEA", 3)]);
        let f = parse_record(&record, &mut None).unwrap();
        let list = f.device_alarms.unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(
            (list[0].text.as_str(), list[0].priority, list[0].parameter, list[0].technical),
            ("SpO2 LOW", DeviceAlarmPriority::Medium, Some(Parameter::Spo2), false)
        );
        assert!(list[1].technical && list[1].priority == DeviceAlarmPriority::Low);
        assert_eq!((list[2].priority, list[2].parameter), (DeviceAlarmPriority::High, Some(Parameter::Rr)));
        let none = parse_record(&alarm_record(2, &[]), &mut None).unwrap();
        assert_eq!(none.device_alarms, Some(vec![]), "no alarm shown is an empty list, not silence");
    }

    #[test]
    fn garbage_bad_checksums_and_truncated_frames_are_reported_and_the_next_frame_decodes() {
        let mut class = empty_class();
        group(&mut class, phdb::SPO2_AT, LIVE, &[9100, 88, 0, 0]);
        let good = frame(&phdb_record(1, phdb::DISPLAYED, &class));
        let mut bad = good.clone();
        bad[50] ^= 0x01;
        let mut bytes = vec![0x01, 0x02, 0x03];
        bytes.extend(&bad);
        bytes.extend(&good[..100]); // cut off by the next frame's start
        bytes.extend(&good);
        bytes.extend(&good[..60]); // the stream ends mid-frame
        let items = decode_all(&bytes);
        let oks: Vec<_> = items.iter().filter_map(|i| i.as_ref().ok()).collect();
        assert_eq!(oks.len(), 1, "{items:?}");
        assert_eq!(oks[0].measurements[0].value, Some(91.0));
        assert!(items.len() >= 4, "garbage, checksum, truncation and the end are each reported: {items:?}");
    }

    #[test]
    fn a_frame_longer_than_its_record_is_read_to_r_len_and_a_shorter_one_is_malformed() {
        let mut class = empty_class();
        group(&mut class, phdb::SPO2_AT, LIVE, &[9700, 64, 0, 0]);
        let record = phdb_record(1, phdb::DISPLAYED, &class);
        let mut padded = record.clone();
        padded.extend([0, 0, 0]);
        let f = parse_record(&padded, &mut None).unwrap();
        assert_eq!(f.measurements[0].value, Some(97.0));
        let cut = &record[..record.len() - 1];
        assert!(matches!(parse_record(cut, &mut None), Err(DecodeError::Malformed(m)) if m.contains("r_len")));
    }

    #[test]
    fn an_endless_frame_is_dropped_at_the_size_limit_without_growing_the_buffer() {
        let mut d = S5Decoder::new();
        let mut buf = BytesMut::from(&[FLAG][..]);
        buf.extend(std::iter::repeat_n(0x41u8, 5000));
        let mut too_long = 0;
        while let Some(item) = d.decode(&mut buf).unwrap() {
            too_long += usize::from(matches!(item, Err(DecodeError::TooLong(_))));
        }
        assert_eq!(too_long, 1);
        assert!(d.record.len() <= MAX_RECORD + 1);
        buf.extend([FLAG]);
        assert!(d.decode(&mut buf).unwrap().is_none(), "the dropped frame's end is not a second error");
    }
}
