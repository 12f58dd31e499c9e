//! Nonin data format #8 (9560, OEM III modules): 4 bytes once per second, 9600 8N1 (the clinical reference (docs/sources.md),
//! "Device protocols").
//!
//! | byte | content |
//! |---|---|
//! | 1 | status: bit 7 always 1; bit 6 sensor disconnect; bit 5 out of track; bit 4 low perfusion; bit 3 marginal perfusion; bit 2 artefact; bits 1–0 heart-rate bits 8–7 |
//! | 2 | heart rate bits 6–0 (bit 7 is 0) |
//! | 3 | SpO2 (bit 7 is 0); 127 = missing |
//! | 4 | status 2 (bit 7 is 0): bit 5 SmartPoint, bit 1 sensor alarm, bit 0 low battery |
//!
//! Heart rate 511 is missing. Only the status byte has bit 7 set, which is what resynchronisation keys on. The
//! per-bit positions of status 2 follow the Nonin OEM III specification as we read it; CLINICAL.md names the
//! flags but not their bits, so check them against the device's own manual before relying on them.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

use super::{DecodeError, Frame, Measurement, SensorFlags};
use crate::vitals::{Parameter, ValueStatus};

/// Bytes in a format #8 frame.
pub const FRAME_LEN: usize = 4;

/// Host → device: select data format #8 (`02 70 02 02 08 03`, CLINICAL.md).
pub const SELECT_FORMAT_8: [u8; 6] = [0x02, 0x70, 0x02, 0x02, 0x08, 0x03];
/// Device → host: format accepted.
pub const ACK: u8 = 0x06;
/// Device → host: format refused.
pub const NAK: u8 = 0x15;

/// Heart rate value meaning "missing".
pub const HR_MISSING: u16 = 511;
/// SpO2 value meaning "missing".
pub const SPO2_MISSING: u8 = 127;

/// Status byte 1 bits.
pub mod status1 {
    /// Always set: marks the first byte of a frame.
    pub const SYNC: u8 = 0x80;
    /// Sensor disconnected or inoperable.
    pub const SENSOR_DISCONNECT: u8 = 0x40;
    /// Out of track: no usable pulse.
    pub const OUT_OF_TRACK: u8 = 0x20;
    /// Low perfusion.
    pub const LOW_PERFUSION: u8 = 0x10;
    /// Marginal perfusion.
    pub const MARGINAL_PERFUSION: u8 = 0x08;
    /// Artefact.
    pub const ARTEFACT: u8 = 0x04;
}

/// Status byte 2 bits.
pub mod status2 {
    /// SmartPoint: a high-quality measurement.
    pub const SMARTPOINT: u8 = 0x20;
    /// Sensor alarm: the device is giving unusable data.
    pub const SENSOR_ALARM: u8 = 0x02;
    /// Low battery.
    pub const LOW_BATTERY: u8 = 0x01;
}

/// The host's format-selection reply seen on the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeReply {
    /// 0x06: the device switched to the requested format.
    Ack,
    /// 0x15: the device refused.
    Nak,
}

/// Decodes one 4-byte frame. Pure; `frame[0]` must have bit 7 set and the others clear.
pub fn parse_frame(frame: [u8; FRAME_LEN]) -> Result<Frame, DecodeError> {
    let [s1, hr_low, spo2, s2] = frame;
    if s1 & status1::SYNC == 0 || (hr_low | spo2 | s2) & 0x80 != 0 {
        return Err(DecodeError::Malformed("nonin: sync bits wrong".into()));
    }
    let mut sensor = SensorFlags::default();
    for (bit, flag) in [
        (status1::SENSOR_DISCONNECT, SensorFlags::SENSOR_OFF),
        (status1::OUT_OF_TRACK, SensorFlags::PULSE_SEARCH),
        (status1::LOW_PERFUSION, SensorFlags::LOW_PERFUSION),
        (status1::MARGINAL_PERFUSION, SensorFlags::LOW_SIGNAL_IQ),
        (status1::ARTEFACT, SensorFlags::ARTEFACT),
    ] {
        if s1 & bit != 0 {
            sensor = sensor.union(flag);
        }
    }
    if s2 & status2::SENSOR_ALARM != 0 {
        sensor = sensor.union(SensorFlags::DEFECTIVE);
    }
    if s2 & status2::LOW_BATTERY != 0 {
        sensor = sensor.union(SensorFlags::LOW_BATTERY);
    }
    let hr = (u16::from(s1 & 0x03) << 7) | u16::from(hr_low);
    let hr = (hr != HR_MISSING).then_some(f64::from(hr));
    let spo2 = (spo2 != SPO2_MISSING).then_some(f64::from(spo2));
    let measurements = vec![measurement(Parameter::Spo2, spo2, sensor), measurement(Parameter::Pr, hr, sensor)];
    Ok(Frame { measurements, sensor, ..Frame::default() })
}

/// 0 from an oximeter is "no value", never a desaturation or asystole (docs/sources.md, "Devices and data"). The Nonin
/// "heart rate" is the oximeter's pulse rate, hence [`Parameter::Pr`].
fn measurement(parameter: Parameter, value: Option<f64>, sensor: SensorFlags) -> Measurement {
    let (value, status) = match value.filter(|v| *v != 0.0) {
        None => (None, ValueStatus::Unavailable),
        Some(_) if sensor.no_measurement() => (None, ValueStatus::Unavailable),
        Some(v) if sensor.doubtful() => (Some(v), ValueStatus::Questionable),
        Some(v) => (Some(v), ValueStatus::Valid),
    };
    Measurement { parameter, value, status, observed: None, device_limits: None, spot: false }
}

/// Streaming format #8 decoder. Bytes before a status byte are skipped and reported once per run as
/// [`DecodeError::Malformed`]; a frame broken by a byte with bit 7 set is dropped and decoding restarts at that
/// byte. The buffer never holds more than one partial frame. A lone ACK/NAK (the reply to
/// [`SELECT_FORMAT_8`]) outside a frame is recorded, not counted as garbage.
#[derive(Debug, Clone, Default)]
pub struct NoninDecoder {
    handshake: Option<HandshakeReply>,
}

impl NoninDecoder {
    /// A new decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last format-selection reply seen since the previous call, if any.
    pub fn take_handshake_reply(&mut self) -> Option<HandshakeReply> {
        self.handshake.take()
    }
}

impl Decoder for NoninDecoder {
    type Item = Result<Frame, DecodeError>;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        // Skip to the next status byte, noting handshake replies on the way.
        let start = buf.iter().position(|b| b & status1::SYNC != 0).unwrap_or(buf.len());
        if start > 0 {
            let mut garbage = 0usize;
            for b in &buf[..start] {
                match *b {
                    ACK => self.handshake = Some(HandshakeReply::Ack),
                    NAK => self.handshake = Some(HandshakeReply::Nak),
                    _ => garbage += 1,
                }
            }
            buf.advance(start);
            if garbage > 0 {
                return Ok(Some(Err(DecodeError::Malformed(format!("nonin: {garbage} bytes outside a frame")))));
            }
        }
        if buf.len() < FRAME_LEN {
            return Ok(None);
        }
        if let Some(i) = buf[1..FRAME_LEN].iter().position(|b| b & status1::SYNC != 0) {
            buf.advance(i + 1);
            return Ok(Some(Err(DecodeError::Malformed("nonin: frame cut short by a status byte".into()))));
        }
        let frame = [buf[0], buf[1], buf[2], buf[3]];
        buf.advance(FRAME_LEN);
        Ok(Some(parse_frame(frame)))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        let n = buf.len();
        buf.clear();
        Ok(Some(Err(DecodeError::Malformed(format!("nonin: stream ended inside a frame ({n} bytes)")))))
    }
}

/// Encodes a format #8 frame: for tests, replay and benchmarks (the simulator has its own encoder).
pub fn encode_frame(hr: u16, spo2: u8, s1_flags: u8, s2_flags: u8) -> [u8; FRAME_LEN] {
    let hr = hr.min(HR_MISSING);
    [status1::SYNC | (s1_flags & 0x7C) | ((hr >> 7) as u8 & 0x03), (hr & 0x7F) as u8, spo2 & 0x7F, s2_flags & 0x7F]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(f: &Frame) -> Vec<(Parameter, Option<f64>, ValueStatus)> {
        f.measurements.iter().map(|m| (m.parameter, m.value, m.status)).collect()
    }

    #[test]
    fn a_frame_carries_spo2_and_a_nine_bit_pulse_rate() {
        let f = parse_frame(encode_frame(300, 97, 0, 0)).unwrap();
        assert_eq!(
            values(&f),
            vec![(Parameter::Spo2, Some(97.0), ValueStatus::Valid), (Parameter::Pr, Some(300.0), ValueStatus::Valid)]
        );
    }

    #[test]
    fn missing_markers_and_zero_are_no_value() {
        let f = parse_frame(encode_frame(HR_MISSING, SPO2_MISSING, 0, 0)).unwrap();
        assert!(f.measurements.iter().all(|m| m.value.is_none() && m.status == ValueStatus::Unavailable));
        let f = parse_frame(encode_frame(0, 0, 0, 0)).unwrap();
        assert!(f.measurements.iter().all(|m| m.value.is_none() && m.status == ValueStatus::Unavailable));
    }

    #[test]
    fn status_flags_become_sensor_flags_and_value_status() {
        let f = parse_frame(encode_frame(70, 95, status1::ARTEFACT, status2::LOW_BATTERY)).unwrap();
        assert!(f.sensor.contains(SensorFlags::ARTEFACT) && f.sensor.contains(SensorFlags::LOW_BATTERY));
        assert!(f.measurements.iter().all(|m| m.status == ValueStatus::Questionable));
        let f = parse_frame(encode_frame(70, 95, status1::SENSOR_DISCONNECT, 0)).unwrap();
        assert!(f.sensor.contains(SensorFlags::SENSOR_OFF));
        assert!(f.measurements.iter().all(|m| m.status == ValueStatus::Unavailable && m.value.is_none()));
    }

    #[test]
    fn the_decoder_resynchronises_on_the_status_byte_after_garbage_and_a_cut_frame() {
        let mut d = NoninDecoder::new();
        let good = encode_frame(72, 98, 0, 0);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0x01, 0x02]);
        buf.extend_from_slice(&good[..2]); // a frame cut short …
        buf.extend_from_slice(&good); // … by the next one
        assert!(matches!(d.decode(&mut buf).unwrap(), Some(Err(DecodeError::Malformed(_)))));
        assert!(matches!(d.decode(&mut buf).unwrap(), Some(Err(DecodeError::Malformed(_)))));
        let f = d.decode(&mut buf).unwrap().unwrap().unwrap();
        assert_eq!(f.measurements[0].value, Some(98.0));
        assert!(buf.is_empty());
    }

    #[test]
    fn handshake_replies_are_recorded_not_counted_as_garbage() {
        let mut d = NoninDecoder::new();
        let mut buf = BytesMut::from(&[ACK][..]);
        buf.extend_from_slice(&encode_frame(60, 99, 0, 0));
        assert!(d.decode(&mut buf).unwrap().unwrap().is_ok());
        assert_eq!(d.take_handshake_reply(), Some(HandshakeReply::Ack));
        assert_eq!(d.take_handshake_reply(), None);
    }
}
