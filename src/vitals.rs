//! Domain types for vital signs: what a parameter is, and what one reading of it says.
//!
//! Codes and units come from docs/sources.md ("Codes and units"): IEEE 11073 MDC codes, UCUM units and
//! LOINC codes, so that every payload Vigil emits names its parameter in the vocabularies integrators use.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A bed's identifier as written in the configuration (`chair-1`). Cheap to clone on the hot path.
pub type BedId = Arc<str>;

/// A moment in time. Alarm timing always uses the receive time, never a device clock (device clocks are often
/// wrong: docs/sources.md, "Devices and data").
pub type Timestamp = DateTime<Utc>;

/// A vital-sign parameter. The serde name (`hr`, `spo2`, `nibp_sys`, …) is the one used everywhere: config,
/// CSV, JSON, MQTT topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parameter {
    /// Heart rate from ECG.
    Hr,
    /// Pulse rate from the oximeter (or the NIBP cuff).
    Pr,
    /// Peripheral oxygen saturation.
    Spo2,
    /// Non-invasive blood pressure, systolic.
    NibpSys,
    /// Non-invasive blood pressure, diastolic.
    NibpDia,
    /// Non-invasive blood pressure, mean arterial.
    NibpMean,
    /// Respiration rate.
    Rr,
    /// Perfusion index from the oximeter (pulsatile / non-pulsatile absorption, percent): shown and published,
    /// never alarmed on. It says how far the SpO2 beside it can be trusted (`spo2.min_perfusion_index`).
    Pi,
}

impl Parameter {
    /// Every parameter, in display order.
    pub const ALL: [Parameter; 8] = [
        Parameter::Hr,
        Parameter::Pr,
        Parameter::Spo2,
        Parameter::NibpSys,
        Parameter::NibpDia,
        Parameter::NibpMean,
        Parameter::Rr,
        Parameter::Pi,
    ];

    /// The name used in config, CSV, JSON and topics.
    pub const fn name(self) -> &'static str {
        match self {
            Parameter::Hr => "hr",
            Parameter::Pr => "pr",
            Parameter::Spo2 => "spo2",
            Parameter::NibpSys => "nibp_sys",
            Parameter::NibpDia => "nibp_dia",
            Parameter::NibpMean => "nibp_mean",
            Parameter::Rr => "rr",
            Parameter::Pi => "pi",
        }
    }

    /// Looks a parameter up by its name.
    pub fn from_name(name: &str) -> Option<Parameter> {
        Parameter::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Human-readable name for dashboards and payloads.
    pub const fn display_name(self) -> &'static str {
        match self {
            Parameter::Hr => "Heart rate",
            Parameter::Pr => "Pulse rate",
            Parameter::Spo2 => "SpO2",
            Parameter::NibpSys => "NIBP systolic",
            Parameter::NibpDia => "NIBP diastolic",
            Parameter::NibpMean => "NIBP mean",
            Parameter::Rr => "Respiration rate",
            Parameter::Pi => "Perfusion index",
        }
    }

    /// IEEE 11073-10101 MDC numeric code (CLINICAL.md). NIBP uses the `MDC_PRESS_BLD_NONINV_*` family; decoders
    /// also accept the `MDC_PRESS_CUFF_*` family. The perfusion index is `MDC_PULS_OXIM_PERF_REL` (150448, the
    /// code IntelliVue sends); the HL7 decoder also accepts `MDC_BLD_PERF_INDEX` (150488, Mindray's).
    pub const fn mdc_code(self) -> u32 {
        match self {
            Parameter::Hr => 147842,
            Parameter::Pr => 149530,
            Parameter::Spo2 => 150456,
            Parameter::NibpSys => 150021,
            Parameter::NibpDia => 150022,
            Parameter::NibpMean => 150023,
            Parameter::Rr => 151562,
            Parameter::Pi => 150448,
        }
    }

    /// IEEE 11073-10101 reference id matching [`Parameter::mdc_code`].
    pub const fn mdc_ref_id(self) -> &'static str {
        match self {
            Parameter::Hr => "MDC_ECG_HEART_RATE",
            Parameter::Pr => "MDC_PULS_OXIM_PULS_RATE",
            Parameter::Spo2 => "MDC_PULS_OXIM_SAT_O2",
            Parameter::NibpSys => "MDC_PRESS_BLD_NONINV_SYS",
            Parameter::NibpDia => "MDC_PRESS_BLD_NONINV_DIA",
            Parameter::NibpMean => "MDC_PRESS_BLD_NONINV_MEAN",
            Parameter::Rr => "MDC_RESP_RATE",
            Parameter::Pi => "MDC_PULS_OXIM_PERF_REL",
        }
    }

    /// UCUM unit of the value Vigil reports (after any conversion, e.g. kPa to mmHg).
    pub const fn ucum(self) -> &'static str {
        match self {
            Parameter::Hr | Parameter::Pr | Parameter::Rr => "/min",
            Parameter::Spo2 | Parameter::Pi => "%",
            Parameter::NibpSys | Parameter::NibpDia | Parameter::NibpMean => "mm[Hg]",
        }
    }

    /// LOINC code where CLINICAL.md names one.
    pub const fn loinc(self) -> Option<&'static str> {
        match self {
            Parameter::Hr => Some("8867-4"),
            Parameter::Pr => Some("8889-8"),
            Parameter::Spo2 => Some("59408-5"),
            Parameter::NibpSys => Some("8480-6"),
            Parameter::NibpDia => Some("8462-4"),
            Parameter::NibpMean => Some("8478-0"),
            Parameter::Rr => Some("9279-1"),
            Parameter::Pi => None,
        }
    }

    /// Continuous parameters stream about once a second; NIBP values are spot measurements that must never be
    /// delayed (CLINICAL.md, "Two delays").
    pub const fn is_continuous(self) -> bool {
        !self.is_nibp()
    }

    /// Whether the engine alarms on the parameter: every one but the perfusion index, which only qualifies SpO2.
    pub const fn is_alarmed(self) -> bool {
        !matches!(self, Parameter::Pi)
    }

    /// True for the three blood-pressure parameters.
    pub const fn is_nibp(self) -> bool {
        matches!(self, Parameter::NibpSys | Parameter::NibpDia | Parameter::NibpMean)
    }

    /// Values outside these bounds cannot be physiological and are rejected as input errors (issue #4: SpO2 >
    /// 100, HR > 350).
    pub const fn plausible_range(self) -> (f64, f64) {
        match self {
            Parameter::Hr | Parameter::Pr => (0.0, 350.0),
            Parameter::Spo2 => (0.0, 100.0),
            Parameter::NibpSys | Parameter::NibpDia | Parameter::NibpMean => (0.0, 350.0),
            Parameter::Rr => (0.0, 150.0),
            // A share of the absorbed light: never above 100 % (oximeters display 0.02–20 %).
            Parameter::Pi => (0.0, 100.0),
        }
    }
}

impl fmt::Display for Parameter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a parameter name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown parameter '{0}' (expected one of hr, pr, spo2, nibp_sys, nibp_dia, nibp_mean, rr, pi)")]
pub struct UnknownParameter(pub String);

impl FromStr for Parameter {
    type Err = UnknownParameter;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Parameter::from_name(s).ok_or_else(|| UnknownParameter(s.to_owned()))
    }
}

/// How far a value can be trusted. Only `Valid` values may raise physiological alarms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ValueStatus {
    /// A measured value the device stands behind.
    #[default]
    Valid,
    /// Measured, but the device flags it (low perfusion, interference, low signal IQ, artefact).
    Questionable,
    /// No value: probe off, searching, a sentinel such as -999, or a 0 from an oximeter.
    Unavailable,
    /// The monitor is in demo mode: simulated values that must never be mistaken for a patient's.
    Demo,
}

/// One value of one parameter for one bed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The bed the value belongs to.
    pub bed: BedId,
    /// What was measured.
    pub parameter: Parameter,
    /// The value in the parameter's UCUM unit; `None` when the device had no value.
    pub value: Option<f64>,
    /// How far the value can be trusted.
    pub status: ValueStatus,
    /// The time the device put on the value (its clock may be wrong), if it sent one.
    pub device_time: Option<Timestamp>,
    /// When Vigil received it: the time alarm logic uses.
    pub received: Timestamp,
    /// When a spot value was measured, if earlier than its receipt (an NIBP the monitor reports late or sends
    /// again), by [`measured_at`]: the one timing rule of the daemon and replay.
    #[serde(default)]
    pub measured: Option<Timestamp>,
    /// A spot measurement of a continuous parameter (the pulse the NIBP cuff or a spot check took): not the
    /// continuous stream, so it neither feeds nor silences that parameter's alarms.
    #[serde(default)]
    pub spot: bool,
    /// The source it came from (`<bed>/<index>`), so a lost link can explain a silent parameter.
    #[serde(default)]
    pub source: Option<Arc<str>>,
}

/// The longest a device may say a value is old; beyond it the clocks are taken to disagree and the value is
/// this old (stale, so `nibp_overdue` still fires, rather than fresh).
pub const MAX_MEASUREMENT_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// When a value was measured, on Vigil's clock: the device's observation time (HL7 OBX-14) is read against
/// the device's own clock at sending (HL7 MSH-7), or against the receive time when the message has none, and
/// the age so found is counted back from the receive time. A wrong device clock therefore shifts nothing, a
/// value is never in the future, and never older than [`MAX_MEASUREMENT_AGE`] (issue 10 item 4).
pub fn measured_at(observed: Option<Timestamp>, sent: Option<Timestamp>, received: Timestamp) -> Option<Timestamp> {
    let observed = observed?;
    let age = (sent.unwrap_or(received) - observed).clamp(chrono::TimeDelta::zero(), MAX_MEASUREMENT_AGE);
    Some(received - age)
}

impl Reading {
    /// The value if it may drive physiological alarms: present and valid.
    pub fn valid_value(&self) -> Option<f64> {
        match self.status {
            ValueStatus::Valid => self.value,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_name_round_trips_through_from_name_and_serde() {
        for p in Parameter::ALL {
            assert_eq!(Parameter::from_name(p.name()), Some(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
        }
        assert!("heart".parse::<Parameter>().is_err());
    }

    #[test]
    fn a_measurement_time_is_read_against_the_device_clock_and_never_lies_in_the_future() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let received = t("2026-01-01T12:00:00Z");
        // The device clock is an hour slow; the value was measured 24 min before it was sent.
        let sent = t("2026-01-01T11:00:00Z");
        let observed = t("2026-01-01T10:36:00Z");
        assert_eq!(measured_at(Some(observed), Some(sent), received), Some(t("2026-01-01T11:36:00Z")));
        // Without a message time the receive time is the reference; a future observation is "now".
        assert_eq!(measured_at(Some(t("2026-01-01T11:50:00Z")), None, received), Some(t("2026-01-01T11:50:00Z")));
        assert_eq!(measured_at(Some(t("2026-01-01T12:30:00Z")), None, received), Some(received));
        // A year-old observation is taken as the maximum age, never as fresh.
        assert_eq!(measured_at(Some(t("2025-01-01T12:00:00Z")), None, received), Some(received - MAX_MEASUREMENT_AGE));
        assert_eq!(measured_at(None, Some(sent), received), None);
    }

    #[test]
    fn only_valid_readings_offer_a_value_for_alarms() {
        let mut r = Reading {
            bed: "chair-1".into(),
            parameter: Parameter::Spo2,
            value: Some(85.0),
            status: ValueStatus::Valid,
            device_time: None,
            received: Utc::now(),
            measured: None,
            spot: false,
            source: None,
        };
        assert_eq!(r.valid_value(), Some(85.0));
        for s in [ValueStatus::Questionable, ValueStatus::Unavailable, ValueStatus::Demo] {
            r.status = s;
            assert_eq!(r.valid_value(), None, "{s:?}");
        }
    }
}
