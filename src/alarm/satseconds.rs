//! Nellcor SatSeconds for the SpO2 low medium band (CLINICAL.md "Reducing alarm fatigue"): integrate
//! percentage points below the limit × seconds and alarm when the integral reaches the setting (10, 25, 50 or
//! 100); the integral counts back down while SpO2 is in range. Safety net: `crossings` dips below the limit
//! within `crossing_window_s` alarm anyway. A 4 s dip to 89 % against 92 % is 12 point·s: no alarm at 25.

use super::profile::SatSecondsConfig;

/// Why SatSeconds says "alarm".
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// The integral reached the setting.
    Integral(f64),
    /// Too many crossings in the window.
    Crossings(u32),
}

/// SatSeconds state for one bed.
#[derive(Debug, Clone)]
pub struct SatSeconds {
    limit: f64,
    setting: f64,
    needed: usize,
    window_ms: i64,
    integral: f64,
    held: Option<(i64, f64)>,
    below: bool,
    crossings: [i64; 16],
    n_crossings: usize,
}

impl SatSeconds {
    /// SatSeconds against `limit` (the SpO2 low medium limit).
    pub fn new(limit: f64, cfg: &SatSecondsConfig) -> SatSeconds {
        SatSeconds {
            limit,
            setting: cfg.setting as f64,
            needed: (cfg.crossings as usize).clamp(2, 16),
            window_ms: cfg.crossing_window_s as i64 * 1000,
            integral: 0.0,
            held: None,
            below: false,
            crossings: [0; 16],
            n_crossings: 0,
        }
    }

    /// Integrates the held value up to `now`; a value older than `stale_ms` counts only until it went stale.
    #[inline]
    pub fn advance(&mut self, now: i64, stale_ms: i64) {
        let Some((t, v)) = self.held else { return };
        let end = now.min(t + stale_ms);
        if end <= t {
            return;
        }
        let dt = (end - t) as f64 / 1000.0;
        if v < self.limit {
            self.integral += (self.limit - v) * dt;
        } else {
            self.integral = (self.integral - (v - self.limit).max(1.0) * dt).max(0.0);
        }
        self.held = Some((end, v));
    }

    /// A new valid value at `t` (call [`SatSeconds::advance`] first).
    #[inline]
    pub fn observe(&mut self, t: i64, v: f64) {
        let below = v < self.limit;
        if below && !self.below {
            let i = self.n_crossings % self.crossings.len();
            self.crossings[i] = t;
            self.n_crossings += 1;
        }
        self.below = below;
        self.held = Some((t, v));
    }

    /// Whether the medium band should alarm now.
    #[inline]
    pub fn triggered(&self, now: i64) -> Option<Trigger> {
        if !self.below {
            return None;
        }
        if self.integral >= self.setting {
            return Some(Trigger::Integral(self.integral));
        }
        let recent = self.recent_crossings(now);
        (recent as usize >= self.needed).then_some(Trigger::Crossings(recent))
    }

    /// Crossings below the limit within the window before `now`.
    pub fn recent_crossings(&self, now: i64) -> u32 {
        let n = self.n_crossings.min(self.crossings.len());
        (0..n).filter(|&k| now - self.crossings[k] <= self.window_ms).count() as u32
    }

    /// The integral, point·s.
    pub fn integral(&self) -> f64 {
        self.integral
    }

    /// The setting.
    pub fn setting(&self) -> f64 {
        self.setting
    }

    /// The limit integrated against.
    pub fn limit(&self) -> f64 {
        self.limit
    }

    /// Forget everything (new patient).
    pub fn reset(&mut self) {
        self.integral = 0.0;
        self.held = None;
        self.below = false;
        self.n_crossings = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SatSecondsConfig {
        SatSecondsConfig { enabled: true, setting: 25, crossings: 3, crossing_window_s: 60, deep_drop_points: 5.0 }
    }

    fn feed(s: &mut SatSeconds, t: i64, v: f64) {
        s.advance(t, 10_000);
        s.observe(t, v);
    }

    #[test]
    fn a_four_second_dip_to_89_stays_under_25() {
        let mut s = SatSeconds::new(92.0, &cfg());
        feed(&mut s, 0, 97.0);
        for k in 1..=4 {
            feed(&mut s, k * 1000, 89.0);
            assert_eq!(s.triggered(k * 1000), None);
        }
        feed(&mut s, 5000, 96.0);
        assert_eq!(s.integral(), 12.0);
        assert_eq!(s.triggered(5000), None);
    }

    #[test]
    fn ninety_one_percent_alarms_after_25_seconds() {
        let mut s = SatSeconds::new(92.0, &cfg());
        feed(&mut s, 0, 91.0);
        for k in 1..=24 {
            feed(&mut s, k * 1000, 91.0);
            assert_eq!(s.triggered(k * 1000), None, "at {k} s");
        }
        feed(&mut s, 25_000, 91.0);
        assert_eq!(s.triggered(25_000), Some(Trigger::Integral(25.0)));
    }

    #[test]
    fn three_brief_crossings_within_a_minute_alarm_anyway() {
        let mut s = SatSeconds::new(92.0, &cfg());
        let mut t = 0;
        for _ in 0..2 {
            feed(&mut s, t, 91.0);
            feed(&mut s, t + 1000, 95.0);
            t += 20_000;
        }
        feed(&mut s, t, 91.0);
        assert_eq!(s.triggered(t), Some(Trigger::Crossings(3)));
    }

    #[test]
    fn the_integral_counts_back_down_in_range() {
        let mut s = SatSeconds::new(92.0, &cfg());
        feed(&mut s, 0, 90.0);
        feed(&mut s, 10_000, 97.0);
        assert_eq!(s.integral(), 20.0);
        feed(&mut s, 12_000, 97.0);
        assert_eq!(s.integral(), 10.0);
    }
}
