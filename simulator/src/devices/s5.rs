//! GE Datex-Ohmeda S/5 computer interface (Datex Record Interface, DRI): 19200 8E1 RTS/CTS. The monitor sends
//! records only after the host asks: a physiological transmission request (displayed values every N seconds)
//! and an alarm request (status once, or differential mode: whenever the alarm set changes).
//!
//! Wire format (S/5 DRI specification as transcribed by xeonfusion/VSCapture and a public Qt S/5 client; see the
//! daemon's `src/ingest/protocol/s5.rs` and docs/devices.md for the full table): each record goes out as
//! `0x7E`, the record with `0x7E`/`0x7D` sent as `0x7D` followed by the byte XOR 0x20, a checksum byte (sum of the
//! record bytes mod 256, escaped the same way), `0x7E`. A record is a 40-byte little-endian header (`r_len`,
//! `r_nbr`, `dri_level`, `plug_id`, `r_time` Unix seconds, 4 reserved bytes, `r_maintype`, 8 × (`sr_offset`,
//! `sr_type`) ending with type 0xFF) and its sub-records. Physiological values (main type 0) travel in a
//! 278-byte sub-record: time, 270 bytes of the basic class, marker, reserved, class word. Alarms (main type 4)
//! travel in a 510-byte `dri_al_msg` with 5 displayed alarms of 80 characters and a colour 0–3.
//!
//! This personality sends a displayed-values record every [`INTERVAL_S`] seconds with an alarm status record
//! next to it, and an alarm record at once when the set of alarms it shows changes (differential mode). The
//! alarms are those an S/5 with factory limits would show for the simulated values ([`monitor_alarms`]).
//! Output to a host that can answer (pty, serial, tcp-listen) is held back until the host's physiological
//! request arrives ([`HostRequests`]).

use crate::sim::{NibpValues, Sample, SensorState};

/// Seconds between displayed-values records (the S/5 sends no faster than every 5 s).
pub const INTERVAL_S: u32 = 5;

const FLAG: u8 = 0x7E;
const ESC: u8 = 0x7D;
const HEADER: usize = 40;
const NO_DATA: i16 = -32767;
const GROUP_LIVE: u32 = 0b11;

/// Factory alarm limits this personality applies (S/5 defaults as set on most units: SpO2 low 90 %, HR 40–120,
/// NIBP systolic high 160 mmHg).
pub mod limits {
    /// SpO2 below this raises "SpO2 LOW" (yellow).
    pub const SPO2_LOW: u8 = 90;
    /// SpO2 below this makes "SpO2 LOW" red.
    pub const SPO2_LOW_RED: u8 = 80;
    /// Pulse above this raises "HR HIGH".
    pub const HR_HIGH: u16 = 120;
    /// Pulse below this raises "HR LOW".
    pub const HR_LOW: u16 = 40;
    /// Systolic above this raises "NIBP SYS HIGH".
    pub const NIBP_SYS_HIGH: u16 = 160;
}

/// The S/5's state between records: the NIBP it keeps showing, the alarms it showed last.
#[derive(Debug, Clone, Default)]
pub struct S5State {
    nibp: Option<NibpValues>,
    shown: Vec<(String, i16)>,
}

/// The alarms (text, colour: 3 red, 2 yellow, 1 white) an S/5 shows for a sample, highest colour first.
pub fn monitor_alarms(s: &Sample, nibp: Option<NibpValues>) -> Vec<(String, i16)> {
    let mut out = Vec::new();
    match s.sensor {
        SensorState::NoSensor => out.push(("SpO2 NO PROBE".to_owned(), 1)),
        SensorState::ProbeOff { .. } => out.push(("SpO2 PROBE OFF".to_owned(), 1)),
        _ => {}
    }
    if let Some(spo2) = s.shown.spo2 {
        if spo2 < limits::SPO2_LOW_RED {
            out.push(("SpO2 LOW".to_owned(), 3));
        } else if spo2 < limits::SPO2_LOW {
            out.push(("SpO2 LOW".to_owned(), 2));
        }
    }
    match s.shown.pulse {
        Some(p) if p > limits::HR_HIGH => out.push(("HR HIGH".to_owned(), 2)),
        Some(p) if p < limits::HR_LOW && p > 0 => out.push(("HR LOW".to_owned(), 2)),
        _ => {}
    }
    if nibp.is_some_and(|n| n.systolic > limits::NIBP_SYS_HIGH) {
        out.push(("NIBP SYS HIGH".to_owned(), 2));
    }
    out.sort_by_key(|(_, colour)| -colour);
    out.truncate(5);
    out
}

/// Adds the escaped form of `b` to `out`.
fn put(out: &mut Vec<u8>, b: u8) {
    match b {
        FLAG | ESC => out.extend([ESC, b ^ 0x20]),
        _ => out.push(b),
    }
}

/// One record on the wire: flag, escaped record, escaped checksum, flag.
pub fn framed(record: &[u8]) -> Vec<u8> {
    let mut out = vec![FLAG];
    let mut sum = 0u8;
    for &b in record {
        sum = sum.wrapping_add(b);
        put(&mut out, b);
    }
    put(&mut out, sum);
    out.push(FLAG);
    out
}

/// A record: header with `maintype` and one sub-record of `sr_type`.
fn record(time: u32, maintype: i16, sr_type: u8, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(HEADER + body.len());
    r.extend(((HEADER + body.len()) as i16).to_le_bytes());
    r.extend([0, 0x09]); // r_nbr, dri_level (S/5 2005 software)
    r.extend([0, 0]); // plug_id
    r.extend(time.to_le_bytes());
    r.extend([0; 4]);
    r.extend(maintype.to_le_bytes());
    r.extend([0, 0, sr_type]); // first descriptor: offset 0
    r.extend([0, 0, 0xFF]); // end of list
    r.resize(HEADER, 0);
    r.extend_from_slice(body);
    r
}

fn group(class: &mut [u8], at: usize, live: bool, values: &[i16]) {
    class[at..at + 4].copy_from_slice(&(if live { GROUP_LIVE } else { 0 }).to_le_bytes());
    for (i, v) in values.iter().enumerate() {
        class[at + 6 + 2 * i..at + 8 + 2 * i].copy_from_slice(&v.to_le_bytes());
    }
}

/// The displayed-values record for a sample, with the NIBP the monitor still shows.
pub fn displayed_values(s: &Sample, nibp: Option<NibpValues>) -> Vec<u8> {
    let time = u32::try_from(s.device_time.timestamp()).unwrap_or(0);
    let mut class = vec![0u8; 270];
    let opt = |v: Option<i16>| v.unwrap_or(NO_DATA);
    let pulse = s.shown.pulse.map(|p| p as i16);
    let resp = s.shown.resp.map(i16::from);
    // ECG: heart rate from the leads, impedance respiration.
    group(
        &mut class,
        0,
        true,
        &[opt(s.truth.pulse.is_finite().then(|| s.truth.pulse.round() as i16)), 0, 0, 0, opt(resp)],
    );
    // Invasive pressures, temperatures: not connected.
    for at in [16, 30, 44, 58, 86, 94, 102, 110] {
        group(&mut class, at, false, &[NO_DATA; 4][..if at >= 86 { 1 } else { 4 }]);
    }
    let n = nibp.map(|n| [n.systolic as i16 * 100, n.diastolic as i16 * 100, n.mean as i16 * 100, n.pulse as i16]);
    group(&mut class, 72, true, &n.unwrap_or([NO_DATA; 4]));
    let probe_in = !matches!(s.sensor, SensorState::NoSensor);
    let spo2 = s.shown.spo2.map(|v| i16::from(v) * 100);
    group(&mut class, 118, probe_in, &[opt(spo2), opt(pulse), NO_DATA, NO_DATA]);
    // No capnography: the CO2 group is absent.
    group(&mut class, 132, false, &[NO_DATA; 4]);
    let mut body = time.to_le_bytes().to_vec();
    body.extend(class);
    body.extend([0, 0]);
    body.extend(1u16.to_le_bytes()); // class 0 (basic) in bits 8–11, displayed values in the low byte
    framed(&record(time, 0, 1, &body))
}

/// The alarm status record for the alarms shown.
pub fn alarm_status(time: u32, shown: &[(String, i16)]) -> Vec<u8> {
    let mut msg = vec![0u8; 510];
    for (i, (text, colour)) in shown.iter().take(5).enumerate() {
        let at = 10 + 98 * i;
        let t = text.as_bytes();
        let n = t.len().min(79);
        msg[at..at + n].copy_from_slice(&t[..n]);
        msg[at + 82..at + 84].copy_from_slice(&colour.to_le_bytes());
    }
    framed(&record(time, 4, 1, &msg))
}

impl S5State {
    /// The bytes the monitor sends this second: on the interval, displayed values and the alarm status; between
    /// them, an alarm record when the alarms changed.
    pub fn encode(&mut self, s: &Sample) -> Vec<u8> {
        if let Some(reading) = s.nibp {
            if let Some(values) = reading.values {
                self.nibp = Some(values);
            }
        }
        let alarms = monitor_alarms(s, self.nibp);
        let time = u32::try_from(s.device_time.timestamp()).unwrap_or(0);
        let mut out = Vec::new();
        let on_interval = s.offset_s % INTERVAL_S == 0;
        if on_interval {
            out.extend(displayed_values(s, self.nibp));
        }
        if on_interval || alarms != self.shown {
            out.extend(alarm_status(time, &alarms));
            self.shown = alarms;
        }
        out
    }
}

/// What the host has asked for so far, read from the bytes it sends.
#[derive(Debug, Clone, Default)]
pub struct HostRequests {
    received: Vec<u8>,
    /// Displayed values were requested with a non-zero interval (and not stopped since).
    pub transmitting: bool,
    /// Requests understood.
    pub requests: u32,
}

impl HostRequests {
    /// Takes bytes from the host: complete frames with a good checksum are read, the rest waits or is dropped.
    pub fn hear(&mut self, bytes: &[u8]) {
        self.received.extend_from_slice(bytes);
        loop {
            let Some(start) = self.received.iter().position(|b| *b == FLAG) else {
                self.received.clear();
                return;
            };
            self.received.drain(..start);
            let Some(len) = self.received[1..].iter().position(|b| *b == FLAG) else {
                // Half a frame: keep it, but never more than one record's worth.
                if self.received.len() > 4096 {
                    self.received.clear();
                }
                return;
            };
            let body: Vec<u8> = self.received.drain(..=len).skip(1).collect();
            if body.is_empty() {
                continue;
            }
            let mut plain = Vec::with_capacity(body.len());
            let mut it = body.iter();
            while let Some(&b) = it.next() {
                plain.push(if b == ESC { it.next().map_or(0, |n| n ^ 0x20) } else { b });
            }
            let Some(sum) = plain.pop() else { continue };
            if plain.iter().fold(0u8, |a, b| a.wrapping_add(*b)) != sum || plain.len() < HEADER + 3 {
                continue;
            }
            let maintype = i16::from_le_bytes([plain[14], plain[15]]);
            let sr_type = plain[18];
            if maintype == 0 && sr_type == 0 {
                let interval = i16::from_le_bytes([plain[HEADER + 1], plain[HEADER + 2]]);
                self.transmitting = interval != 0;
                self.requests += 1;
            } else if maintype == 4 {
                self.requests += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_flags_out_of_the_frame_body() {
        let f = framed(&[0x7E, 0x7D, 0x01]);
        // Checksum 0x7E + 0x7D + 0x01 = 0xFC.
        assert_eq!(f, vec![0x7E, 0x7D, 0x5E, 0x7D, 0x5D, 0x01, 0xFC, 0x7E]);
    }

    #[test]
    fn a_physiological_request_starts_transmission_and_interval_zero_stops_it() {
        let mut req = vec![0u8; 49];
        req[0] = 49;
        req[21] = 0xFF;
        req[40] = 1;
        req[41] = 5;
        let mut host = HostRequests::default();
        host.hear(&framed(&req)[..10]);
        assert!(!host.transmitting, "half a frame is not a request");
        host.hear(&framed(&req)[10..]);
        assert!(host.transmitting);
        req[41] = 0;
        host.hear(&[0x00, 0x13]);
        host.hear(&framed(&req));
        assert!(!host.transmitting);
        assert_eq!(host.requests, 2);
    }
}
