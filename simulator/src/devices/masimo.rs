//! Masimo Rad-8 / Radical-7 serial "ASCII 1": one text line per second, CR LF, 9600 8N1.
//!
//! Layout copied from the live Rad-8 capture in `tests/fixtures/masimo/rad_serial_samples.txt` (source A):
//! `02/22/16 22:47:45 SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% SPMET=--.-% DESAT=-- PIDELTA=+--
//! ALARM=0000 EXC=000800`. Dashes mean "no value" (the no-sensor line, source B: `SPO2=---% BPM=---`).

use chrono::NaiveDateTime;

use crate::sim::{Sample, SensorState};

/// EXC bits (hex) as the Rad-8 manual defines them (docs/sources.md, "Devices and data").
pub mod exc {
    /// No sensor connected.
    pub const NO_SENSOR: u32 = 0x001;
    /// Defective sensor.
    pub const DEFECTIVE_SENSOR: u32 = 0x002;
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
    pub const UNRECOGNISED_SENSOR: u32 = 0x080;
    /// Low signal IQ.
    pub const LOW_SIGNAL_IQ: u32 = 0x400;
    /// Masimo SET processing active: set on every live line in the captures.
    pub const SET: u32 = 0x800;
}

/// ALARM bits as observed in captures (Masimo does not document them; docs/sources.md, "Devices and data").
pub mod alarm {
    /// SpO2 above the high limit.
    pub const SPO2_HIGH: u16 = 0x01;
    /// SpO2 below the low limit.
    pub const SPO2_LOW: u16 = 0x02;
    /// Pulse above the high limit.
    pub const BPM_HIGH: u16 = 0x04;
    /// Pulse below the low limit.
    pub const BPM_LOW: u16 = 0x08;
    /// An alarm is active.
    pub const ACTIVE: u16 = 0x10;
}

/// The device's own factory alarm limits, used only to fill the `ALARM=` field like a real Rad-8 would.
pub const DEVICE_LIMITS: DeviceLimits = DeviceLimits { spo2_low: 90, bpm_low: 40, bpm_high: 140 };

/// A monitor's own alarm limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// SpO2 low limit %.
    pub spo2_low: u8,
    /// Pulse low limit /min.
    pub bpm_low: u16,
    /// Pulse high limit /min.
    pub bpm_high: u16,
}

/// One ASCII 1 line's content.
#[derive(Debug, Clone, PartialEq)]
pub struct MasimoLine {
    /// The device clock (local time on a real device; Vigil-sim uses UTC).
    pub time: NaiveDateTime,
    /// Serial number, printed as 10 digits.
    pub serial: u64,
    /// SpO2 %, `None` prints `---`.
    pub spo2: Option<u8>,
    /// Pulse rate /min, `None` prints `---`.
    pub bpm: Option<u16>,
    /// Perfusion index %, `None` prints `--.--`.
    pub pi: Option<f64>,
    /// ALARM bits.
    pub alarm: u16,
    /// EXC bits.
    pub exc: u32,
}

impl MasimoLine {
    /// The `ALARM=` bits a Rad-8 with `limits` would show for these values.
    pub fn alarm_bits(spo2: Option<u8>, bpm: Option<u16>, limits: DeviceLimits) -> u16 {
        let mut bits = 0;
        if spo2.is_some_and(|s| s < limits.spo2_low) {
            bits |= alarm::SPO2_LOW;
        }
        if bpm.is_some_and(|b| b > limits.bpm_high) {
            bits |= alarm::BPM_HIGH;
        }
        if bpm.is_some_and(|b| b < limits.bpm_low) {
            bits |= alarm::BPM_LOW;
        }
        if bits != 0 {
            bits |= alarm::ACTIVE;
        }
        bits
    }
}

impl MasimoLine {
    /// The line a Rad-8 sends for one second of the simulation: displayed values, EXC from the sensor state,
    /// ALARM from the device's factory limits.
    pub fn from_sample(s: &Sample, serial: u64) -> MasimoLine {
        MasimoLine {
            time: s.device_time.naive_utc(),
            serial,
            spo2: s.shown.spo2,
            bpm: s.shown.pulse,
            pi: s.shown.pi,
            alarm: MasimoLine::alarm_bits(s.shown.spo2, s.shown.pulse, DEVICE_LIMITS),
            exc: exc_for(s.sensor),
        }
    }
}

/// The EXC bits for a sensor state. The no-sensor capture (data/masimo, source B) shows `EXC=000001` alone, without
/// the SET bit; the trend download shows 828 while searching off the patient, 820 off the patient, C00 for low IQ.
pub fn exc_for(sensor: SensorState) -> u32 {
    match sensor {
        SensorState::NoSensor => exc::NO_SENSOR,
        SensorState::Ok => exc::SET,
        SensorState::ProbeOff { searching: true } => exc::SET | exc::SENSOR_OFF | exc::PULSE_SEARCH,
        SensorState::ProbeOff { searching: false } => exc::SET | exc::SENSOR_OFF,
        SensorState::PulseSearch => exc::SET | exc::PULSE_SEARCH,
        SensorState::Artefact => exc::SET | exc::INTERFERENCE | exc::LOW_SIGNAL_IQ,
    }
}

/// Encodes one line, CR LF included.
pub fn encode(line: &MasimoLine) -> Vec<u8> {
    let spo2 = line.spo2.map_or_else(|| "---".to_owned(), |v| format!("{:03}", v.min(100)));
    let bpm = line.bpm.map_or_else(|| "---".to_owned(), |v| format!("{:03}", v.min(999)));
    let pi = line.pi.map_or_else(|| "--.--".to_owned(), |v| format!("{:05.2}", v.clamp(0.0, 99.99)));
    format!(
        "{} SN={:010} SPO2={spo2}% BPM={bpm} PI={pi}% SPCO=--.-% SPMET=--.-% DESAT=-- PIDELTA=+-- ALARM={:04X} \
         EXC={:06X}\r\n",
        line.time.format("%m/%d/%y %H:%M:%S"),
        line.serial % 10_000_000_000,
        line.alarm,
        line.exc & 0xFF_FFFF,
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn encodes_the_rad8_capture_byte_for_byte() {
        let line = MasimoLine {
            time: at("2016-02-22 22:47:45"),
            serial: 56661,
            spo2: Some(98),
            bpm: Some(97),
            pi: Some(3.60),
            alarm: 0,
            exc: exc::SET,
        };
        assert_eq!(
            encode(&line),
            b"02/22/16 22:47:45 SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% SPMET=--.-% DESAT=-- \
              PIDELTA=+-- ALARM=0000 EXC=000800\r\n"
                .to_vec()
        );
    }

    #[test]
    fn missing_values_print_dashes() {
        let line = MasimoLine {
            time: at("2016-03-19 13:37:12"),
            serial: 93112,
            spo2: None,
            bpm: None,
            pi: None,
            alarm: 0,
            exc: exc::NO_SENSOR,
        };
        let text = String::from_utf8(encode(&line)).unwrap();
        assert!(text.contains("SPO2=---% BPM=--- PI=--.--%"), "{text}");
        assert!(text.ends_with("EXC=000001\r\n"), "{text}");
    }

    #[test]
    fn low_spo2_sets_the_observed_alarm_bits() {
        assert_eq!(MasimoLine::alarm_bits(Some(85), Some(80), DEVICE_LIMITS), alarm::SPO2_LOW | alarm::ACTIVE);
        assert_eq!(MasimoLine::alarm_bits(None, None, DEVICE_LIMITS), 0);
        assert_eq!(MasimoLine::alarm_bits(Some(97), Some(150), DEVICE_LIMITS), alarm::BPM_HIGH | alarm::ACTIVE);
    }
}
