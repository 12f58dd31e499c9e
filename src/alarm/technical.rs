//! Technical alarms (CLINICAL.md "Physiological and technical alarms"): per source, what the device says about
//! its sensor and link, and how many of its frames were garbage. Per parameter no-data and NIBP overdue timers
//! live in the engine because they need the readings and the session.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::ingest::protocol::{DeviceAlarm, SensorFlags};

/// What a bed task tells the engine about a source (link, sensor, demo mode, error counters).
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceSignal {
    /// The link is up.
    Connected {
        /// Source name (`chair-1/0`).
        source: String,
    },
    /// The link is down.
    Disconnected {
        /// Source name.
        source: String,
        /// Why, for the message.
        reason: String,
    },
    /// Sensor flags as the device reported them (Masimo EXC, Nonin status).
    Sensor {
        /// Source name.
        source: String,
        /// Flags.
        flags: SensorFlags,
    },
    /// The device says it is (or no longer is) in demo mode.
    Demo {
        /// Source name.
        source: String,
        /// Demo on.
        on: bool,
    },
    /// The complete list of alarms the monitor shows now ([`crate::ingest::protocol::Frame::device_alarms`]).
    MonitorAlarms {
        /// Source name.
        source: String,
        /// The monitor's alarms (empty: none).
        alarms: Vec<DeviceAlarm>,
    },
    /// Cumulative frame counters of the source (they may restart at 0 after a reconnect).
    InputErrors {
        /// Source name.
        source: String,
        /// Frames that could not be decoded, or values rejected, so far.
        bad: u64,
        /// All frames so far.
        total: u64,
    },
}

impl DeviceSignal {
    /// The source the signal is about.
    pub fn source(&self) -> &str {
        match self {
            DeviceSignal::Connected { source }
            | DeviceSignal::Disconnected { source, .. }
            | DeviceSignal::Sensor { source, .. }
            | DeviceSignal::Demo { source, .. }
            | DeviceSignal::MonitorAlarms { source, .. }
            | DeviceSignal::InputErrors { source, .. } => source,
        }
    }
}

/// Which sensor condition a source reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorProblem {
    /// No sensor, sensor off the patient, or defective.
    Off,
    /// Searching for a pulse.
    PulseSearch,
}

/// Classifies flags: an off/defective sensor outranks a pulse search.
pub fn sensor_problem(flags: SensorFlags) -> Option<SensorProblem> {
    let off = SensorFlags::NO_SENSOR.union(SensorFlags::SENSOR_OFF).union(SensorFlags::DEFECTIVE);
    if flags.0 & off.0 != 0 {
        Some(SensorProblem::Off)
    } else if flags.contains(SensorFlags::PULSE_SEARCH) {
        Some(SensorProblem::PulseSearch)
    } else {
        None
    }
}

/// Snapshots the error-rate window keeps per window, about: one per frame would be 60 per source at 1 Hz, kept
/// for every source of every bed, where a rate over 60 s needs no finer steps than a few seconds.
const COUNTER_STEPS: i64 = 12;

/// Per-source technical state.
#[derive(Debug, Clone)]
pub struct SourceState {
    /// Source name.
    pub name: Arc<str>,
    /// Current sensor problem and since when.
    pub sensor: Option<(SensorProblem, i64)>,
    /// Low battery reported.
    pub low_battery: bool,
    /// The device says it is in demo mode.
    pub demo: bool,
    /// The link to the source is lost.
    pub disconnected: bool,
    /// Counter snapshots `(t, bad, total)` within the window, at least a [`COUNTER_STEPS`]th of it apart (but
    /// the newest).
    pub counters: VecDeque<(i64, u64, u64)>,
}

/// The input error rate over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorRate {
    /// Bad frames in the window.
    pub bad: u64,
    /// All frames in the window.
    pub total: u64,
    /// Window actually covered, seconds.
    pub span_s: f64,
}

impl ErrorRate {
    /// bad / total.
    pub fn ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.bad as f64 / self.total as f64
        }
    }
}

impl SourceState {
    /// A fresh source.
    pub fn new(name: &str) -> SourceState {
        SourceState {
            name: name.into(),
            sensor: None,
            low_battery: false,
            demo: false,
            disconnected: false,
            counters: VecDeque::new(),
        }
    }

    /// Records cumulative counters and returns the rate over the last `window_ms` (to a [`COUNTER_STEPS`]th of
    /// it more). Counters that go backwards (a reconnect restarted them) start a new window.
    pub fn record_counters(&mut self, t: i64, bad: u64, total: u64, window_ms: i64) -> ErrorRate {
        if self.counters.back().is_some_and(|&(_, b, n)| total < n || bad < b) {
            self.counters.clear();
        }
        let n = self.counters.len();
        if n >= 2 && self.counters[n - 1].0 - self.counters[n - 2].0 < window_ms / COUNTER_STEPS {
            // The newest is too close to the one before it to be worth keeping: this one takes its place.
            self.counters[n - 1] = (t, bad, total);
        } else {
            self.counters.push_back((t, bad, total));
        }
        // Keep one snapshot at or before the window's start as the baseline of the window.
        while self.counters.len() > 2 && t - self.counters[1].0 >= window_ms {
            self.counters.pop_front();
        }
        let &(t0, b0, n0) = self.counters.front().expect("just pushed");
        if self.counters.len() == 1 {
            // First snapshot of a window: judge the counters themselves (a source that starts out failing).
            return ErrorRate { bad, total, span_s: 0.0 };
        }
        ErrorRate { bad: bad - b0, total: total - n0, span_s: (t - t0) as f64 / 1000.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_outranks_search_and_doubtful_flags_are_not_problems() {
        assert_eq!(sensor_problem(SensorFlags::SENSOR_OFF.union(SensorFlags::PULSE_SEARCH)), Some(SensorProblem::Off));
        assert_eq!(sensor_problem(SensorFlags::PULSE_SEARCH), Some(SensorProblem::PulseSearch));
        assert_eq!(sensor_problem(SensorFlags::LOW_PERFUSION.union(SensorFlags::ARTEFACT)), None);
    }

    #[test]
    fn the_error_rate_is_taken_over_the_window_and_survives_counter_restarts() {
        let mut s = SourceState::new("chair-1/0");
        s.record_counters(0, 0, 0, 60_000);
        let r = s.record_counters(30_000, 10, 30, 60_000);
        assert_eq!((r.bad, r.total), (10, 30));
        let r = s.record_counters(90_000, 10, 90, 60_000);
        assert_eq!((r.bad, r.total), (0, 60));
        let r = s.record_counters(200_000, 10, 190, 60_000);
        assert_eq!((r.bad, r.total, r.span_s), (0, 100, 110.0));
        let r = s.record_counters(91_000, 2, 3, 60_000);
        assert_eq!((r.bad, r.total), (2, 3));
    }

    #[test]
    fn a_one_hertz_source_keeps_a_few_snapshots_and_its_rate_still_covers_the_window() {
        let mut s = SourceState::new("chair-1/0");
        let mut bad = 0;
        let mut rate = None;
        for second in 0..300u64 {
            // Three bad frames in the last minute, one long before it.
            if [20, 250, 270, 290].contains(&second) {
                bad += 1;
            }
            rate = Some(s.record_counters(second as i64 * 1000, bad, second + 1, 60_000));
            assert!(s.counters.len() <= 16, "{} snapshots at {second} s", s.counters.len());
        }
        let rate = rate.unwrap();
        assert_eq!(rate.bad, 3, "{rate:?}");
        assert!((60.0..=65.0).contains(&rate.span_s), "{rate:?}");
        assert_eq!(rate.total as f64, rate.span_s, "one frame a second over the span: {rate:?}");
    }
}
