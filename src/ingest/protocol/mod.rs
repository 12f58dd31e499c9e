//! Pure decoders, one file per device family: bytes in, [`Frame`]s or a typed [`DecodeError`] out. No I/O here,
//! so every decoder works over every transport (serial, TCP, in-process simulator) and in replay.

use crate::vitals::{Parameter, Timestamp, ValueStatus};

/// One decoded frame (a Masimo line, a Nonin 4-byte frame, an HL7 message).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Frame {
    /// Device identity if the frame carries one (HL7 MSH-3 EUI-64, Masimo `SN=`).
    pub device_id: Option<String>,
    /// The device's own timestamp for the frame, if any (often wrong: alarm timing uses receive time).
    pub device_time: Option<Timestamp>,
    /// The values in the frame.
    pub measurements: Vec<Measurement>,
    /// What the device says about its sensor.
    pub sensor: SensorFlags,
    /// The device says it is in demo mode (HL7 OBX-8 `DEMO`).
    pub demo: bool,
    /// Device alarm bits as sent (Masimo `ALARM=`), kept for reference.
    pub device_alarm_bits: Option<u32>,
    /// The monitor's own alarms, when the frame reports them: `Some` is the complete list of alarms the device
    /// shows now (empty: none), `None` means this frame says nothing about alarms. A list, not deltas, because
    /// both IntelliVue alert lists and S/5 alarm records report the current set; the bed derives start and end.
    pub device_alarms: Option<Vec<DeviceAlarm>>,
    /// Numerics that are none of Vigil's parameters (an IntelliVue's temperature, ST segments, …), by their
    /// MDC code: kept and published with the vitals, never alarmed on.
    pub other: Vec<OtherNumeric>,
}

impl Frame {
    /// Puts the perfusion index before the other values, keeping their order: the engine judges an SpO2 value
    /// by the perfusion index of its own frame, so it must know that index first (issue 10 item 5).
    pub fn perfusion_first(&mut self) {
        if self.measurements.iter().skip(1).any(|m| m.parameter == Parameter::Pi) {
            self.measurements.sort_by_key(|m| m.parameter != Parameter::Pi);
        }
    }
}

/// A numeric that is not one of Vigil's parameters (or is one, in a unit Vigil does not convert), as the device
/// sent it. The alarm engine never sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct OtherNumeric {
    /// Its IEEE 11073-10101 MDC code (partition and code: for IntelliVue `(2 << 16) + physio id`).
    pub mdc_code: u32,
    /// The MDC code of its unit (partition dimension: `(4 << 16) + unit code`).
    pub unit_code: u32,
    /// The value in that unit, `None` for no value.
    pub value: Option<f64>,
    /// Trust, from the device's own state bits.
    pub status: ValueStatus,
}

/// One alarm the monitor itself raised (an IntelliVue alert, an S/5 alarm record entry). Kept apart from
/// Vigil's own rules: the bed shows it as a device alarm with source `monitor`, never merged with an engine
/// condition.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceAlarm {
    /// Identity of the alarm within the device, stable while it lasts (e.g. alert code and source), so that the
    /// same alarm in the next report is recognised as continuing.
    pub key: String,
    /// The device's priority.
    pub priority: DeviceAlarmPriority,
    /// Physiological (about the patient) or technical (about the equipment).
    pub technical: bool,
    /// The device's text, as shown on its screen (bounded by the decoder).
    pub text: String,
    /// The parameter the alarm is about, where the device says, so a reading can explain it.
    pub parameter: Option<Parameter>,
}

/// A monitor's alarm priority: each decoder maps its device's levels onto IEC 60601-1-8's three, and says how
/// in its module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceAlarmPriority {
    /// Informational or prompt: no alarm priority.
    Info,
    /// Low priority.
    Low,
    /// Medium priority.
    Medium,
    /// High priority.
    High,
}

/// One value in a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Which parameter.
    pub parameter: Parameter,
    /// The value in Vigil's unit for the parameter, `None` for no value.
    pub value: Option<f64>,
    /// Trust.
    pub status: ValueStatus,
    /// Observation time if the device gives one per value (HL7 OBX-14, used for NIBP).
    pub observed: Option<Timestamp>,
    /// Device alarm limits for the value (HL7 OBX-7 `low^high`), kept as metadata.
    pub device_limits: Option<(f64, f64)>,
    /// A spot measurement of a continuous parameter (the NIBP cuff's pulse, a spot-check pulse).
    pub spot: bool,
}

/// Sensor conditions a device reports, as bit flags (Masimo EXC, Nonin status bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SensorFlags(pub u16);

impl SensorFlags {
    /// No sensor connected.
    pub const NO_SENSOR: SensorFlags = SensorFlags(1);
    /// Sensor defective or unrecognised.
    pub const DEFECTIVE: SensorFlags = SensorFlags(1 << 1);
    /// Sensor off the patient.
    pub const SENSOR_OFF: SensorFlags = SensorFlags(1 << 2);
    /// Searching for a pulse.
    pub const PULSE_SEARCH: SensorFlags = SensorFlags(1 << 3);
    /// Low perfusion.
    pub const LOW_PERFUSION: SensorFlags = SensorFlags(1 << 4);
    /// Interference or ambient light.
    pub const INTERFERENCE: SensorFlags = SensorFlags(1 << 5);
    /// Low signal quality (Masimo low signal IQ, Nonin marginal perfusion).
    pub const LOW_SIGNAL_IQ: SensorFlags = SensorFlags(1 << 6);
    /// Artefact (Nonin).
    pub const ARTEFACT: SensorFlags = SensorFlags(1 << 7);
    /// Low battery (Nonin).
    pub const LOW_BATTERY: SensorFlags = SensorFlags(1 << 8);

    /// No flag set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// All of `other`'s flags are set.
    pub const fn contains(self, other: SensorFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Union.
    pub const fn union(self, other: SensorFlags) -> SensorFlags {
        SensorFlags(self.0 | other.0)
    }
    /// The device cannot measure at all: values are unavailable and a technical alarm is due.
    pub const fn no_measurement(self) -> bool {
        self.0 & (Self::NO_SENSOR.0 | Self::DEFECTIVE.0 | Self::SENSOR_OFF.0 | Self::PULSE_SEARCH.0) != 0
    }
    /// The device measures but doubts the values: they are questionable.
    pub const fn doubtful(self) -> bool {
        self.0 & (Self::LOW_PERFUSION.0 | Self::INTERFERENCE.0 | Self::LOW_SIGNAL_IQ.0 | Self::ARTEFACT.0) != 0
    }
}

/// What the bed should hear about a protocol-level link (an IntelliVue association), beyond the transport's own
/// connect and disconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    /// Up: the device answers (associated, polls running).
    Up,
    /// Down, with why.
    Down(String),
}

/// The host side of a protocol in which Vigil has to speak (the IntelliVue session, the S/5 record requests), as
/// a pure state machine the pump runs: time in ([`Talker::poll`], milliseconds since the connection opened),
/// bytes out ([`Talker::take_outgoing`]). The decoder that owns it sees the device's frames, so the talker knows
/// what the device has said.
pub trait Talker: Send {
    /// Advances to `now` (ms): queues what has come due.
    fn poll(&mut self, now: u64);
    /// The next message to write now, if any.
    fn take_outgoing(&mut self, now: u64) -> Option<Vec<u8>>;
    /// When [`Talker::poll`] next has something to do (ms).
    fn next_due(&self, now: u64) -> u64;
    /// A change of the protocol-level link for the bed, once.
    fn take_link_change(&mut self) -> Option<LinkChange> {
        None
    }
    /// What to send at a clean end (the IntelliVue release), if anything.
    fn release(&mut self) -> Option<Vec<u8>> {
        None
    }
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The frame's structure is wrong.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A frame exceeded the maximum size and was dropped.
    #[error("frame too long ({0} bytes) dropped")]
    TooLong(usize),
}

/// Test helper for the decoders: every item `d` gives for `bytes`, then at the end of the stream.
#[cfg(test)]
pub(crate) fn decode_all<D>(mut d: D, bytes: &[u8]) -> Vec<Result<Frame, DecodeError>>
where
    D: tokio_util::codec::Decoder<Item = Result<Frame, DecodeError>, Error = std::io::Error>,
{
    let mut buf = bytes::BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(item) = d.decode(&mut buf).expect("decoders never fail the stream") {
        out.push(item);
    }
    while let Some(item) = d.decode_eof(&mut buf).expect("decoders never fail the stream") {
        out.push(item);
    }
    out
}

pub mod hl7;
pub mod intellivue;
pub mod masimo;
pub mod mllp;
pub mod nonin;
pub mod plausibility;
pub mod s5;
