//! Plausibility check: values no patient can have are input errors, not vital signs (issue #4: SpO2 > 100,
//! HR > 350, systolic ≤ diastolic). They are removed from the frame and counted separately from undecodable
//! frames, so a monitor that sends nonsense is visible in its status instead of raising physiological alarms.

use super::Frame;
use crate::vitals::Parameter;

/// One rejected value and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The parameter.
    pub parameter: Parameter,
    /// The value as decoded.
    pub value: f64,
    /// Why it cannot be right.
    pub reason: &'static str,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} rejected: {}", self.parameter, self.value, self.reason)
    }
}

/// Removes impossible values from `frame` and returns them. Ranges come from [`Parameter::plausible_range`]; NIBP
/// from one cuff cycle must have systolic > diastolic and a mean between them, otherwise all three go (one of
/// them is wrong and the frame cannot say which).
pub fn check(frame: &mut Frame) -> Vec<Rejection> {
    let mut rejected = Vec::new();
    frame.measurements.retain(|m| {
        let Some(v) = m.value else { return true };
        let (lo, hi) = m.parameter.plausible_range();
        let reason = if !v.is_finite() {
            "not a number"
        } else if v < lo {
            "negative"
        } else if v > hi {
            "above the physiological maximum"
        } else {
            return true;
        };
        rejected.push(Rejection { parameter: m.parameter, value: v, reason });
        false
    });
    let get = |p: Parameter| frame.measurements.iter().find(|m| m.parameter == p).and_then(|m| m.value);
    let (sys, dia, mean) = (get(Parameter::NibpSys), get(Parameter::NibpDia), get(Parameter::NibpMean));
    let reason = match (sys, dia, mean) {
        (Some(s), Some(d), _) if s <= d => Some("systolic not above diastolic"),
        (Some(s), Some(d), Some(m)) if m > s || m < d => Some("mean outside systolic..diastolic"),
        _ => None,
    };
    if let Some(reason) = reason {
        frame.measurements.retain(|m| {
            if m.parameter.is_nibp() && m.value.is_some() {
                rejected.push(Rejection { parameter: m.parameter, value: m.value.unwrap_or_default(), reason });
                false
            } else {
                true
            }
        });
    }
    rejected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::protocol::Measurement;
    use crate::vitals::ValueStatus;

    fn frame(values: &[(Parameter, f64)]) -> Frame {
        Frame {
            measurements: values
                .iter()
                .map(|(p, v)| Measurement {
                    parameter: *p,
                    value: Some(*v),
                    status: ValueStatus::Valid,
                    observed: None,
                    device_limits: None,
                    spot: false,
                })
                .collect(),
            ..Frame::default()
        }
    }

    #[test]
    fn spo2_above_100_hr_above_350_and_negative_values_are_rejected() {
        let mut f =
            frame(&[(Parameter::Spo2, 101.0), (Parameter::Hr, 351.0), (Parameter::Pr, -5.0), (Parameter::Rr, 14.0)]);
        let r = check(&mut f);
        assert_eq!(r.len(), 3);
        assert_eq!(f.measurements.len(), 1);
        assert_eq!(f.measurements[0].parameter, Parameter::Rr);
    }

    #[test]
    fn systolic_not_above_diastolic_rejects_the_whole_cuff_reading_but_nothing_else() {
        let mut f = frame(&[
            (Parameter::NibpSys, 80.0),
            (Parameter::NibpDia, 90.0),
            (Parameter::NibpMean, 85.0),
            (Parameter::Spo2, 97.0),
        ]);
        assert_eq!(check(&mut f).len(), 3);
        assert_eq!(f.measurements.len(), 1);
        let mut f = frame(&[(Parameter::NibpSys, 147.0), (Parameter::NibpDia, 90.0), (Parameter::NibpMean, 109.0)]);
        assert!(check(&mut f).is_empty());
        assert_eq!(f.measurements.len(), 3);
    }

    #[test]
    fn boundary_values_are_kept() {
        let mut f = frame(&[(Parameter::Spo2, 100.0), (Parameter::Hr, 350.0)]);
        assert!(check(&mut f).is_empty());
    }
}
