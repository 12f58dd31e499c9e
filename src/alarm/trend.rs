//! Trend detectors (CLINICAL.md "Trend detection"): a robust Theil–Sen slope over a window (Borowski 2011 used
//! repeated-median regression for the same reason: a single artefact must not fake a trend), and a two-sided
//! CUSUM of heart rate against a slow exponentially weighted reference for sustained drift (after Yang, Dumont &
//! Ansermino 2010). The rise-from-baseline rule lives in the engine because it needs the session.

use std::collections::VecDeque;

use super::profile::{DriftConfig, SlopeConfig};

/// What a slope detector saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Theil–Sen slope, units per minute.
    pub slope_per_min: f64,
    /// Fitted change across the window (slope × span), units.
    pub change: f64,
    /// Latest point (a bucket mean for bucketed series).
    pub latest: f64,
    /// Points in the window.
    pub points: usize,
    /// Span of the window, minutes.
    pub span_min: f64,
}

/// Theil–Sen slope of `(t_ms, v)` points in units per minute; `scratch` is reused so the hot path does not
/// allocate. The median is the middle order statistic (the mean of the two middle ones for an even count).
pub fn theil_sen(points: &VecDeque<(i64, f64)>, scratch: &mut Vec<f64>) -> Option<f64> {
    scratch.clear();
    let (a, b) = points.as_slices();
    for (i, &(ti, vi)) in points.iter().enumerate() {
        // The points after `i`, as at most two contiguous slices (the deque's ring), so the inner loop is a
        // plain slice walk.
        let (first, second) = if i < a.len() { (&a[i + 1..], b) } else { (&b[i - a.len() + 1..], &b[..0]) };
        for &(tj, vj) in first.iter().chain(second) {
            if tj != ti {
                scratch.push((vj - vi) / ((tj - ti) as f64 / 60_000.0));
            }
        }
    }
    median_in_place(scratch)
}

/// The median of `values` (reordered in place): the middle order statistic, or the mean of the two middle ones
/// for an even count; `None` when empty. The values must not be NaN (pairwise slopes of distinct times of finite
/// values never are). One selection instead of two: after it, the lower middle value is the largest of the
/// lower part.
pub fn median_in_place(values: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let k = n / 2;
    let (lower, &mut upper, _) = values.select_nth_unstable_by(k, f64::total_cmp);
    if n % 2 == 1 {
        return Some(upper);
    }
    let below = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((below + upper) / 2.0)
}

/// A robust-slope detector over a time window, with optional bucketing for 1 Hz series.
#[derive(Debug, Clone)]
pub struct RobustSlope {
    cfg: SlopeConfig,
    window_ms: i64,
    bucket_ms: i64,
    points: VecDeque<(i64, f64)>,
    bucket: Option<(i64, f64, u32)>,
    last: Option<Fit>,
}

thread_local! {
    /// The pairwise slopes of the fit in progress: one buffer per thread, not one per detector, so a bed costs
    /// only its points (at 5,000 chairs a buffer each was 20 MB) and the fit still does not allocate.
    static SCRATCH: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl RobustSlope {
    /// A detector.
    pub fn new(cfg: SlopeConfig) -> RobustSlope {
        RobustSlope {
            cfg,
            window_ms: cfg.window_s as i64 * 1000,
            bucket_ms: cfg.bucket_s as i64 * 1000,
            points: VecDeque::new(),
            bucket: None,
            last: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SlopeConfig {
        &self.cfg
    }

    /// The latest fit.
    pub fn last(&self) -> Option<Fit> {
        self.last
    }

    /// Forget everything.
    pub fn reset(&mut self) {
        self.points.clear();
        self.bucket = None;
        self.last = None;
    }

    /// A valid value at `t`. Returns a new fit when one was computed (every point, or every closed bucket).
    #[inline]
    pub fn observe(&mut self, t: i64, v: f64) -> Option<Fit> {
        if self.bucket_ms == 0 {
            return self.push(t, v);
        }
        let idx = t.div_euclid(self.bucket_ms);
        match &mut self.bucket {
            Some((b, sum, n)) if *b == idx => {
                *sum += v;
                *n += 1;
                None
            }
            slot => {
                let closed = slot.replace((idx, v, 1));
                let (b, sum, n) = closed?;
                self.push(b * self.bucket_ms + self.bucket_ms / 2, sum / n as f64)
            }
        }
    }

    fn push(&mut self, t: i64, v: f64) -> Option<Fit> {
        if self.points.back().is_some_and(|&(last, _)| t - last > self.window_ms) {
            self.points.clear();
        }
        self.points.push_back((t, v));
        while self.points.front().is_some_and(|&(first, _)| t - first > self.window_ms) {
            self.points.pop_front();
        }
        if self.points.len() < self.cfg.min_points {
            self.last = None;
            return None;
        }
        let span_min = (t - self.points[0].0) as f64 / 60_000.0;
        if self.beyond_gate(v) {
            // Beyond the gate, even with the hysteresis of a present alarm, no slope can alarm: the fit (a
            // median of every pairwise slope, the costliest step of the engine) is not worth computing.
            let fit = Fit { slope_per_min: 0.0, change: 0.0, latest: v, points: self.points.len(), span_min };
            self.last = Some(fit);
            return Some(fit);
        }
        let slope = SCRATCH.with_borrow_mut(|scratch| theil_sen(&self.points, scratch))?;
        let fit =
            Fit { slope_per_min: slope, change: slope * span_min, latest: v, points: self.points.len(), span_min };
        self.last = Some(fit);
        Some(fit)
    }

    /// Whether `latest` fails the gate whether or not the alarm is present (see [`RobustSlope::alarming`]).
    #[inline]
    fn beyond_gate(&self, latest: f64) -> bool {
        let rising = self.cfg.slope_per_min > 0.0;
        match self.cfg.gate {
            None => false,
            Some(g) if rising => latest <= g,
            Some(g) => latest >= g + 1.0,
        }
    }

    /// Whether a fit shows the trend. While the alarm's condition is present (`present`), the slope and change
    /// thresholds are halved so it does not flap at the edge.
    pub fn alarming(&self, fit: &Fit, present: bool) -> bool {
        let f = if present { 0.5 } else { 1.0 };
        let rising = self.cfg.slope_per_min > 0.0;
        let steep = if rising {
            fit.slope_per_min >= self.cfg.slope_per_min * f
        } else {
            fit.slope_per_min <= self.cfg.slope_per_min * f
        };
        let big = fit.change.abs() >= self.cfg.min_change * f && (fit.change > 0.0) == rising;
        let gated = match self.cfg.gate {
            None => true,
            Some(g) if rising => fit.latest > g,
            Some(g) => fit.latest < g + if present { 1.0 } else { 0.0 },
        };
        steep && big && gated
    }
}

/// What the drift detector saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftState {
    /// Reference (slow EWMA), bpm.
    pub reference: f64,
    /// Latest value.
    pub latest: f64,
    /// Upward CUSUM, bpm·s.
    pub up: f64,
    /// Downward CUSUM, bpm·s.
    pub down: f64,
}

/// Two-sided CUSUM against a slow reference that freezes while a deviation accumulates.
#[derive(Debug, Clone)]
pub struct Drift {
    cfg: DriftConfig,
    first: Option<i64>,
    last_t: i64,
    reference: f64,
    latest: f64,
    up: f64,
    down: f64,
}

impl Drift {
    /// A detector.
    pub fn new(cfg: DriftConfig) -> Drift {
        Drift { cfg, first: None, last_t: 0, reference: 0.0, latest: 0.0, up: 0.0, down: 0.0 }
    }

    /// Forget everything.
    pub fn reset(&mut self) {
        self.first = None;
        self.up = 0.0;
        self.down = 0.0;
    }

    /// Accept the present level as the new reference (a nurse acknowledged the drift).
    pub fn rebase(&mut self) {
        self.reference = self.latest;
        self.up = 0.0;
        self.down = 0.0;
    }

    /// A valid value at `t`.
    #[inline]
    pub fn observe(&mut self, t: i64, v: f64) {
        self.latest = v;
        let Some(first) = self.first else {
            self.first = Some(t);
            self.last_t = t;
            self.reference = v;
            return;
        };
        let gap_s = (t - self.last_t) as f64 / 1000.0;
        if gap_s > self.cfg.reference_tau_s {
            // A gap longer than the reference's memory: start over (new patient, long disconnection).
            self.first = None;
            self.up = 0.0;
            self.down = 0.0;
            return self.observe(t, v);
        }
        let dt = gap_s.clamp(0.0, self.cfg.max_dt_s);
        self.last_t = t;
        if t - first >= self.cfg.warmup_s as i64 * 1000 {
            let cap = self.cfg.h;
            self.up = (self.up + (v - self.reference - self.cfg.k) * dt).clamp(0.0, cap);
            self.down = (self.down + (self.reference - v - self.cfg.k) * dt).clamp(0.0, cap);
        }
        // While a deviation accumulates the reference follows four times slower, so a drift is not absorbed
        // before it is detected, yet a new stable level becomes the reference within about an hour and the
        // alarm ends by itself (a nurse acknowledging it rebases at once).
        let tau =
            if self.up == 0.0 && self.down == 0.0 { self.cfg.reference_tau_s } else { 4.0 * self.cfg.reference_tau_s };
        let alpha = 1.0 - (-dt / tau).exp();
        self.reference += alpha * (v - self.reference);
    }

    /// +1 drifting up, -1 down, 0 none. While present, it clears only below half the decision interval.
    pub fn direction(&self, present: bool) -> i8 {
        let h = if present { self.cfg.h * 0.5 } else { self.cfg.h };
        if self.up >= h {
            1
        } else if self.down >= h {
            -1
        } else {
            0
        }
    }

    /// The state, for evidence.
    pub fn state(&self) -> DriftState {
        DriftState { reference: self.reference, latest: self.latest, up: self.up, down: self.down }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Priority;

    fn slope_cfg() -> SlopeConfig {
        SlopeConfig {
            enabled: true,
            window_s: 1800,
            bucket_s: 0,
            min_points: 4,
            slope_per_min: 1.5,
            min_change: 25.0,
            gate: None,
            priority: Priority::Low,
        }
    }

    #[test]
    fn a_fall_beyond_the_gate_never_alarms_with_or_without_the_fit_and_one_inside_it_does() {
        let cfg = SlopeConfig {
            slope_per_min: -1.0,
            min_change: 2.0,
            gate: Some(95.0),
            bucket_s: 5,
            min_points: 12,
            window_s: 120,
            ..slope_cfg()
        };
        // The same steep fall (1.5 %/min), once above the gate and once through it.
        for (start, gated_out) in [(104.0, true), (97.0, false)] {
            let mut d = RobustSlope::new(cfg);
            let mut last = None;
            for s in 0..120i64 {
                if let Some(f) = d.observe(s * 1000, start - s as f64 * 1.5 / 60.0) {
                    last = Some(f);
                }
            }
            let f = last.unwrap();
            assert_eq!(d.alarming(&f, true), !gated_out, "start {start}: {f:?}");
            assert_eq!(f.slope_per_min == 0.0, gated_out, "the fit is skipped only beyond the gate: {f:?}");
        }
    }

    proptest::proptest! {
        /// The one-selection median is exactly statrs' two-selection median (the engine's result before the
        /// replay speed work), ties, odd and even counts included.
        #[test]
        fn the_median_is_exactly_the_two_middle_order_statistics_of_statrs(
            values in proptest::collection::vec(-40i32..40, 1..300),
            scale in 1u32..7,
        ) {
            use statrs::statistics::{Data, OrderStatistics};
            let mut v: Vec<f64> = values.iter().map(|x| *x as f64 / scale as f64).collect();
            let mut reference = v.clone();
            let expected = Data::new(&mut reference[..]).median();
            proptest::prop_assert_eq!(median_in_place(&mut v).map(f64::to_bits), Some(expected.to_bits()));
        }

        /// Over a deque whose ring has wrapped (two slices), the fit sees every pair once, as a plain loop does.
        #[test]
        fn theil_sen_over_a_wrapped_deque_sees_every_pair(
            values in proptest::collection::vec(80i32..100, 2..40),
            pops in 0usize..30,
        ) {
            let mut pts: VecDeque<(i64, f64)> = VecDeque::with_capacity(4);
            for (k, v) in values.iter().enumerate() {
                pts.push_back((k as i64 * 5000, *v as f64));
                if k < pops && pts.len() > 2 {
                    pts.pop_front();
                }
            }
            let mut pairs = Vec::new();
            let v: Vec<(i64, f64)> = pts.iter().copied().collect();
            for i in 0..v.len() {
                for j in i + 1..v.len() {
                    pairs.push((v[j].1 - v[i].1) / ((v[j].0 - v[i].0) as f64 / 60_000.0));
                }
            }
            use statrs::statistics::{Data, OrderStatistics};
            let expected = Data::new(&mut pairs[..]).median();
            proptest::prop_assert_eq!(theil_sen(&pts, &mut Vec::new()).map(f64::to_bits), Some(expected.to_bits()));
        }
    }

    #[test]
    fn theil_sen_ignores_one_wild_point() {
        let pts: VecDeque<(i64, f64)> =
            [(0, 100.0), (60_000, 101.0), (120_000, 250.0), (180_000, 103.0), (240_000, 104.0)].into();
        let s = theil_sen(&pts, &mut Vec::new()).unwrap();
        assert!((s - 1.0).abs() < 0.6, "slope {s}");
    }

    #[test]
    fn a_steep_sustained_rise_over_four_readings_is_a_trend_but_a_slow_one_is_not() {
        let mut d = RobustSlope::new(slope_cfg());
        let mut fit = None;
        for (k, v) in [130.0, 140.0, 150.0, 160.0].into_iter().enumerate() {
            fit = d.observe(k as i64 * 300_000, v);
        }
        let fit = fit.unwrap();
        assert!(d.alarming(&fit, false), "{fit:?}");
        let mut slow = RobustSlope::new(slope_cfg());
        let mut fit = None;
        for (k, v) in [130.0, 132.0, 134.0, 136.0, 138.0].into_iter().enumerate() {
            fit = slow.observe(k as i64 * 300_000, v);
        }
        assert!(!slow.alarming(&fit.unwrap(), false));
    }

    #[test]
    fn cusum_flags_a_sustained_rise_but_not_noise() {
        let cfg = DriftConfig {
            enabled: true,
            reference_tau_s: 600.0,
            warmup_s: 300,
            k: 15.0,
            h: 1800.0,
            max_dt_s: 60.0,
            priority: Priority::Low,
        };
        let mut d = Drift::new(cfg);
        for s in 0..900 {
            d.observe(s * 1000, 75.0 + if s % 2 == 0 { 8.0 } else { -8.0 });
        }
        assert_eq!(d.direction(false), 0);
        let mut hit = None;
        for s in 900..1200 {
            d.observe(s * 1000, 110.0);
            if hit.is_none() && d.direction(false) == 1 {
                hit = Some(s - 900);
            }
        }
        // The reference started at the first value (83) and after 15 min of a 10-min EWMA sat near 76.8; it
        // then follows at a quarter of the rate, so 110 - ~77.5 - k(15) accumulates to h = 1800 in about 100 s.
        assert_eq!(hit, Some(102));
        // A new stable level becomes the reference within about an hour, and the drift ends by itself.
        let mut ended = None;
        for s in 1200..6000 {
            d.observe(s * 1000, 110.0);
            if ended.is_none() && d.direction(true) == 0 {
                ended = Some((s - 900) / 60);
            }
        }
        assert!(ended.is_some_and(|m| (30..70).contains(&m)), "ended after {ended:?} min");
    }
}
