//! Nonin data format #8: 4 bytes once per second, 9600 8N1 (CLINICAL.md, "Device protocols seen in the field").
//!
//! Bit layout used here. CLINICAL.md gives the byte order, the flags and the missing-data values; the bit
//! positions follow the Nonin 9560/OEM III format #8 as implemented in public parsers (e.g.
//! drphrozen/javautilityclasses `NoninAndroid/src/dk/iha/nonin/Format8.java`, Pez Globo Pufferfish
//! `Driver/Serial/Nonin/PacketReceiver.cpp`):
//!
//! | byte | bit 7 | bit 6 | bit 5 | bit 4 | bit 3 | bit 2 | bit 1 | bit 0 |
//! |---|---|---|---|---|---|---|---|---|
//! | 1 status | 1 | SNSD sensor disconnected | OOT out of track | LPRF low perfusion | MPRF marginal perfusion | ARTF artefact | HR bit 8 | HR bit 7 |
//! | 2 | 0 | HR bits 6–0 | | | | | | |
//! | 3 | 0 | SpO2 0–100, 127 = missing | | | | | | |
//! | 4 status 2 | 0 | 0 | SPA SmartPoint | 0 | SNSA sensor alarm | 0 | 0 | LOW BATTERY |
//!
//! Heart rate 511 and SpO2 127 mean "missing". Only bytes 1 has bit 7 set, which is how a receiver synchronises.

use crate::sim::{Sample, SensorState};

/// Status byte 1 flags.
pub mod status {
    /// Always set: marks the first byte of a frame.
    pub const SYNC: u8 = 0x80;
    /// Sensor disconnected.
    pub const SNSD: u8 = 0x40;
    /// Out of track (no consecutive good pulses).
    pub const OOT: u8 = 0x20;
    /// Low perfusion.
    pub const LPRF: u8 = 0x10;
    /// Marginal perfusion.
    pub const MPRF: u8 = 0x08;
    /// Artefact.
    pub const ARTF: u8 = 0x04;
}

/// Status byte 2 flags.
pub mod status2 {
    /// SmartPoint algorithm (high-quality reading).
    pub const SPA: u8 = 0x20;
    /// Sensor alarm (sensor unusable).
    pub const SNSA: u8 = 0x08;
    /// Low battery.
    pub const LOW_BATTERY: u8 = 0x01;
}

/// Heart-rate value meaning "missing".
pub const HR_MISSING: u16 = 511;
/// SpO2 value meaning "missing".
pub const SPO2_MISSING: u8 = 127;

/// The content of one format #8 frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoninFrame {
    /// Heart rate /min (`None` sends 511). Values above 510 are clamped so they cannot read as missing.
    pub hr: Option<u16>,
    /// SpO2 % (`None` sends 127).
    pub spo2: Option<u8>,
    /// Status byte 1 flags (without the sync bit and HR bits; see [`status`]).
    pub status: u8,
    /// Status byte 2 flags (see [`status2`]).
    pub status2: u8,
}

impl NoninFrame {
    /// The frame a Nonin sends for one second of the simulation.
    pub fn from_sample(s: &Sample) -> NoninFrame {
        let (status, status2) = flags_for(s.sensor, s.shown.pi);
        NoninFrame { hr: s.shown.pulse, spo2: s.shown.spo2, status, status2 }
    }
}

/// Perfusion index below which the device flags low perfusion.
const LOW_PERFUSION_PI: f64 = 0.5;

/// Status and status-2 flags for a sensor state: a probe off the finger loses track and raises the sensor alarm,
/// an unplugged sensor is "disconnected", motion gives artefact with marginal perfusion.
pub fn flags_for(sensor: SensorState, pi: Option<f64>) -> (u8, u8) {
    match sensor {
        SensorState::Ok if pi.is_some_and(|p| p < LOW_PERFUSION_PI) => (status::LPRF, 0),
        SensorState::Ok => (0, 0),
        SensorState::ProbeOff { .. } => (status::OOT, status2::SNSA),
        SensorState::NoSensor => (status::SNSD, 0),
        SensorState::PulseSearch => (status::OOT, 0),
        SensorState::Artefact => (status::ARTF | status::MPRF, 0),
    }
}

/// Positive answer to a host command.
pub const ACK: u8 = 0x06;
/// Negative answer to a host command.
pub const NAK: u8 = 0x15;
/// The only data format this personality speaks.
pub const FORMAT: u8 = 8;

/// Looks for a host's format-select command `02 70 02 02 <fmt> 03` (CLINICAL.md) in bytes received so far and
/// returns the device's answer: ACK for format #8, NAK for any other (we cannot send #2/#7). Consumed bytes are
/// removed; a partial command is kept for the next call, other bytes are dropped.
pub fn answer_host(received: &mut Vec<u8>) -> Option<u8> {
    const HEAD: [u8; 4] = [0x02, 0x70, 0x02, 0x02];
    loop {
        let Some(start) = received.iter().position(|b| *b == HEAD[0]) else {
            received.clear();
            return None;
        };
        received.drain(..start);
        let have = received.len().min(HEAD.len());
        if received[..have] != HEAD[..have] {
            received.remove(0);
            continue;
        }
        if received.len() < 6 {
            return None;
        }
        let (fmt, end) = (received[4], received[5]);
        if end != 0x03 {
            received.remove(0);
            continue;
        }
        received.drain(..6);
        return Some(if fmt == FORMAT { ACK } else { NAK });
    }
}

/// Encodes one 4-byte frame.
pub fn encode(frame: &NoninFrame) -> [u8; 4] {
    let hr = frame.hr.map_or(HR_MISSING, |h| h.min(HR_MISSING - 1));
    let spo2 = frame.spo2.map_or(SPO2_MISSING, |s| s.min(100));
    [
        status::SYNC | (frame.status & 0x7C) | ((hr >> 7) as u8 & 0x03),
        (hr & 0x7F) as u8,
        spo2 & 0x7F,
        frame.status2 & 0x7F,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heart_rate_above_127_carries_its_high_bits_in_the_status_byte() {
        let bytes = encode(&NoninFrame { hr: Some(200), spo2: Some(97), status: 0, status2: 0 });
        assert_eq!(bytes, [0x81, 200 - 128, 97, 0]);
        let hr = (u16::from(bytes[0] & 0x03) << 7) | u16::from(bytes[1]);
        assert_eq!(hr, 200);
    }

    #[test]
    fn missing_values_use_511_and_127() {
        let bytes = encode(&NoninFrame { hr: None, spo2: None, status: status::OOT, status2: status2::SNSA });
        assert_eq!(bytes, [0x80 | 0x20 | 0x03, 0x7F, 127, 0x08]);
    }

    #[test]
    fn a_host_selecting_format_8_gets_ack_and_any_other_format_nak() {
        let mut rx = vec![0x55, 0x02, 0x70, 0x02, 0x02, 0x08, 0x03];
        assert_eq!(answer_host(&mut rx), Some(ACK));
        assert!(rx.is_empty());
        let mut rx = vec![0x02, 0x70, 0x02, 0x02, 0x02, 0x03];
        assert_eq!(answer_host(&mut rx), Some(NAK));
        // Split across reads: nothing yet, then the answer.
        let mut rx = vec![0x02, 0x70, 0x02];
        assert_eq!(answer_host(&mut rx), None);
        rx.extend([0x02, 0x08, 0x03]);
        assert_eq!(answer_host(&mut rx), Some(ACK));
        // Noise is not a command.
        let mut rx = vec![0x02, 0x71, 0x02, 0x02, 0x08, 0x03, 0x02, 0x70, 0x02, 0x02, 0x08, 0x04];
        assert_eq!(answer_host(&mut rx), None);
    }

    #[test]
    fn only_the_status_byte_has_bit_seven_set() {
        for hr in [0u16, 60, 127, 128, 255, 300, 510, 600] {
            let b = encode(&NoninFrame { hr: Some(hr), spo2: Some(100), status: 0xFF, status2: 0xFF });
            assert!(b[0] & 0x80 != 0);
            assert!(b[1..].iter().all(|x| x & 0x80 == 0), "{b:?}");
        }
    }
}
