//! Threshold bands: which priority a value falls in, with hysteresis so a value hovering at a limit does not
//! flap (CLINICAL.md "Default ketamine-chair profile"; limits are strict comparisons, as in its table).

use crate::event::Priority;
use crate::vitals::Parameter;

use super::lifecycle::Dir;
use super::profile::{Band, ParameterLimits};

/// One direction of one parameter's limits, ready for the hot path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// Above or below.
    pub dir: Dir,
    /// Medium-priority limit.
    pub medium: Option<f64>,
    /// High-priority limit.
    pub high: Option<f64>,
    /// How far inside the limit a value must come back to clear or de-escalate.
    pub hysteresis: f64,
    /// Low direction only: this far under the medium limit is high at once (SpO2 rapid desaturation).
    pub deep_points: Option<f64>,
}

impl Threshold {
    /// Builds the thresholds of one parameter (high direction, low direction).
    pub fn from_limits(l: &ParameterLimits, deep_points: Option<f64>) -> (Option<Threshold>, Option<Threshold>) {
        let mk = |b: Option<Band>, dir: Dir, deep: Option<f64>| {
            b.filter(|b| b.medium.is_some() || b.high.is_some()).map(|b| Threshold {
                dir,
                medium: b.medium,
                high: b.high,
                hysteresis: l.hysteresis,
                deep_points: deep,
            })
        };
        (mk(l.high, Dir::High, None), mk(l.low, Dir::Low, deep_points))
    }

    #[inline]
    fn beyond(&self, v: f64, limit: f64, slack: f64) -> bool {
        match self.dir {
            Dir::High => v > limit - slack,
            Dir::Low => v < limit + slack,
        }
    }

    /// The band `v` falls in. `present` is the band of the alarm if its condition is currently present: then the
    /// value must come back `hysteresis` inside a limit to leave that band.
    #[inline]
    pub fn band(&self, v: f64, present: Option<Priority>) -> Option<Priority> {
        let slack_high = if present == Some(Priority::High) { self.hysteresis } else { 0.0 };
        let mut high = self.high.is_some_and(|h| self.beyond(v, h, slack_high));
        if let (Some(d), Some(m), false) = (self.deep_points, self.medium, high) {
            high = v <= m - d || (present == Some(Priority::High) && v < m - d + self.hysteresis);
        }
        if high {
            return Some(Priority::High);
        }
        let slack_med = if present.is_some() { self.hysteresis } else { 0.0 };
        if let Some(m) = self.medium {
            if self.beyond(v, m, slack_med) {
                return Some(Priority::Medium);
            }
        } else if let Some(h) = self.high {
            // Only a high limit: it clears with hysteresis like any other band.
            if present.is_some() && self.beyond(v, h, self.hysteresis) {
                return Some(Priority::High);
            }
        }
        None
    }

    /// The limit of a band (what the value was compared with).
    pub fn limit(&self, band: Priority) -> Option<f64> {
        match band {
            Priority::High => self.high.or_else(|| self.medium.zip(self.deep_points).map(|(m, d)| m - d)),
            _ => self.medium,
        }
    }

    /// `>` or `<`, for messages.
    pub fn sign(&self) -> &'static str {
        match self.dir {
            Dir::High => ">",
            Dir::Low => "<",
        }
    }
}

/// The outermost limits that still protect, per parameter (low limit at least, high limit at most). They sit at
/// the edge of NEWS2's most severe bands (RCP 2017: SpO2 ≤ 91, systolic ≤ 90 or ≥ 220, pulse ≤ 40 or ≥ 131,
/// respiration ≤ 8 or ≥ 25) with a margin for clinics that widen limits on purpose: beyond them an override
/// leaves the alarm in effect off.
pub const fn safe_range(p: Parameter) -> (f64, f64) {
    match p {
        Parameter::Hr | Parameter::Pr => (30.0, 180.0),
        Parameter::Spo2 => (80.0, 100.0),
        Parameter::NibpSys => (60.0, 230.0),
        Parameter::NibpDia => (30.0, 130.0),
        Parameter::NibpMean => (40.0, 150.0),
        Parameter::Rr => (5.0, 40.0),
        // Never alarmed: no limit can leave an alarm off.
        Parameter::Pi => (0.0, 100.0),
    }
}

/// Why a band leaves its alarm in effect off, if it does: no limit at all, or the first limit to alarm is
/// beyond [`safe_range`].
pub fn off_reason(p: Parameter, dir: Dir, band: Option<Band>) -> Option<String> {
    let first = band.and_then(|b| b.medium.or(b.high));
    let (lo, hi) = safe_range(p);
    match (first, dir) {
        (None, _) => Some("no limit set".into()),
        (Some(l), Dir::Low) if l < lo => Some(format!("limit {l} is below the safe range (at least {lo})")),
        (Some(l), Dir::High) if l > hi => Some(format!("limit {l} is above the safe range (at most {hi})")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys_high() -> Threshold {
        Threshold { dir: Dir::High, medium: Some(160.0), high: Some(180.0), hysteresis: 5.0, deep_points: None }
    }
    fn spo2_low() -> Threshold {
        Threshold { dir: Dir::Low, medium: Some(92.0), high: Some(88.0), hysteresis: 1.0, deep_points: Some(5.0) }
    }

    #[test]
    fn bands_are_strict_comparisons_with_hysteresis_on_the_way_back() {
        let t = sys_high();
        let cases = [
            (160.0, None, None),
            (161.0, None, Some(Priority::Medium)),
            (180.0, None, Some(Priority::Medium)),
            (181.0, None, Some(Priority::High)),
            (176.0, Some(Priority::High), Some(Priority::High)),
            (175.0, Some(Priority::High), Some(Priority::Medium)),
            (156.0, Some(Priority::Medium), Some(Priority::Medium)),
            (155.0, Some(Priority::Medium), None),
        ];
        for (v, present, want) in cases {
            assert_eq!(t.band(v, present), want, "value {v} present {present:?}");
        }
    }

    #[test]
    fn spo2_deep_drop_is_high_at_once_and_clears_with_hysteresis() {
        let t = spo2_low();
        assert_eq!(t.band(92.0, None), None);
        assert_eq!(t.band(91.0, None), Some(Priority::Medium));
        assert_eq!(t.band(88.0, None), Some(Priority::Medium));
        assert_eq!(t.band(87.0, None), Some(Priority::High));
        assert_eq!(t.band(88.0, Some(Priority::High)), Some(Priority::High));
        assert_eq!(t.band(89.0, Some(Priority::High)), Some(Priority::Medium));
        assert_eq!(t.band(92.0, Some(Priority::Medium)), Some(Priority::Medium));
        assert_eq!(t.band(93.0, Some(Priority::Medium)), None);
        assert_eq!(t.limit(Priority::High), Some(88.0));
    }
}
