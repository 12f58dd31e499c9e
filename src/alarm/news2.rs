//! Advisory NEWS2 (Royal College of Physicians 2017; table in CLINICAL.md) from the parameters a chair monitor
//! has: respiration rate, SpO2 (scale 1, on air assumed), systolic pressure and pulse. Consciousness and
//! temperature are not measured, so the score is partial and says so. Advisory: low priority, never escalates.

/// Respiration rate points.
pub fn rr_points(v: f64) -> u8 {
    match v {
        v if v <= 8.0 => 3,
        v if v < 12.0 => 1,
        v if v <= 20.0 => 0,
        v if v < 25.0 => 2,
        _ => 3,
    }
}

/// SpO2 scale 1 points.
pub fn spo2_points(v: f64) -> u8 {
    match v {
        v if v <= 91.0 => 3,
        v if v <= 93.0 => 2,
        v if v <= 95.0 => 1,
        _ => 0,
    }
}

/// Systolic points.
pub fn sys_points(v: f64) -> u8 {
    match v {
        v if v <= 90.0 => 3,
        v if v <= 100.0 => 2,
        v if v <= 110.0 => 1,
        v if v < 220.0 => 0,
        _ => 3,
    }
}

/// Pulse points.
pub fn pulse_points(v: f64) -> u8 {
    match v {
        v if v <= 40.0 => 3,
        v if v <= 50.0 => 1,
        v if v <= 90.0 => 0,
        v if v <= 110.0 => 1,
        v if v <= 130.0 => 2,
        _ => 3,
    }
}

/// A partial NEWS2 score.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Score {
    /// Total of the scored parameters.
    pub total: u32,
    /// Some parameter scored 3.
    pub any_three: bool,
    /// Points per parameter (rr, spo2, sys, pulse), `None` when not available.
    pub parts: [Option<u8>; 4],
}

/// Scores what is available.
pub fn score(rr: Option<f64>, spo2: Option<f64>, sys: Option<f64>, pulse: Option<f64>) -> Score {
    let parts = [rr.map(rr_points), spo2.map(spo2_points), sys.map(sys_points), pulse.map(pulse_points)];
    let total = parts.iter().flatten().map(|&p| p as u32).sum();
    Score { total, any_three: parts.iter().flatten().any(|&p| p == 3), parts }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_edges_follow_the_rcp_table() {
        let rr = [(8.0, 3), (9.0, 1), (11.0, 1), (12.0, 0), (20.0, 0), (21.0, 2), (24.0, 2), (25.0, 3)];
        for (v, p) in rr {
            assert_eq!(rr_points(v), p, "rr {v}");
        }
        let spo2 = [(91.0, 3), (92.0, 2), (93.0, 2), (94.0, 1), (95.0, 1), (96.0, 0)];
        for (v, p) in spo2 {
            assert_eq!(spo2_points(v), p, "spo2 {v}");
        }
        let sys = [(90.0, 3), (91.0, 2), (100.0, 2), (101.0, 1), (110.0, 1), (111.0, 0), (219.0, 0), (220.0, 3)];
        for (v, p) in sys {
            assert_eq!(sys_points(v), p, "sys {v}");
        }
        let pulse = [(40.0, 3), (41.0, 1), (50.0, 1), (51.0, 0), (90.0, 0), (91.0, 1), (110.0, 1), (111.0, 2)];
        for (v, p) in pulse.into_iter().chain([(130.0, 2), (131.0, 3)]) {
            assert_eq!(pulse_points(v), p, "pulse {v}");
        }
    }

    #[test]
    fn a_calm_patient_scores_zero_and_missing_parameters_are_not_scored() {
        assert_eq!(score(Some(14.0), Some(97.0), Some(125.0), Some(72.0)).total, 0);
        let s = score(None, Some(93.0), None, Some(115.0));
        assert_eq!((s.total, s.any_three, s.parts[0]), (4, false, None));
    }
}
