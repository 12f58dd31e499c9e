//! Philips IntelliVue Data Export (MP20–MP90, MX series): the MIB/RS-232 framing, the remote-operation messages
//! Vigil sends and the monitor's answers, decoded from the monitor → host direction alone so that a captured
//! stream replays. Pure: bytes in, [`Pdu`]s and [`Frame`]s out; the session (what to send when) is in
//! [`session`], with time as an argument. Sources of every fact: `docs/sources.md`, "Philips IntelliVue".
//!
//! **Link.** MIB/RS-232 at 115200 8N1: a frame is `C0`, a 4-byte header (`11` protocol id, `01` message type,
//! big-endian length of the user data), the user data, the FCS-16 of header and user data (RFC 1662, sent as
//! the one's complement, low byte first), `C1`. Between the flags, `C0`, `C1` and `7D` are sent as `7D` and the
//! byte XOR `20`. The LAN interface (UDP port 24105) carries the same user data in one datagram, unframed.
//!
//! **Messages.** Every number is big-endian. Session PDUs start with their type byte: `0D` association request,
//! `0E` accept, `0C` refuse, `09` release request, `0A` release response, `19` abort. Data PDUs start with the
//! session header `E1 00 00 02`, then a remote-operation header (`ro_type`, length): `1` invoke (an event report
//! such as *MDS Create*), `2` result, `5` linked result (a result split over several messages), `3` error.
//! Results of `CMD_CONFIRMED_ACTION` with `NOM_ACT_POLL_MDIB_DATA(_EXT)` carry the polled objects: a list of
//! naming contexts, each a list of objects (handle + attribute list), each attribute an id, a length and a
//! value.
//!
//! **Numerics** (object class `NOM_MOC_VMO_METRIC_NU`, 6): `NOM_ATTR_NU_VAL_OBS` (0x0950) holds physio id,
//! measurement state, unit code and a FLOAT-Type (8-bit signed exponent, 24-bit signed mantissa; the mantissas
//! 0x7FFFFF NaN, 0x800000 NRes, ±(2²³−2) ±INF and 0x800001 mean "no value"); `NOM_ATTR_NU_CMPD_VAL_OBS`
//! (0x094B) is a list of them (NIBP systolic, diastolic, mean). The MDC code of a physio id is
//! `(2 << 16) + physio id` (partition SCADA). Measurement-state bits map to [`ValueStatus`]: invalid,
//! unavailable or calibrating → unavailable; questionable or test data → questionable; demo data → demo.
//!
//! **Alarms** (object class `NOM_MOC_VMO_AL_MON`, 54): `NOM_ATTR_AL_MON_P_AL_LIST` (0x0902, patient alarms) and
//! `NOM_ATTR_AL_MON_T_AL_LIST` (0x0904, technical alarms, "INOPs") are lists of entries: alert source (a physio
//! id), alert code (an event such as `NOM_EVT_LO`), alert type (its priority), alert state, the object that
//! raised it, and an info structure; `STR_ALMON_INFO` (516) carries the text the monitor shows, a `String`
//! of UTF-16BE characters. Priorities map onto IEC 60601-1-8: `HI_PRI_*` high, `MED_PRI_*` medium, `LOW_PRI_*`
//! low, `NO_ALERT` info (a prompt). Each list is the complete current set; [`IntelliVueDecoder`] reports the
//! union of the latest two as [`Frame::device_alarms`].

pub mod capture;
pub mod session;

use bytes::{Buf, BytesMut};
use chrono::{NaiveDate, TimeZone, Utc};
use tokio_util::codec::Decoder;

use super::{DecodeError, DeviceAlarm, DeviceAlarmPriority, Frame, Measurement, OtherNumeric};
use crate::vitals::{Parameter, Timestamp, ValueStatus};

/// Start of a MIB/RS-232 frame.
pub const BOF: u8 = 0xC0;
/// End of a MIB/RS-232 frame.
pub const EOF: u8 = 0xC1;
/// Escape: the next byte is sent XOR [`ESCAPE_XOR`].
pub const ESC: u8 = 0x7D;
/// What an escaped byte is XORed with.
pub const ESCAPE_XOR: u8 = 0x20;
/// The frame header's protocol id (Data Export).
pub const PROTOCOL_ID: u8 = 0x11;
/// The frame header's message type (Data Export message).
pub const MSG_TYPE: u8 = 0x01;
/// Longest user data Vigil accepts in one frame or datagram (the monitor's own limit is below 2 KiB; polls of a
/// fully equipped MP90 stay far below this).
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// The LAN interface's data port.
pub const LAN_DATA_PORT: u16 = 24105;
/// The LAN interface's connect-indication port (broadcast by the monitor).
pub const LAN_CONNECT_PORT: u16 = 24005;

/// Session PDU types (first byte of the user data).
pub mod spdu {
    /// Association request (host → monitor).
    pub const CONNECT: u8 = 0x0D;
    /// Association accepted.
    pub const ACCEPT: u8 = 0x0E;
    /// Association refused.
    pub const REFUSE: u8 = 0x0C;
    /// Release request.
    pub const FINISH: u8 = 0x09;
    /// Release response.
    pub const DISCONNECT: u8 = 0x0A;
    /// Abort.
    pub const ABORT: u8 = 0x19;
    /// Data (the first byte of the `E1 00 00 02` session header).
    pub const DATA: u8 = 0xE1;
}

/// Remote-operation PDU types.
pub mod ro {
    /// Invoke.
    pub const INVOKE: u16 = 1;
    /// Result.
    pub const RESULT: u16 = 2;
    /// Error.
    pub const ERROR: u16 = 3;
    /// Linked result (one of several messages of one result).
    pub const LINKED_RESULT: u16 = 5;
}

/// Remote-operation commands.
pub mod cmd {
    /// Event report, no reply wanted.
    pub const EVENT_REPORT: u16 = 0;
    /// Event report to be confirmed.
    pub const CONFIRMED_EVENT_REPORT: u16 = 1;
    /// Get.
    pub const GET: u16 = 3;
    /// Confirmed action (polls).
    pub const CONFIRMED_ACTION: u16 = 7;
}

/// Nomenclature codes used here.
pub mod nom {
    /// Object class: medical device system (the MDS that implements Data Export).
    pub const MOC_VMS_MDS: u16 = 33;
    /// Object class: numeric.
    pub const MOC_VMO_METRIC_NU: u16 = 6;
    /// Object class: alert monitor.
    pub const MOC_VMO_AL_MON: u16 = 54;
    /// Nomenclature partition of object classes.
    pub const PART_OBJ: u16 = 1;
    /// Event: MDS created (the monitor's first message after the association).
    pub const NOTI_MDS_CREAT: u16 = 0x0D06;
    /// Event: connect indication (LAN broadcast).
    pub const NOTI_CONN_INDIC: u16 = 0x0D17;
    /// Action: single poll.
    pub const ACT_POLL_MDIB_DATA: u16 = 0x0C16;
    /// Action: extended poll.
    pub const ACT_POLL_MDIB_DATA_EXT: u16 = 0xF13B;
    /// Attribute: numeric observed value.
    pub const ATTR_NU_VAL_OBS: u16 = 0x0950;
    /// Attribute: compound numeric observed value.
    pub const ATTR_NU_CMPD_VAL_OBS: u16 = 0x094B;
    /// Attribute: absolute time stamp.
    pub const ATTR_TIME_STAMP_ABS: u16 = 0x0990;
    /// Attribute: relative time stamp (an object's, in 1/8 ms of the monitor's relative clock).
    pub const ATTR_TIME_STAMP_REL: u16 = 0x0991;
    /// Attribute: the MDS's absolute date and time (in the MDS Create event).
    pub const ATTR_TIME_ABS: u16 = 0x0987;
    /// Attribute: the MDS's relative time at that moment (in the MDS Create event).
    pub const ATTR_TIME_REL: u16 = 0x098F;
    /// Attribute: the monitor's network address (connect indication): MAC, IPv4 address, subnet mask.
    pub const ATTR_NET_ADDR_INFO: u16 = 0xF100;
    /// Attribute: the protocols the monitor offers (connect indication), each with its port.
    pub const ATTR_PCOL_SUPPORT: u16 = 0xF101;
    /// Attribute: patient alarm list.
    pub const ATTR_AL_MON_P_AL_LIST: u16 = 0x0902;
    /// Attribute: technical alarm list.
    pub const ATTR_AL_MON_T_AL_LIST: u16 = 0x0904;
    /// Attribute: the poll period of an extended poll.
    pub const ATTR_TIME_PD_POLL: u16 = 0xF13E;
    /// Attribute group: all of the alert monitor.
    pub const ATTR_GRP_AL_MON: u16 = 0x0801;
    /// Attribute group: metric observed values.
    pub const ATTR_GRP_METRIC_VAL_OBS: u16 = 0x0803;
    /// Attribute group: MDS system production data (the keep-alive poll).
    pub const ATTR_GRP_SYS_PROD: u16 = 0x080C;
    /// Alert info: generic.
    pub const GEN_ALMON_INFO: u16 = 513;
    /// Alert info: generic plus the alert text.
    pub const STR_ALMON_INFO: u16 = 516;
}

/// Physio ids (SCADA partition) Vigil maps onto its parameters.
pub mod physio {
    /// ECG heart rate.
    pub const ECG_CARD_BEAT_RATE: u16 = 0x4182;
    /// Pulse rate from the pleth (SpO2), as IntelliVue monitors label it.
    pub const PLETH_PULS_RATE: u16 = 0x4822;
    /// Pulse rate from the oximeter (`MDC_PULS_OXIM_PULS_RATE`).
    pub const PULS_OXIM_PULS_RATE: u16 = 0x481A;
    /// Pulse rate, source not named (`NOM_PULS_RATE`, in VSCaptureMP's and OpenICE's physio id lists).
    pub const PULS_RATE: u16 = 0x480A;
    /// NIBP (the compound object).
    pub const PRESS_BLD_NONINV: u16 = 0x4A04;
    /// NIBP systolic.
    pub const PRESS_BLD_NONINV_SYS: u16 = 0x4A05;
    /// NIBP diastolic.
    pub const PRESS_BLD_NONINV_DIA: u16 = 0x4A06;
    /// NIBP mean.
    pub const PRESS_BLD_NONINV_MEAN: u16 = 0x4A07;
    /// SpO2.
    pub const PULS_OXIM_SAT_O2: u16 = 0x4BB8;
    /// Perfusion indicator of the SpO2 probe (`NOM_PULS_OXIM_PERF_REL`, "Perf" on the screen).
    pub const PULS_OXIM_PERF_REL: u16 = 0x4BB0;
    /// Respiration rate (impedance).
    pub const RESP_RATE: u16 = 0x500A;
    /// Airway respiration rate (CO2).
    pub const AWAY_RESP_RATE: u16 = 0x5012;
}

/// Unit codes (dimension partition).
pub mod unit {
    /// No dimension (`NOM_DIM_DIMLESS`): the unit IntelliVue gives its perfusion indicator.
    pub const DIMLESS: u16 = 0x0200;
    /// Percent.
    pub const PERCENT: u16 = 0x0220;
    /// Beats per minute.
    pub const BEAT_PER_MIN: u16 = 0x0AA0;
    /// Breaths per minute.
    pub const RESP_PER_MIN: u16 = 0x0AE0;
    /// mmHg.
    pub const MMHG: u16 = 0x0F20;
    /// kPa.
    pub const KILO_PASCAL: u16 = 0x0F03;
}

/// Measurement state bits.
pub mod msmt {
    /// The value is meaningless.
    pub const INVALID: u16 = 0x8000;
    /// The value may be wrong.
    pub const QUESTIONABLE: u16 = 0x4000;
    /// No value.
    pub const UNAVAILABLE: u16 = 0x2000;
    /// Calibration running.
    pub const CALIBRATION_ONGOING: u16 = 0x1000;
    /// Test data.
    pub const TEST_DATA: u16 = 0x0800;
    /// Demo data.
    pub const DEMO_DATA: u16 = 0x0400;
}

/// Alert types (priority and kind).
pub mod alert_type {
    /// No alert (a prompt).
    pub const NO_ALERT: u16 = 0;
    /// Low-priority technical.
    pub const LOW_PRI_T_AL: u16 = 1;
    /// Medium-priority technical.
    pub const MED_PRI_T_AL: u16 = 2;
    /// High-priority technical.
    pub const HI_PRI_T_AL: u16 = 4;
    /// Low-priority patient.
    pub const LOW_PRI_P_AL: u16 = 256;
    /// Medium-priority patient.
    pub const MED_PRI_P_AL: u16 = 512;
    /// High-priority patient.
    pub const HI_PRI_P_AL: u16 = 1024;
}

/// Alert state bits.
pub mod alert_state {
    /// Inhibited (alarms off for it).
    pub const INHIBITED: u16 = 0x8000;
    /// Suspended (alarms paused).
    pub const SUSPENDED: u16 = 0x4000;
    /// Latched: the condition ended, the monitor still shows it.
    pub const LATCHED: u16 = 0x2000;
    /// Silenced and reset.
    pub const SILENCED_RESET: u16 = 0x1000;
    /// Newly raised.
    pub const NEW_ALERT: u16 = 0x0008;
}

/// Event codes the text of an alert without a string is made from.
pub mod evt {
    /// Low limit.
    pub const LO: u16 = 62;
    /// High limit.
    pub const HI: u16 = 40;
    /// Disconnected.
    pub const DISCONN: u16 = 22;
    /// Unavailable.
    pub const UNAVAIL: u16 = 110;
    /// Sustained / "extreme" (Philips: `NOM_EVT_SUST`).
    pub const SUST: u16 = 106;
}

// ---------------------------------------------------------------------------------------------------------
// Framing

/// FCS-16 of RFC 1662 over `data`, as transmitted (one's complement), to be written low byte first.
pub fn fcs16(data: &[u8]) -> u16 {
    let mut fcs: u16 = 0xFFFF;
    for &b in data {
        fcs ^= u16::from(b);
        for _ in 0..8 {
            fcs = if fcs & 1 != 0 { (fcs >> 1) ^ 0x8408 } else { fcs >> 1 };
        }
    }
    !fcs
}

/// `payload` as one MIB/RS-232 frame: flags, header, escaping and FCS.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    let mut body = Vec::with_capacity(payload.len() + 6);
    body.extend_from_slice(&[PROTOCOL_ID, MSG_TYPE]);
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(payload);
    let fcs = fcs16(&body);
    body.extend_from_slice(&fcs.to_le_bytes());
    let mut out = Vec::with_capacity(body.len() + 8);
    out.push(BOF);
    for b in body {
        if matches!(b, BOF | EOF | ESC) {
            out.extend_from_slice(&[ESC, b ^ ESCAPE_XOR]);
        } else {
            out.push(b);
        }
    }
    out.push(EOF);
    out
}

/// Finds MIB/RS-232 frames in a byte stream and checks them. Bytes outside a frame, a frame cut short by the
/// next `C0`, a bad escape, a wrong header, length or checksum, and a frame over [`MAX_PAYLOAD`] are errors;
/// the search goes on after each.
#[derive(Debug, Default)]
pub struct Deframer {
    body: Vec<u8>,
    in_frame: bool,
    escaped: bool,
    overlong: bool,
    garbage: usize,
}

impl Deframer {
    /// A fresh deframer.
    pub fn new() -> Deframer {
        Deframer::default()
    }

    /// The next frame's user data (or an error) from `buf`, consuming what it looked at; `None` when `buf`
    /// holds no complete frame yet.
    pub fn next(&mut self, buf: &mut BytesMut) -> Option<Result<Vec<u8>, DecodeError>> {
        let mut used = 0;
        let mut result = None;
        for &b in buf.iter() {
            used += 1;
            if !self.in_frame {
                if b == BOF {
                    self.in_frame = true;
                    self.body.clear();
                    self.escaped = false;
                    self.overlong = false;
                    if self.garbage > 0 {
                        let n = std::mem::take(&mut self.garbage);
                        result = Some(Err(DecodeError::Malformed(format!("intellivue: {n} bytes outside a frame"))));
                        break;
                    }
                } else {
                    self.garbage += 1;
                }
                continue;
            }
            match b {
                BOF => {
                    // A new frame starts inside this one: this one was cut short.
                    self.body.clear();
                    self.escaped = false;
                    self.overlong = false;
                    result = Some(Err(DecodeError::Malformed("intellivue: frame cut short by the next C0".into())));
                    break;
                }
                EOF => {
                    self.in_frame = false;
                    result = Some(self.finish());
                    break;
                }
                ESC => self.escaped = true,
                _ => {
                    let b = if std::mem::take(&mut self.escaped) { b ^ ESCAPE_XOR } else { b };
                    if self.body.len() < MAX_PAYLOAD + 6 {
                        self.body.push(b);
                    } else {
                        self.overlong = true;
                    }
                }
            }
        }
        buf.advance(used);
        result
    }

    /// At the end of the stream: what is left is an error if anything.
    pub fn finish_stream(&mut self) -> Option<DecodeError> {
        let partial = self.in_frame && !self.body.is_empty();
        let garbage = std::mem::take(&mut self.garbage);
        self.in_frame = false;
        self.body.clear();
        if partial {
            Some(DecodeError::Malformed("intellivue: stream ended inside a frame".into()))
        } else if garbage > 0 {
            Some(DecodeError::Malformed(format!("intellivue: {garbage} bytes outside a frame")))
        } else {
            None
        }
    }

    fn finish(&mut self) -> Result<Vec<u8>, DecodeError> {
        let body = std::mem::take(&mut self.body);
        if self.overlong {
            return Err(DecodeError::TooLong(body.len()));
        }
        if self.escaped {
            return Err(DecodeError::Malformed("intellivue: escape before C1".into()));
        }
        if body.len() < 6 {
            return Err(DecodeError::Malformed(format!("intellivue: frame of {} bytes is too short", body.len())));
        }
        let (data, fcs) = body.split_at(body.len() - 2);
        let sent = u16::from_le_bytes([fcs[0], fcs[1]]);
        let computed = fcs16(data);
        if sent != computed {
            return Err(DecodeError::Malformed(format!(
                "intellivue: checksum {sent:04X} but the frame gives {computed:04X}"
            )));
        }
        if data[0] != PROTOCOL_ID || data[1] != MSG_TYPE {
            return Err(DecodeError::Malformed(format!(
                "intellivue: header {:02X} {:02X} is not 11 01",
                data[0], data[1]
            )));
        }
        let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        if len != data.len() - 4 {
            return Err(DecodeError::Malformed(format!(
                "intellivue: header says {len} bytes of user data, the frame has {}",
                data.len() - 4
            )));
        }
        Ok(data[4..].to_vec())
    }
}

// ---------------------------------------------------------------------------------------------------------
// Reading

/// A bounds-checked big-endian reader: every short read is a [`DecodeError`], never a panic.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    data: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `data`; `what` names it in errors.
    pub fn new(data: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { data, what }
    }

    fn short(&self, need: usize) -> DecodeError {
        DecodeError::Malformed(format!("intellivue: {} cut short ({} of {need} bytes)", self.what, self.data.len()))
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.data.len() < n {
            return Err(self.short(n));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    /// A reader over the next `n` bytes, named `what`.
    pub fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        Ok(Reader { data: self.take(n)?, what })
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.data.len()
    }

    /// `count` / `length` header of a list, and a reader over its `length` bytes.
    fn list(&mut self, what: &'static str) -> Result<(u16, Reader<'a>), DecodeError> {
        let count = self.u16()?;
        let length = self.u16()?;
        Ok((count, self.sub(usize::from(length), what)?))
    }
}

// ---------------------------------------------------------------------------------------------------------
// What the monitor sends

/// A FLOAT-Type value: `Some` number, or `None` for NaN, NRes, ±INF and the reserved mantissa.
pub fn float_value(raw: u32) -> Option<f64> {
    let mantissa = (raw & 0x00FF_FFFF) as i32;
    // +INF 0x7FFFFE, NaN 0x7FFFFF, NRes 0x800000, reserved 0x800001, -INF 0x800002.
    if (0x7F_FFFE..=0x80_0002).contains(&mantissa) {
        return None;
    }
    let exponent = i32::from((raw >> 24) as u8 as i8);
    let mantissa = (mantissa << 8) >> 8;
    Some(f64::from(mantissa) * 10f64.powi(exponent))
}

/// The FLOAT-Type for `value` with `decimals` digits after the point (at most 24-bit mantissa), for the
/// simulator-side tests and golden frames.
pub fn float_type(value: f64, decimals: u8) -> u32 {
    let mantissa = (value * 10f64.powi(i32::from(decimals))).round() as i32;
    let exponent = (-(i32::from(decimals))) as i8 as u8;
    (u32::from(exponent) << 24) | (mantissa as u32 & 0x00FF_FFFF)
}

/// The MDC code of a physio id: `(2 << 16) + id` (partition SCADA).
pub const fn mdc_code(physio_id: u16) -> u32 {
    (2 << 16) + physio_id as u32
}

/// The MDC code of a unit code: `(4 << 16) + unit` (partition dimension).
pub const fn unit_mdc_code(unit: u16) -> u32 {
    (4 << 16) + unit as u32
}

/// Most numerics that are none of Vigil's parameters kept from one poll result (an MP90 with every module shows
/// a few dozen).
pub const MAX_OTHER_NUMERICS: usize = 64;

/// Vigil's parameter for a physio id, if it is one.
pub fn parameter_of(physio_id: u16) -> Option<Parameter> {
    use physio::*;
    Some(match physio_id {
        PULS_OXIM_SAT_O2 => Parameter::Spo2,
        PLETH_PULS_RATE | PULS_OXIM_PULS_RATE | PULS_RATE => Parameter::Pr,
        ECG_CARD_BEAT_RATE => Parameter::Hr,
        PRESS_BLD_NONINV_SYS => Parameter::NibpSys,
        PRESS_BLD_NONINV_DIA => Parameter::NibpDia,
        PRESS_BLD_NONINV_MEAN => Parameter::NibpMean,
        RESP_RATE | AWAY_RESP_RATE => Parameter::Rr,
        PULS_OXIM_PERF_REL => Parameter::Pi,
        _ => return None,
    })
}

/// The status a measurement state gives a value.
pub fn status_of(state: u16) -> ValueStatus {
    if state & (msmt::INVALID | msmt::UNAVAILABLE | msmt::CALIBRATION_ONGOING) != 0 {
        ValueStatus::Unavailable
    } else if state & msmt::DEMO_DATA != 0 {
        ValueStatus::Demo
    } else if state & (msmt::QUESTIONABLE | msmt::TEST_DATA) != 0 {
        ValueStatus::Questionable
    } else {
        ValueStatus::Valid
    }
}

/// One numeric value as the monitor reported it (every numeric, mapped to a [`Parameter`] or not).
#[derive(Debug, Clone, PartialEq)]
pub struct Numeric {
    /// The object's handle.
    pub handle: u16,
    /// Physio id.
    pub physio_id: u16,
    /// Measurement state bits.
    pub state: u16,
    /// Unit code.
    pub unit: u16,
    /// The value, `None` for the FLOAT-Type's "no value" codes.
    pub value: Option<f64>,
    /// The object's absolute time stamp, if it carried one (or, from its relative time stamp, the time
    /// [`DeviceClock`] worked out).
    pub time: Option<Timestamp>,
    /// The object's relative time stamp (1/8 ms), if it carried one.
    pub relative_time: Option<u32>,
}

impl Numeric {
    /// Its MDC code.
    pub fn mdc(&self) -> u32 {
        mdc_code(self.physio_id)
    }

    /// Status from the measurement state (and "unavailable" for no value).
    pub fn status(&self) -> ValueStatus {
        if self.value.is_none() {
            ValueStatus::Unavailable
        } else {
            status_of(self.state)
        }
    }

    /// As it was sent, for a numeric that is not a [`Measurement`]: kept, never alarmed on.
    pub fn other(&self) -> OtherNumeric {
        OtherNumeric {
            mdc_code: self.mdc(),
            unit_code: unit_mdc_code(self.unit),
            value: self.value.filter(|_| self.status() != ValueStatus::Unavailable),
            status: self.status(),
        }
    }

    /// Vigil's parameter and the value in its unit, when the physio id is one of ours in a unit we know.
    pub fn measurement(&self) -> Option<Measurement> {
        let parameter = parameter_of(self.physio_id)?;
        let factor = match (parameter, self.unit) {
            (Parameter::Spo2, unit::PERCENT) => 1.0,
            // The perfusion indicator is sent without a dimension, on the percent scale of a perfusion index.
            (Parameter::Pi, unit::PERCENT | unit::DIMLESS) => 1.0,
            (Parameter::Hr | Parameter::Pr, unit::BEAT_PER_MIN) => 1.0,
            (Parameter::Rr, unit::RESP_PER_MIN) => 1.0,
            (Parameter::NibpSys | Parameter::NibpDia | Parameter::NibpMean, unit::MMHG) => 1.0,
            // 1 kPa = 7.50062 mmHg.
            (Parameter::NibpSys | Parameter::NibpDia | Parameter::NibpMean, unit::KILO_PASCAL) => 7.500_62,
            _ => return None,
        };
        let status = self.status();
        // A perfusion index of 0 is the probe off or searching, never a measured value.
        let value = self
            .value
            .filter(|v| status != ValueStatus::Unavailable && !(parameter == Parameter::Pi && *v <= 0.0))
            .map(|v| v * factor);
        let status = if value.is_none() { ValueStatus::Unavailable } else { status };
        Some(Measurement {
            parameter,
            value,
            status,
            observed: self.time.filter(|_| parameter.is_nibp()),
            device_limits: None,
            spot: false,
        })
    }
}

/// One entry of an alert list.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// What it is about (a physio id, or an object class when the low bit says so).
    pub source: u16,
    /// What happened (an event code).
    pub code: u16,
    /// Priority and kind ([`alert_type`]).
    pub alert_type: u16,
    /// State bits ([`alert_state`]).
    pub state: u16,
    /// Handle of the object that raised it.
    pub object_handle: u16,
    /// The monitor's text, when it sent one.
    pub text: Option<String>,
    /// From the technical list.
    pub technical: bool,
}

/// Longest alert text kept, in characters.
pub const MAX_ALERT_TEXT: usize = 80;

impl Alert {
    /// The priority on IEC 60601-1-8's scale.
    pub fn priority(&self) -> DeviceAlarmPriority {
        use alert_type::*;
        match self.alert_type {
            HI_PRI_T_AL | HI_PRI_P_AL => DeviceAlarmPriority::High,
            MED_PRI_T_AL | MED_PRI_P_AL => DeviceAlarmPriority::Medium,
            LOW_PRI_T_AL | LOW_PRI_P_AL => DeviceAlarmPriority::Low,
            _ => DeviceAlarmPriority::Info,
        }
    }

    /// The state in words: `inhibited`, `suspended`, `latched` or `active`.
    pub fn state_name(&self) -> &'static str {
        if self.state & alert_state::INHIBITED != 0 {
            "inhibited"
        } else if self.state & alert_state::SUSPENDED != 0 {
            "suspended"
        } else if self.state & alert_state::LATCHED != 0 {
            "latched"
        } else {
            "active"
        }
    }

    /// The parameter the alert is about, where the source is one of Vigil's.
    pub fn parameter(&self) -> Option<Parameter> {
        match self.source {
            physio::PRESS_BLD_NONINV => Some(Parameter::NibpSys),
            id => parameter_of(id),
        }
    }

    /// The text to show: the monitor's own, or one made from the source and the event.
    pub fn display_text(&self) -> String {
        if let Some(t) = self.text.as_deref().filter(|t| !t.is_empty()) {
            return t.to_owned();
        }
        let what = match self.parameter() {
            Some(Parameter::Spo2) => "SpO2".to_owned(),
            Some(Parameter::Pr) => "Pulse".to_owned(),
            Some(Parameter::Hr) => "HR".to_owned(),
            Some(Parameter::Rr) => "RR".to_owned(),
            Some(_) => "NBP".to_owned(),
            None => format!("source 0x{:04X}", self.source),
        };
        let event = match self.code {
            evt::LO => "low".to_owned(),
            evt::HI => "high".to_owned(),
            evt::DISCONN => "disconnected".to_owned(),
            evt::UNAVAIL => "unavailable".to_owned(),
            evt::SUST => "extreme".to_owned(),
            c => format!("alert {c}"),
        };
        format!("{what} {event}")
    }

    /// As a [`DeviceAlarm`]: keyed by source, code and object, which stay the same while the alert lasts.
    pub fn device_alarm(&self) -> DeviceAlarm {
        DeviceAlarm {
            key: format!(
                "{}:{:04x}:{:04x}:{:04x}",
                if self.technical { "t" } else { "p" },
                self.source,
                self.code,
                self.object_handle
            ),
            priority: self.priority(),
            technical: self.technical,
            text: self.display_text(),
            parameter: self.parameter(),
        }
    }
}

/// A poll result: the numerics or the alert lists of the polled objects.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PollResult {
    /// The poll number the request carried.
    pub poll_number: u16,
    /// The polled object class.
    pub object_class: u16,
    /// The monitor's absolute time of the poll, if set (or the time [`DeviceClock`] worked out from the
    /// relative time: several monitors leave the absolute time unset).
    pub time: Option<Timestamp>,
    /// The monitor's relative time of the poll, in 1/8 ms.
    pub relative_time: u32,
    /// Every numeric found.
    pub numerics: Vec<Numeric>,
    /// The patient alarm list, if the result carried one.
    pub patient_alarms: Option<Vec<Alert>>,
    /// The technical alarm list, if the result carried one.
    pub technical_alarms: Option<Vec<Alert>>,
}

/// One message from the monitor (or, in a capture of both directions, from the host).
#[derive(Debug, Clone, PartialEq)]
pub enum Pdu {
    /// The host's association request (seen in a capture of both directions).
    AssociationRequest,
    /// The monitor accepted the association.
    AssociationAccepted,
    /// The monitor refused it.
    AssociationRefused,
    /// A release request.
    ReleaseRequest,
    /// A release response.
    ReleaseResponse,
    /// The association was aborted.
    Abort,
    /// MDS Create event report: answer it, then poll.
    MdsCreate {
        /// Its invoke id, for the result.
        invoke_id: u16,
        /// The MDS's absolute and relative time at the event, when it carried both.
        clock: Option<ClockPoint>,
    },
    /// Connect indication (LAN broadcast).
    ConnectIndication,
    /// A poll result (or one part of a linked result).
    Poll(PollResult),
    /// A remote-operation error.
    Error {
        /// The invoke id it answers.
        invoke_id: u16,
        /// The error value.
        error: u16,
    },
    /// Any other well-formed data message (a request of the host in a capture, a Get result, …).
    Other,
}

/// Parses one message's user data.
pub fn parse_pdu(data: &[u8]) -> Result<Pdu, DecodeError> {
    let mut r = Reader::new(data, "message");
    match r.u8()? {
        spdu::CONNECT => Ok(Pdu::AssociationRequest),
        spdu::ACCEPT => Ok(Pdu::AssociationAccepted),
        spdu::REFUSE => Ok(Pdu::AssociationRefused),
        spdu::FINISH => Ok(Pdu::ReleaseRequest),
        spdu::DISCONNECT => Ok(Pdu::ReleaseResponse),
        spdu::ABORT => Ok(Pdu::Abort),
        spdu::DATA => parse_data(r),
        other => Err(DecodeError::Malformed(format!("intellivue: unknown message type {other:02X}"))),
    }
}

fn parse_data(mut r: Reader<'_>) -> Result<Pdu, DecodeError> {
    // Rest of the session header (E1 00 00 02): a presentation context id.
    r.take(3)?;
    let ro_type = r.u16()?;
    let ro_len = r.u16()?;
    let mut r = r.sub(usize::from(ro_len), "remote operation")?;
    match ro_type {
        ro::INVOKE => {
            let invoke_id = r.u16()?;
            let command = r.u16()?;
            let len = r.u16()?;
            let mut r = r.sub(usize::from(len), "invoke")?;
            if !matches!(command, cmd::EVENT_REPORT | cmd::CONFIRMED_EVENT_REPORT) {
                return Ok(Pdu::Other);
            }
            r.take(6)?; // managed object
            r.u32()?; // event time
            match r.u16()? {
                // A quirk in the MDS attributes must not cost the association: without them only the clock
                // is missing.
                nom::NOTI_MDS_CREAT => Ok(Pdu::MdsCreate { invoke_id, clock: mds_clock(&mut r).ok().flatten() }),
                nom::NOTI_CONN_INDIC => Ok(Pdu::ConnectIndication),
                _ => Ok(Pdu::Other),
            }
        }
        ro::RESULT => parse_result(r),
        ro::LINKED_RESULT => {
            r.u8()?; // state: first, not first not last, last
            r.u8()?; // count
            parse_result(r)
        }
        ro::ERROR => {
            let invoke_id = r.u16()?;
            let error = r.u16()?;
            Ok(Pdu::Error { invoke_id, error })
        }
        other => Err(DecodeError::Malformed(format!("intellivue: unknown remote operation type {other}"))),
    }
}

fn parse_result(mut r: Reader<'_>) -> Result<Pdu, DecodeError> {
    r.u16()?; // invoke id
    let command = r.u16()?;
    let len = r.u16()?;
    let mut r = r.sub(usize::from(len), "result")?;
    if command != cmd::CONFIRMED_ACTION {
        return Ok(Pdu::Other);
    }
    r.take(6)?; // managed object
    let action = r.u16()?;
    let len = r.u16()?;
    let mut r = r.sub(usize::from(len), "action result")?;
    let extended = match action {
        nom::ACT_POLL_MDIB_DATA_EXT => true,
        nom::ACT_POLL_MDIB_DATA => false,
        _ => return Ok(Pdu::Other),
    };
    let poll_number = r.u16()?;
    if extended {
        r.u16()?; // sequence number
    }
    let relative_time = r.u32()?;
    let time = absolute_time(r.take(8)?);
    r.u16()?; // partition
    let object_class = r.u16()?;
    r.u16()?; // attribute group
    let mut result = PollResult { poll_number, object_class, time, relative_time, ..PollResult::default() };
    let (contexts, mut list) = r.list("poll info list")?;
    for _ in 0..contexts {
        r_context(&mut list, &mut result)?;
    }
    Ok(Pdu::Poll(result))
}

fn r_context(r: &mut Reader<'_>, out: &mut PollResult) -> Result<(), DecodeError> {
    r.u16()?; // context id
    let (objects, mut list) = r.list("context poll")?;
    for _ in 0..objects {
        let handle = list.u16()?;
        let (attributes, mut attrs) = list.list("attribute list")?;
        let mut time = None;
        let mut relative_time = None;
        let first = out.numerics.len();
        for _ in 0..attributes {
            let id = attrs.u16()?;
            let len = attrs.u16()?;
            let mut value = attrs.sub(usize::from(len), "attribute")?;
            match id {
                nom::ATTR_NU_VAL_OBS => out.numerics.push(numeric(handle, &mut value)?),
                nom::ATTR_NU_CMPD_VAL_OBS => {
                    let (count, mut values) = value.list("compound value")?;
                    for _ in 0..count {
                        out.numerics.push(numeric(handle, &mut values)?);
                    }
                }
                nom::ATTR_TIME_STAMP_ABS => time = absolute_time(value.take(8)?),
                nom::ATTR_TIME_STAMP_REL => relative_time = Some(value.u32()?),
                nom::ATTR_AL_MON_P_AL_LIST => out.patient_alarms = Some(alerts(&mut value, false)?),
                nom::ATTR_AL_MON_T_AL_LIST => out.technical_alarms = Some(alerts(&mut value, true)?),
                _ => {}
            }
        }
        for n in &mut out.numerics[first..] {
            n.time = time;
            n.relative_time = relative_time;
        }
    }
    Ok(())
}

fn numeric(handle: u16, r: &mut Reader<'_>) -> Result<Numeric, DecodeError> {
    let physio_id = r.u16()?;
    let state = r.u16()?;
    let unit = r.u16()?;
    let value = float_value(r.u32()?);
    Ok(Numeric { handle, physio_id, state, unit, value, time: None, relative_time: None })
}

fn alerts(r: &mut Reader<'_>, technical: bool) -> Result<Vec<Alert>, DecodeError> {
    let (count, mut list) = r.list("alert list")?;
    let mut out = Vec::with_capacity(usize::from(count).min(64));
    for _ in 0..count {
        let source = list.u16()?;
        let code = list.u16()?;
        let alert_type = list.u16()?;
        let state = list.u16()?;
        list.u16()?; // object class
        list.u16()?; // object context
        let object_handle = list.u16()?;
        let info_id = list.u16()?;
        let len = list.u16()?;
        let mut info = list.sub(usize::from(len), "alert info")?;
        let mut text = None;
        if info_id == nom::STR_ALMON_INFO {
            info.u16()?; // instance number
            info.u32()?; // text id
            info.u16()?; // priority
            info.u16()?; // flags
            let n = info.u16()?;
            text = Some(utf16_text(info.take(usize::from(n))?));
        }
        out.push(Alert { source, code, alert_type, state, object_handle, text, technical });
    }
    Ok(out)
}

/// An IntelliVue `String`: UTF-16BE, padded with NULs; bounded to [`MAX_ALERT_TEXT`] characters, trimmed. NULs
/// and other control characters are left out wherever they are (as OpenICE reads it), not taken as the end.
fn utf16_text(bytes: &[u8]) -> String {
    let units = bytes.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
    let text: String = char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .filter(|c| !c.is_control())
        .take(MAX_ALERT_TEXT)
        .collect();
    text.trim().to_owned()
}

fn bcd(b: u8) -> Option<u32> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    (hi < 10 && lo < 10).then_some(u32::from(hi) * 10 + u32::from(lo))
}

/// An `AbsoluteTime` (BCD century, year, month, day, hour, minute, second, hundredths), `None` when unset or
/// not a date.
pub fn absolute_time(b: &[u8]) -> Option<Timestamp> {
    let [c, y, mo, d, h, mi, s, f] = <[u8; 8]>::try_from(b).ok()?;
    let year = bcd(c)? * 100 + bcd(y)?;
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, bcd(mo)?, bcd(d)?)?;
    let time = date.and_hms_milli_opt(bcd(h)?, bcd(mi)?, bcd(s)?, bcd(f).unwrap_or(0) * 10)?;
    Utc.from_local_datetime(&time).single()
}

/// `t` as an `AbsoluteTime`.
pub fn absolute_time_bytes(t: Timestamp) -> [u8; 8] {
    use chrono::{Datelike, Timelike};
    let to_bcd = |v: u32| (((v / 10) % 10) << 4 | (v % 10)) as u8;
    let year = u32::try_from(t.year()).unwrap_or(0);
    [
        to_bcd(year / 100),
        to_bcd(year % 100),
        to_bcd(t.month()),
        to_bcd(t.day()),
        to_bcd(t.hour()),
        to_bcd(t.minute()),
        to_bcd(t.second()),
        to_bcd(t.timestamp_subsec_millis() / 10),
    ]
}

/// One moment on both of the monitor's clocks: its relative time (1/8 ms since it started) and the absolute
/// date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockPoint {
    /// Relative time, 1/8 ms.
    pub relative: u32,
    /// Absolute time.
    pub absolute: Timestamp,
}

/// The MDS Create event's clock: `NOM_ATTR_TIME_ABS` and `NOM_ATTR_TIME_REL` of its attribute list
/// (`MdsCreateInfo`: the MDS object, then the list), read as VSCaptureMP does.
fn mds_clock(r: &mut Reader<'_>) -> Result<Option<ClockPoint>, DecodeError> {
    r.u16()?; // event info length
    r.take(6)?; // the MDS object
    let (count, mut attrs) = r.list("MDS attribute list")?;
    let (mut absolute, mut relative) = (None, None);
    for _ in 0..count {
        let id = attrs.u16()?;
        let len = attrs.u16()?;
        let mut value = attrs.sub(usize::from(len), "attribute")?;
        match id {
            nom::ATTR_TIME_ABS => absolute = absolute_time(value.take(8)?),
            nom::ATTR_TIME_REL => relative = Some(value.u32()?),
            _ => {}
        }
    }
    Ok(absolute.zip(relative).map(|(absolute, relative)| ClockPoint { relative, absolute }))
}

/// The monitor's clock as a capture or a session tells it: VSCaptureMP's observation that several monitors
/// leave a poll result's absolute time unset, so the time of a result (and of an object's relative time stamp)
/// is worked out from the last moment known on both clocks (the MDS Create event, or a result that carried both)
/// plus the relative time since, in 1/8 ms.
#[derive(Debug, Clone, Default)]
pub struct DeviceClock {
    base: Option<ClockPoint>,
}

impl DeviceClock {
    /// A clock that knows no moment yet.
    pub fn new() -> DeviceClock {
        DeviceClock::default()
    }

    /// The absolute time of relative time `relative`, if a moment is known (differences up to ±3 days, the
    /// relative clock's wrap included).
    pub fn at(&self, relative: u32) -> Option<Timestamp> {
        let base = self.base?;
        let ticks = i64::from(relative.wrapping_sub(base.relative) as i32);
        Some(base.absolute + chrono::TimeDelta::microseconds(ticks * 125))
    }

    /// Learns from `pdu` and fills in the times it lacks.
    pub fn observe(&mut self, pdu: &mut Pdu) {
        match pdu {
            // A new association may be a restarted monitor: its relative clock started again.
            Pdu::AssociationAccepted | Pdu::Abort => self.base = None,
            Pdu::MdsCreate { clock: Some(point), .. } => self.base = Some(*point),
            Pdu::Poll(p) => {
                match p.time {
                    Some(absolute) => self.base = Some(ClockPoint { relative: p.relative_time, absolute }),
                    None => p.time = self.at(p.relative_time),
                }
                for n in &mut p.numerics {
                    if n.time.is_none() {
                        n.time = n.relative_time.and_then(|r| self.at(r));
                    }
                }
            }
            _ => {}
        }
    }
}

/// What a monitor's connect indication (UDP broadcast to port [`LAN_CONNECT_PORT`]) says: where it takes
/// associations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectIndication {
    /// The monitor's IPv4 address (`NOM_ATTR_NET_ADDR_INFO`), if it sent one.
    pub ip: Option<std::net::Ipv4Addr>,
    /// The UDP port of its Data Export protocol (`NOM_ATTR_PCOL_SUPPORT`, application protocol `AP_ID_DATA_OUT`
    /// over UDP), if it offers one.
    pub data_port: Option<u16>,
}

/// `AP_ID_DATA_OUT`: the Data Export application protocol in `NOM_ATTR_PCOL_SUPPORT`.
const AP_ID_DATA_OUT: u16 = 5;
/// `TP_ID_UDP`: UDP transport in `NOM_ATTR_PCOL_SUPPORT`.
const TP_ID_UDP: u16 = 1;

/// Parses a connect indication: the nomenclature version (`00 00`, major, minor), then a remote-operation
/// invoke holding an event report (`NOM_NOTI_CONN_INDIC`) whose information is an attribute list. Laid out as
/// OpenICE's IntelliVue adapter reads it.
pub fn parse_connect_indication(data: &[u8]) -> Result<ConnectIndication, DecodeError> {
    let mut r = Reader::new(data, "connect indication");
    if r.u16()? != 0 {
        return Err(DecodeError::Malformed("intellivue: connect indication without the 00 00 nomenclature".into()));
    }
    r.u16()?; // major, minor version
    if r.u16()? != ro::INVOKE {
        return Err(DecodeError::Malformed("intellivue: connect indication is not an invoke".into()));
    }
    let len = r.u16()?;
    let mut r = r.sub(usize::from(len), "remote operation")?;
    r.u16()?; // invoke id
    r.u16()?; // command
    let len = r.u16()?;
    let mut r = r.sub(usize::from(len), "event report")?;
    r.take(6)?; // managed object
    r.u32()?; // event time
    let event = r.u16()?;
    if event != nom::NOTI_CONN_INDIC {
        return Err(DecodeError::Malformed(format!("intellivue: event {event:04X} is not a connect indication")));
    }
    let len = r.u16()?;
    let mut r = r.sub(usize::from(len), "connect indication information")?;
    let (count, mut attrs) = r.list("attribute list")?;
    let mut out = ConnectIndication { ip: None, data_port: None };
    for _ in 0..count {
        let id = attrs.u16()?;
        let len = attrs.u16()?;
        let mut value = attrs.sub(usize::from(len), "attribute")?;
        match id {
            nom::ATTR_NET_ADDR_INFO => {
                value.take(6)?; // MAC address
                let ip = value.take(4)?;
                out.ip = Some(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]));
            }
            nom::ATTR_PCOL_SUPPORT => {
                let (entries, mut list) = value.list("protocol support")?;
                for _ in 0..entries {
                    let (application, transport, port) = (list.u16()?, list.u16()?, list.u16()?);
                    list.u16()?; // options
                    if application == AP_ID_DATA_OUT && transport == TP_ID_UDP && out.data_port.is_none() {
                        out.data_port = Some(port);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------
// What the host sends

/// The data session header.
const DATA_HEADER: [u8; 4] = [0xE1, 0x00, 0x00, 0x02];

fn data_message(ro_type: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&DATA_HEADER);
    out.extend_from_slice(&ro_type.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn be(parts: &[u16]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.to_be_bytes()).collect()
}

/// The MDS Create event result: the host's answer to [`Pdu::MdsCreate`].
pub fn mds_create_result(invoke_id: u16) -> Vec<u8> {
    // RORS (invoke id, CMD_CONFIRMED_EVENT_REPORT, length), EventReportResult (MDS object, current time 0,
    // event type, no reply data).
    let mut body = be(&[invoke_id, cmd::CONFIRMED_EVENT_REPORT, 14, nom::MOC_VMS_MDS, 0, 0]);
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&be(&[nom::NOTI_MDS_CREAT, 0]));
    data_message(ro::RESULT, &body)
}

/// An extended poll request for every object of `object_class`, attribute group `attr_group` (0: all).
pub fn poll_request(invoke_id: u16, poll_number: u16, object_class: u16, attr_group: u16) -> Vec<u8> {
    // PollMdibDataReqExt: poll number, polled object type, attribute group, no extra attributes.
    let request = be(&[poll_number, nom::PART_OBJ, object_class, attr_group, 0, 0]);
    action(invoke_id, nom::ACT_POLL_MDIB_DATA_EXT, &request)
}

/// A single poll of the MDS's production data: a request the monitor always answers, sent as keep-alive.
pub fn keep_alive(invoke_id: u16, poll_number: u16) -> Vec<u8> {
    let request = be(&[poll_number, nom::PART_OBJ, nom::MOC_VMS_MDS, nom::ATTR_GRP_SYS_PROD]);
    action(invoke_id, nom::ACT_POLL_MDIB_DATA, &request)
}

fn action(invoke_id: u16, action_type: u16, request: &[u8]) -> Vec<u8> {
    // ActionArgument: MDS object, scope 0, action type, length; inside a ROIV CMD_CONFIRMED_ACTION.
    let mut arg = be(&[nom::MOC_VMS_MDS, 0, 0]);
    arg.extend_from_slice(&0u32.to_be_bytes());
    arg.extend_from_slice(&be(&[action_type, request.len() as u16]));
    arg.extend_from_slice(request);
    let mut body = be(&[invoke_id, cmd::CONFIRMED_ACTION, arg.len() as u16]);
    body.extend_from_slice(&arg);
    data_message(ro::INVOKE, &body)
}

/// The session-layer fixed part of an association request (connect SPDU parameters), per the Data Export
/// guide's "Association Request" message.
const AARQ_SESSION: [u8; 14] = [0x05, 0x08, 0x13, 0x01, 0x00, 0x16, 0x01, 0x02, 0x80, 0x00, 0x14, 0x02, 0x00, 0x02];
/// The presentation and ACSE layers of the association request up to the user data (BER, indefinite lengths;
/// the application context and abstract syntax object ids of Data Export).
#[rustfmt::skip]
const AARQ_PRESENTATION: [u8; 131] = [
    0x31, 0x80, 0xA0, 0x80, 0x80, 0x01, 0x01, 0x00, 0x00, 0xA2, 0x80, 0xA0, 0x03, 0x00, 0x00, 0x01, 0xA4, 0x80, 0x30,
    0x80, 0x02, 0x01, 0x01, 0x06, 0x04, 0x52, 0x01, 0x00, 0x01, 0x30, 0x80, 0x06, 0x02, 0x51, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x30, 0x80, 0x02, 0x01, 0x02, 0x06, 0x0C, 0x2A, 0x86, 0x48, 0xCE, 0x14, 0x02, 0x01, 0x00, 0x00, 0x00, 0x01,
    0x01, 0x30, 0x80, 0x06, 0x0C, 0x2A, 0x86, 0x48, 0xCE, 0x14, 0x02, 0x01, 0x00, 0x00, 0x00, 0x02, 0x01, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x61, 0x80, 0x30, 0x80, 0x02, 0x01, 0x01, 0xA0, 0x80, 0x60, 0x80, 0xA1, 0x80, 0x06, 0x0C,
    0x2A, 0x86, 0x48, 0xCE, 0x14, 0x02, 0x01, 0x00, 0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0xBE, 0x80, 0x28, 0x80, 0x06,
    0x0C, 0x2A, 0x86, 0x48, 0xCE, 0x14, 0x02, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x01, 0x02, 0x81,
];
/// End-of-contents octets closing the indefinite lengths opened after the user data's tag.
const AARQ_CLOSE: usize = 16;

/// Poll profile options Vigil asks for: real-time (1 s) numerics and enumerations.
const POLL_EXT_OPTIONS: u32 = 0x8000_0000 | 0x0400_0000;

/// The association request: Data Export, poll profile with the extended poll for 1 s numerics.
pub fn association_request() -> Vec<u8> {
    // MDSEUserInfoStd: protocol version, nomenclature version, functional units, system type, startup mode,
    // option list (empty), supported application profiles: the poll profile with its extension.
    let mut user = Vec::new();
    for v in [0x8000_0000u32, 0x4000_0000, 0, 0x8000_0000, 0x2000_0000] {
        user.extend_from_slice(&v.to_be_bytes());
    }
    user.extend_from_slice(&be(&[0, 0]));
    let mut ext = be(&[0xF001, 8]); // NOM_ATTR_POLL_PROFILE_EXT
    ext.extend_from_slice(&POLL_EXT_OPTIONS.to_be_bytes());
    ext.extend_from_slice(&be(&[0, 0]));
    let mut support = Vec::new();
    // Revision, min poll period (1/8 ms: 312.5 ms), max MTU rx and tx, max bandwidth, options (dynamic objects).
    for v in [0x8000_0000u32, 2500, 2500, 1000, 0xFFFF_FFFF, 0x6000_0000] {
        support.extend_from_slice(&v.to_be_bytes());
    }
    support.extend_from_slice(&be(&[1, ext.len() as u16]));
    support.extend_from_slice(&ext);
    let mut profiles = be(&[0x0001, support.len() as u16]); // NOM_POLL_PROFILE_SUPPORT
    profiles.extend_from_slice(&support);
    user.extend_from_slice(&be(&[1, profiles.len() as u16]));
    user.extend_from_slice(&profiles);

    let mut pres = AARQ_PRESENTATION.to_vec();
    pres.push(user.len() as u8);
    pres.extend_from_slice(&user);
    pres.extend_from_slice(&[0; AARQ_CLOSE]);
    let mut out = vec![spdu::CONNECT];
    push_li(&mut out, AARQ_SESSION.len() + 2 + pres.len() + usize::from(pres.len() >= 255) * 2);
    out.extend_from_slice(&AARQ_SESSION);
    out.push(0xC1); // user data parameter
    push_li(&mut out, pres.len());
    out.extend_from_slice(&pres);
    out
}

/// A session length indicator: one byte below 255, else `FF` and a big-endian u16.
fn push_li(out: &mut Vec<u8>, len: usize) {
    if len < 255 {
        out.push(len as u8);
    } else {
        out.push(0xFF);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
}

/// The release request.
pub fn release_request() -> Vec<u8> {
    let mut out = vec![spdu::FINISH, 0x18, 0xC1, 0x16, 0x61, 0x80, 0x30, 0x80, 0x02, 0x01, 0x01, 0xA0, 0x80, 0x62];
    out.extend_from_slice(&[0x80, 0x80, 0x01, 0x00]);
    out.extend_from_slice(&[0; 8]);
    out
}

/// The release response (to a monitor's release request).
pub fn release_response() -> Vec<u8> {
    let mut out = release_request();
    out[0] = spdu::DISCONNECT;
    out[13] = 0x63;
    out
}

// ---------------------------------------------------------------------------------------------------------
// The decoder

/// One NIBP value as last reported: parameter, value, measurement time.
type NibpSeen = (Parameter, Option<f64>, Option<Timestamp>);

/// The Data Export decoder over the MIB/RS-232 byte stream (or, with [`IntelliVueDecoder::decode_payload`],
/// over LAN datagrams). Yields a [`Frame`] per poll result; the session messages in between drive its
/// [`session::Session`] when it has one (a live link), and are skipped when it has none (a capture).
#[derive(Debug, Default)]
pub struct IntelliVueDecoder {
    deframer: Deframer,
    /// LAN: the byte stream is datagrams one after the other, unframed; each message's own length splits them.
    lan: bool,
    session: Option<session::Session>,
    patient: Vec<DeviceAlarm>,
    technical: Vec<DeviceAlarm>,
    /// The last NIBP values reported, so the same measurement polled again every second is not a new one.
    last_nibp: Option<Vec<NibpSeen>>,
    /// The monitor's clock, for results without an absolute time.
    clock: DeviceClock,
}

impl IntelliVueDecoder {
    /// A decoder that only listens (captures, replay, `vigil decode`).
    pub fn new() -> IntelliVueDecoder {
        IntelliVueDecoder::default()
    }

    /// A decoder that talks: it associates with the monitor and polls it ([`session::Session`]).
    pub fn with_session(link: session::Link) -> IntelliVueDecoder {
        IntelliVueDecoder {
            session: Some(session::Session::new(link)),
            lan: link == session::Link::Lan,
            ..IntelliVueDecoder::default()
        }
    }

    /// The next LAN message from `buf` (datagrams back to back, as [`crate::ingest::udp`] delivers them, or as
    /// a capture of datagram payloads holds them), split by the message's own length. Anything else drops what is
    /// buffered: UDP keeps no order to resync on.
    pub fn next_lan(buf: &mut BytesMut) -> Option<Result<Vec<u8>, DecodeError>> {
        let need = match *buf.first()? {
            spdu::DATA if buf.len() < 8 => return None,
            spdu::DATA => 8 + usize::from(u16::from_be_bytes([buf[6], buf[7]])),
            spdu::CONNECT | spdu::ACCEPT | spdu::REFUSE | spdu::FINISH | spdu::DISCONNECT | spdu::ABORT => {
                match buf.get(1) {
                    None => return None,
                    Some(0xFF) if buf.len() < 4 => return None,
                    Some(0xFF) => 4 + usize::from(u16::from_be_bytes([buf[2], buf[3]])),
                    Some(n) => 2 + usize::from(*n),
                }
            }
            other => {
                let n = buf.len();
                buf.clear();
                return Some(Err(DecodeError::Malformed(format!(
                    "intellivue: datagram of {n} bytes starts with {other:02X}, not a Data Export message"
                ))));
            }
        };
        if need > MAX_PAYLOAD {
            buf.clear();
            return Some(Err(DecodeError::TooLong(need)));
        }
        if buf.len() < need {
            return None;
        }
        Some(Ok(buf.split_to(need).to_vec()))
    }

    /// Whether this decoder talks (has a session).
    pub fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// The session, if this decoder talks.
    pub fn session_mut(&mut self) -> Option<&mut session::Session> {
        self.session.as_mut()
    }

    /// One message's user data (a LAN datagram, or a deframed serial frame): a [`Frame`] for a poll result,
    /// `None` for a session message.
    pub fn decode_payload(&mut self, data: &[u8]) -> Option<Result<Frame, DecodeError>> {
        let mut pdu = match parse_pdu(data) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        self.clock.observe(&mut pdu);
        if matches!(pdu, Pdu::AssociationAccepted | Pdu::Abort | Pdu::ReleaseRequest) {
            // A new association (or none): the alarm lists start afresh.
            self.patient.clear();
            self.technical.clear();
            self.last_nibp = None;
        }
        if let Some(s) = &mut self.session {
            s.on_pdu(&pdu);
        }
        match pdu {
            Pdu::Poll(result) => Some(Ok(self.frame_of(result))),
            _ => None,
        }
    }

    fn frame_of(&mut self, result: PollResult) -> Frame {
        let mut frame = Frame { device_time: result.time, ..Frame::default() };
        let mut nibp = Vec::new();
        for n in &result.numerics {
            let Some(m) = n.measurement() else {
                let other = n.other();
                let seen = frame.other.iter().any(|o| o.mdc_code == other.mdc_code);
                if !seen && frame.other.len() < MAX_OTHER_NUMERICS {
                    frame.other.push(other);
                }
                continue;
            };
            if m.status == ValueStatus::Demo {
                frame.demo = true;
            }
            if frame.measurements.iter().any(|x| x.parameter == m.parameter) {
                continue; // RR from impedance and from CO2: the first one reported.
            }
            if m.parameter.is_nibp() {
                nibp.push((m.parameter, m.value, m.observed));
            }
            frame.measurements.push(m);
        }
        if !nibp.is_empty() {
            if self.last_nibp.as_ref() == Some(&nibp) {
                frame.measurements.retain(|m| !m.parameter.is_nibp());
            } else {
                self.last_nibp = Some(nibp);
            }
        }
        let alerts = result.patient_alarms.is_some() || result.technical_alarms.is_some();
        if let Some(list) = result.patient_alarms {
            self.patient = list.iter().map(Alert::device_alarm).collect();
        }
        if let Some(list) = result.technical_alarms {
            self.technical = list.iter().map(Alert::device_alarm).collect();
        }
        if alerts {
            frame.device_alarms = Some(self.patient.iter().chain(&self.technical).cloned().collect());
        }
        frame.perfusion_first();
        frame
    }
}

impl Decoder for IntelliVueDecoder {
    type Item = Result<Frame, DecodeError>;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        loop {
            let next = if self.lan { Self::next_lan(buf) } else { self.deframer.next(buf) };
            match next {
                None => return Ok(None),
                Some(Err(e)) => return Ok(Some(Err(e))),
                Some(Ok(payload)) => {
                    if let Some(item) = self.decode_payload(&payload) {
                        return Ok(Some(item));
                    }
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        if self.lan && !buf.is_empty() {
            let n = buf.len();
            buf.clear();
            return Ok(Some(Err(DecodeError::Malformed(format!("intellivue: {n} bytes of a cut message")))));
        }
        Ok(self.deframer.finish_stream().map(Err))
    }
}

#[cfg(test)]
mod tests;
