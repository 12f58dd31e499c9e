//! The pure alarm engine: no I/O, no tokio, no wall clock. Readings, device signals, commands and time in;
//! alarm and session events out. One [`Engine`] per bed.
//!
//! Semantics and their sources: `docs/alarms.md` and the clinical reference (docs/sources.md). In short:
//! - threshold alarms take their priority from the limit band, clear with hysteresis, and wait out the
//!   profile's condition delay for continuous parameters; NIBP spot readings are never delayed;
//! - SpO2's medium band uses SatSeconds with a three-crossings safety net; a deep drop alarms high at once;
//! - only `Valid` readings raise physiological alarms, and a value of 0 is "no value" (monitors export 0 for
//!   missing HR/SpO2: docs/sources.md, "Devices and data"), never asystole or desaturation;
//! - trend alarms: rise from the session baseline, robust slopes, heart-rate CUSUM drift;
//! - technical alarms: no data, NIBP overdue, sensor off / pulse search, disconnected, demo, input errors;
//! - advisory NEWS2, low priority, never escalates;
//! - lifecycle per IEC 60601-1-8 / IHE ACM in [`lifecycle`].

pub mod lifecycle;
pub mod limits;
pub mod news2;
pub mod profile;
pub mod satseconds;
pub mod technical;
pub mod trend;

use std::sync::Arc;

use serde_json::{json, Value};

use crate::event::{AlarmKind, BedAlarms, Command, Event, Priority, SessionEvent, SessionPhase};
use crate::ingest::protocol::{DeviceAlarm, DeviceAlarmPriority};
use crate::session::{Session, SessionError};
use crate::vitals::{BedId, Parameter, Reading, Timestamp, ValueStatus};

use lifecycle::{evidence, secs, Detail, Dir, Key, Lifecycle, Obs, Refusal, Settings, MONITOR_ALARM};
use limits::Threshold;
use satseconds::{SatSeconds, Trigger};
use technical::{sensor_problem, SensorProblem, SourceState};
use trend::{Drift, RobustSlope};

pub use profile::{Profile, ProfileError};
pub use technical::DeviceSignal;

/// Why a command was refused. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// No live alarm has this id (it may have ended already).
    #[error("no live alarm '{0}' on this bed (it may have ended)")]
    UnknownAlarm(String),
    /// The alarm was acknowledged already.
    #[error("alarm '{0}' is already acknowledged")]
    AlreadyAcknowledged(String),
    /// Acknowledge-all with nothing unacknowledged.
    #[error("nothing to acknowledge")]
    NothingToAcknowledge,
    /// Audio pause with nothing sounding (a pause applies to alarms present now; new ones always sound).
    #[error("nothing is sounding to pause")]
    NothingToPause,
    /// Pause length outside 1..=max.
    #[error("audio pause of {seconds} s is outside 1..={max} s allowed by the profile")]
    PauseOutOfRange {
        /// Asked.
        seconds: u32,
        /// Allowed.
        max: u32,
    },
    /// Resume without a pause.
    #[error("audio is not paused")]
    NotPaused,
    /// A session command that does not fit.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// `SetLimit` with a key that cannot be overridden.
    #[error("'{0}' is not an overridable profile key (limits.<parameter>.<high|low>.<medium|high>, limits.<parameter>.hysteresis, limits.<parameter>.delay_s, satseconds.setting, trend.rise.sys, trend.rise.dia)")]
    UnknownLimitKey(String),
    /// `SetLimit` with a value the profile rules reject.
    #[error("{key}: {reason}")]
    InvalidLimit {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

impl From<Refusal> for CommandError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::UnknownAlarm(id) => CommandError::UnknownAlarm(id),
            Refusal::AlreadyAcknowledged(id) => CommandError::AlreadyAcknowledged(id),
            Refusal::NothingToAcknowledge => CommandError::NothingToAcknowledge,
            Refusal::NothingToPause => CommandError::NothingToPause,
            Refusal::PauseOutOfRange(seconds, max) => CommandError::PauseOutOfRange { seconds, max },
            Refusal::NotPaused => CommandError::NotPaused,
        }
    }
}

/// The engine's time: a monotonic millisecond count for every duration, and the wall clock only to label
/// events (issue 10 item 8: a clock step changes no timer). A bare wall-clock timestamp converts to both, which
/// is what replay and tests, whose time is virtual, want.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds on a clock that never steps.
    pub mono_ms: i64,
    /// The wall clock, for labels.
    pub wall: Timestamp,
}

impl From<Timestamp> for Now {
    fn from(wall: Timestamp) -> Now {
        Now { mono_ms: wall.timestamp_millis(), wall }
    }
}

#[derive(Debug, Clone, Default)]
struct ParamState {
    seen: bool,
    last_t: i64,
    value: f64,
    thresholds: [Option<Threshold>; 2],
    pending: [Option<i64>; 2],
    /// Valid samples seen beyond the limit since `pending` began.
    pending_samples: [u32; 2],
    delay_ms: i64,
    /// The source's observed update period (ms), quick to grow and slow to shrink, so a slow source is judged
    /// by its own pace (issue 10 item 3).
    interval_ms: i64,
    /// The latest questionable value and its time: it may hold an alarm, never start or end one by itself.
    doubt: Option<(f64, i64)>,
    /// Questionable values beyond the low limit since then, and how many.
    doubt_pending: Option<i64>,
    doubt_samples: u32,
    /// Respiration 0 since then (apnoea), and how many such samples.
    zero_since: Option<i64>,
    zero_samples: u32,
    /// Wall-clock measurement time (ms) of the last NIBP value taken, to drop one a monitor sends again.
    measured_ms: Option<i64>,
    /// The source the values come from, if the reading said.
    source: Option<Arc<str>>,
}

/// Questionable values beyond the limit must last this long to raise "poor signal" (issue 10 item 5: 10 s).
const POOR_SIGNAL_DELAY_MS: i64 = 10_000;
/// A perfusion index at most this old qualifies an SpO2 value: the same frame, or the oximeter's last few
/// one-second updates when PI and SpO2 arrive apart (issue 10 item 5). Older, it says nothing about the value.
pub const PERFUSION_MAX_AGE_MS: i64 = 5_000;
/// No-data time after a parameter's first sample, before its pace is known: a source updating up to once a
/// minute shows its second sample within it.
const FIRST_SAMPLE_GRACE_MS: i64 = 60_000;
/// The longest no-data time a slow source earns by its own pace.
const MAX_NO_DATA_MS: i64 = 300_000;

const HR: usize = Parameter::Hr as usize;
const PR: usize = Parameter::Pr as usize;
const SPO2: usize = Parameter::Spo2 as usize;
const SYS: usize = Parameter::NibpSys as usize;
const RR: usize = Parameter::Rr as usize;
const CONTINUOUS: [usize; 4] = [HR, PR, SPO2, RR];
/// The key of the bed's single demo-data alarm.
const DEMO: &str = "demo";

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn num(v: f64) -> Value {
    Value::from(round1(v))
}

fn prio_name(p: Priority) -> &'static str {
    match p {
        Priority::High => "high",
        Priority::Medium => "medium",
        Priority::Low => "low",
    }
}

/// One bed's alarm engine.
#[derive(Debug, Clone)]
pub struct Engine {
    bed: BedId,
    base: Arc<Profile>,
    profile: Arc<Profile>,
    lc: Lifecycle,
    params: [ParamState; Parameter::ALL.len()],
    /// The latest perfusion index and its time: it qualifies the SpO2 beside it, never alarms by itself.
    perfusion: Option<(f64, i64)>,
    sat: Option<SatSeconds>,
    spo2_slope: Option<RobustSlope>,
    nibp_slope: Option<RobustSlope>,
    drift: [Option<Drift>; 2],
    sources: Vec<SourceState>,
    session: Session,
    last_session_event: Option<SessionEvent>,
    last_nibp: Option<i64>,
    news2_pending: Option<i64>,
    /// Newest sample time among the scored values, and how many new samples arrived while pending.
    news2_newest: i64,
    news2_samples: u32,
    demo_readings: bool,
    no_data_ms: i64,
    /// Monotonic time the running session started.
    session_t: Option<i64>,
    /// Recent gaps between NIBP measurements of the current phase (ms), for the real cuff interval, and the
    /// last measurement a new gap counts from (none right after a phase change).
    nibp_gaps: [i64; 3],
    nibp_gap_count: usize,
    nibp_gap_from: Option<i64>,
    /// Monotonic time the live self-test alarm was raised (`None` when none is live, or it was restored).
    self_test_at: Option<i64>,
}

/// How long the self-test's test alarm is shown before the bed ends it (long enough for a dashboard to show
/// it, short enough that a shift-start test is over at once).
pub const SELF_TEST_HOLD_MS: i64 = 5_000;

impl Engine {
    /// An engine for `bed` with `profile`; `next_bed_seq` is the store's next per-bed number, so numbering is
    /// contiguous across restarts (and alarm ids, `<bed>-<bed_seq of start>`, never repeat).
    pub fn new(bed: BedId, profile: Arc<Profile>, next_bed_seq: u64) -> Engine {
        let lc = Lifecycle::new(bed.clone(), next_bed_seq, Settings::from_profile(&profile));
        let mut e = Engine {
            session: Session::new(bed.clone()),
            bed,
            base: profile.clone(),
            profile,
            lc,
            params: Default::default(),
            perfusion: None,
            sat: None,
            spo2_slope: None,
            nibp_slope: None,
            drift: [None, None],
            sources: Vec::new(),
            last_session_event: None,
            last_nibp: None,
            news2_pending: None,
            news2_newest: 0,
            news2_samples: 0,
            demo_readings: false,
            no_data_ms: 0,
            session_t: None,
            nibp_gaps: [0; 3],
            nibp_gap_count: 0,
            nibp_gap_from: None,
            self_test_at: None,
        };
        e.rebuild();
        e
    }

    /// Derives the hot-path state from the (possibly overridden) profile, keeping what was measured.
    fn rebuild(&mut self) {
        let p = self.profile.clone();
        self.no_data_ms = secs(p.technical.no_data_s);
        self.lc.set_settings(Settings::from_profile(&p));
        for param in Parameter::ALL {
            let ps = &mut self.params[param as usize];
            match p.limits.get(param) {
                Some(l) => {
                    let deep = (param == Parameter::Spo2).then_some(p.satseconds.deep_drop_points);
                    let (hi, lo) = Threshold::from_limits(l, deep);
                    ps.thresholds = [hi, lo];
                    ps.delay_ms = secs(l.delay_s);
                }
                None => ps.thresholds = [None, None],
            }
        }
        let spo2_medium = p.limits.spo2.and_then(|l| l.low).and_then(|b| b.medium);
        let sat = match (p.satseconds.enabled, spo2_medium) {
            (true, Some(limit)) => Some(SatSeconds::new(limit, &p.satseconds)),
            _ => None,
        };
        // Keep the integral when only an unrelated number changed; a new limit or setting starts afresh.
        if sat.is_none() || self.sat.is_none() {
            self.sat = sat;
        } else if let (Some(new), Some(old)) = (sat, &self.sat) {
            if old.setting() != new.setting() || old.limit() != new.limit() {
                self.sat = Some(new);
            }
        }
        if self.spo2_slope.as_ref().map(|s| *s.config()) != Some(p.trend.spo2_slope) {
            self.spo2_slope = p.trend.spo2_slope.enabled.then(|| RobustSlope::new(p.trend.spo2_slope));
        }
        if self.nibp_slope.as_ref().map(|s| *s.config()) != Some(p.trend.nibp_slope) {
            self.nibp_slope = p.trend.nibp_slope.enabled.then(|| RobustSlope::new(p.trend.nibp_slope));
        }
        if self.drift[0].is_none() && p.trend.hr_drift.enabled {
            self.drift = [Some(Drift::new(p.trend.hr_drift)), Some(Drift::new(p.trend.hr_drift))];
        }
        if !p.trend.hr_drift.enabled {
            self.drift = [None, None];
        }
    }

    /// The effective profile (with this bed's overrides): the dashboard shows these limits.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The bed.
    pub fn bed(&self) -> &BedId {
        &self.bed
    }

    /// The latest session event (state after it), or `None` if no session ever started on this engine.
    pub fn session(&self) -> Option<SessionEvent> {
        self.last_session_event.clone()
    }

    /// The session state.
    pub fn session_state(&self) -> &Session {
        &self.session
    }

    /// The bed's live alarms (active, latched, acknowledged, audio-paused) as their latest events.
    pub fn active_alarms(&self, now: Timestamp) -> BedAlarms {
        self.lc.snapshot(now)
    }

    /// The `bed_seq` the next alarm event will get.
    pub fn next_bed_seq(&self) -> u64 {
        self.lc.next_bed_seq()
    }

    #[inline]
    fn present_band(&self, key: &Key) -> Option<Priority> {
        if self.lc.any_live() {
            self.lc.band(key)
        } else {
            None
        }
    }

    #[inline]
    fn is_live(&self, key: &Key) -> bool {
        self.lc.any_live() && self.lc.is_live(key)
    }

    fn clear_if_live(&mut self, key: &Key, t: i64, out: &mut Vec<Event>) {
        if self.is_live(key) {
            self.lc.clear(key, t, out);
        }
    }

    fn end_if_live(&mut self, key: &Key, t: i64, out: &mut Vec<Event>) {
        if self.is_live(key) {
            self.lc.end(key, t, out);
        }
    }

    /// Sets the label clock for the events of this call and returns the monotonic time.
    #[inline]
    fn enter(&mut self, now: Now) -> i64 {
        self.lc.set_label_offset(now.wall.timestamp_millis() - now.mono_ms);
        now.mono_ms
    }

    /// How long parameter `i` may stay silent before `no_data`: the profile's time, or 2.5 update periods of
    /// a slower source (issue 10 item 3), at most [`MAX_NO_DATA_MS`].
    #[inline]
    fn no_data_for(&self, i: usize) -> i64 {
        let interval = self.params[i].interval_ms;
        if interval == 0 {
            // One sample so far: the pace is unknown, so a slow source gets one period's grace to show it.
            return self.no_data_ms.max(FIRST_SAMPLE_GRACE_MS);
        }
        self.no_data_ms.max((interval * 5 / 2).min(MAX_NO_DATA_MS))
    }

    /// One reading. Only valid, plausible values raise physiological alarms; which zeros mean "no value" is
    /// the decoder's decision, stated in the reading's status (issue 10 item 2), so a valid 0 is a value: RR 0
    /// is apnoea, HR 0 is far below any low limit.
    pub fn observe(&mut self, reading: &Reading, now: impl Into<Now>) -> Vec<Event> {
        let mut out = Vec::new();
        let now = now.into();
        let t = self.enter(now);
        if reading.status == ValueStatus::Demo {
            if !self.demo_readings {
                self.demo_readings = true;
                self.raise_demo("readings", t, &mut out);
            }
            return out;
        }
        if self.demo_readings {
            self.demo_readings = false;
            if !self.sources.iter().any(|s| s.demo) {
                self.clear_if_live(&Key::Demo(DEMO.into()), t, &mut out);
            }
        }
        let p = reading.parameter;
        let i = p as usize;
        if let Some(s) = &reading.source {
            let ps = &mut self.params[i];
            if ps.source.as_deref() != Some(&**s) {
                ps.source = Some(s.clone());
            }
        }
        if p == Parameter::Pi {
            // Never alarmed: it only says how far the SpO2 beside it can be trusted. No value forgets it.
            let known = reading.status != ValueStatus::Unavailable;
            self.perfusion = reading.value.filter(|v| known && v.is_finite() && *v > 0.0).map(|v| (v, t));
            return out;
        }
        if reading.spot && p.is_continuous() {
            // A pulse taken by the cuff or a spot check is not the continuous pulse rate (issue 10 item 3).
            return out;
        }
        if p == Parameter::NibpSys && reading.status == ValueStatus::Unavailable {
            self.raise_cuff_failure(t, &mut out);
            return out;
        }
        // A valid SpO2 measured at a perfusion index too low for the oximeter's accuracy is questionable.
        let low_perfusion = i == SPO2 && reading.status == ValueStatus::Valid && self.low_perfusion(t).is_some();
        if reading.status == ValueStatus::Questionable || low_perfusion {
            if let Some(v) = reading.value.filter(|v| v.is_finite() && *v >= 0.0 && *v <= p.plausible_range().1) {
                if p.is_continuous() {
                    self.params[i].doubt = Some((v, t));
                    if i == SPO2 {
                        self.eval_poor_signal(i, t, true, &mut out);
                    }
                }
            }
            return out;
        }
        let Some(v) = reading.valid_value() else { return out };
        if !v.is_finite() || v < 0.0 || v > p.plausible_range().1 {
            return out;
        }
        // NIBP is keyed on its measurement time: a value the monitor sends again is not a new reading, and its
        // age counts from when the cuff measured it (issue 10 item 4).
        let mut at = t;
        if p.is_nibp() {
            let measured = reading.measured.unwrap_or(reading.received);
            let measured_ms = measured.timestamp_millis();
            if self.params[i].measured_ms.is_some_and(|m| measured_ms <= m) {
                return out;
            }
            self.params[i].measured_ms = Some(measured_ms);
            let age = (reading.received - measured).num_milliseconds().max(0);
            at = t - age;
        }
        {
            let ps = &mut self.params[i];
            if ps.seen && p.is_continuous() {
                let gap = (at - ps.last_t).max(0);
                ps.interval_ms = if gap > ps.interval_ms { gap } else { (ps.interval_ms * 3 + gap) / 4 };
            }
            ps.seen = true;
            ps.last_t = at;
            ps.value = v;
            ps.doubt = None;
            ps.doubt_pending = None;
            ps.doubt_samples = 0;
        }
        // With no live alarm (the common case) there is nothing to clear: the keys are not even built.
        if self.lc.any_live() {
            self.clear_if_live(&Key::PoorSignal(p), t, &mut out);
        }
        if p.is_continuous() {
            if self.lc.any_live() {
                self.clear_if_live(&Key::NoData(p), t, &mut out);
            }
        } else {
            if p == Parameter::NibpSys {
                self.note_nibp_time(at);
                self.clear_if_live(&Key::CuffFailure, t, &mut out);
            }
            // Overdue is judged on the measurement time: a late-reported old value does not end it.
            self.check_nibp_overdue(t, &mut out);
            let before_session = self.session.started().is_some_and(|s| measured_before(reading, s));
            if !before_session {
                self.session.note_nibp(p, v);
            }
        }
        if i == SPO2 {
            let stale_after = self.no_data_for(SPO2);
            if let Some(s) = &mut self.sat {
                s.advance(t, stale_after);
                s.observe(t, v);
            }
        }
        if i == RR {
            if v == 0.0 {
                self.eval_apnoea(t, true, &mut out);
                return out;
            }
            self.params[RR].zero_since = None;
            self.params[RR].zero_samples = 0;
            self.clear_if_live(&Key::Apnoea, t, &mut out);
        }
        self.eval_thresholds(i, t, true, &mut out);
        match p {
            Parameter::Spo2 => {
                if let Some(fit) = self.spo2_slope.as_mut().and_then(|s| s.observe(t, v)) {
                    self.eval_slope(Parameter::Spo2, fit, t, &mut out);
                }
            }
            Parameter::NibpSys => {
                self.eval_rise(p, v, t, &mut out);
                if let Some(fit) = self.nibp_slope.as_mut().and_then(|s| s.observe(at, v)) {
                    self.eval_slope(Parameter::NibpSys, fit, t, &mut out);
                }
            }
            Parameter::NibpDia => self.eval_rise(p, v, t, &mut out),
            Parameter::Hr | Parameter::Pr => {
                let k = if p == Parameter::Hr { 0 } else { 1 };
                if let Some(d) = &mut self.drift[k] {
                    d.observe(t, v);
                    self.eval_drift(p, k, t, &mut out);
                }
            }
            _ => {}
        }
        out
    }

    /// Keeps the last gaps between NIBP measurements of this phase: the cuff interval actually running.
    fn note_nibp_time(&mut self, at: i64) {
        if let Some(prev) = self.nibp_gap_from {
            let gap = at - prev;
            if gap > 0 {
                self.nibp_gaps.rotate_right(1);
                self.nibp_gaps[0] = gap;
                self.nibp_gap_count = (self.nibp_gap_count + 1).min(3);
            }
        }
        self.nibp_gap_from = Some(self.nibp_gap_from.map_or(at, |prev| prev.max(at)));
        self.last_nibp = Some(self.last_nibp.map_or(at, |prev| prev.max(at)));
    }

    /// The cuff interval running: the longest of the last gaps, once two are known (an extra manual reading
    /// between cycles shortens one gap, never the interval).
    fn cuff_interval_ms(&self) -> Option<i64> {
        (self.nibp_gap_count >= 2).then(|| self.nibp_gaps[..self.nibp_gap_count].iter().copied().max().unwrap_or(0))
    }

    /// A new phase may run the cuff at another pace: its interval is learnt afresh.
    fn new_cuff_phase(&mut self) {
        self.nibp_gap_count = 0;
        self.nibp_gap_from = None;
    }

    /// Apnoea: respiration 0 from a source that measures it, for the profile's apnoea delay and confirmed by a
    /// second sample (issue 10 item 2; monitors' apnoea delays are 10–60 s, 20 s common).
    fn eval_apnoea(&mut self, t: i64, sample: bool, out: &mut Vec<Event>) {
        let delay = secs(self.profile.technical.apnoea_delay_s);
        let ps = &mut self.params[RR];
        let since = *ps.zero_since.get_or_insert(t);
        if sample {
            ps.zero_samples += 1;
        }
        if t - since < delay || ps.zero_samples < 2 {
            return;
        }
        let silent_s = (t - since) / 1000;
        self.lc.raise(
            Key::Apnoea,
            Priority::High,
            Obs::default(),
            t,
            || Detail {
                kind: AlarmKind::Threshold,
                condition: "apnoea".into(),
                parameter: Some(Parameter::Rr),
                value: Some(0.0),
                limit: Some(delay as f64 / 1000.0),
                evidence: evidence([("rule", Value::from("rr_zero")), ("for_s", Value::from(silent_s))]),
                message: format!("Apnoea: respiration rate 0 for {silent_s} s"),
            },
            out,
        );
    }

    /// The fresh perfusion index, if one is known (at most [`PERFUSION_MAX_AGE_MS`] old).
    #[inline]
    fn fresh_perfusion(&self, t: i64) -> Option<f64> {
        self.perfusion.filter(|&(_, at)| t - at <= PERFUSION_MAX_AGE_MS).map(|(pi, _)| pi)
    }

    /// The fresh perfusion index if it is below `spo2.min_perfusion_index`, under which SpO2 loses accuracy.
    #[inline]
    fn low_perfusion(&self, t: i64) -> Option<f64> {
        self.fresh_perfusion(t).filter(|pi| *pi < self.profile.spo2.min_perfusion_index)
    }

    /// The fresh perfusion index with the profile's minimum, for an SpO2 alarm's evidence.
    #[inline]
    fn perfusion_note(&self, t: i64) -> Option<(f64, f64)> {
        self.fresh_perfusion(t).map(|pi| (pi, self.profile.spo2.min_perfusion_index))
    }

    /// Questionable SpO2 beyond the low limit, confirmed like a condition delay, raises "SpO2 low, poor signal"
    /// when no valid alarm stands for it (issue 10 item 5).
    fn eval_poor_signal(&mut self, i: usize, t: i64, sample: bool, out: &mut Vec<Event>) {
        let p = Parameter::ALL[i];
        let Some(th) = self.params[i].thresholds[1] else { return };
        let limit = th.medium.or(th.high).unwrap_or(0.0);
        let key = Key::PoorSignal(p);
        let live = self.is_live(&key);
        let ps = &mut self.params[i];
        let fresh = ps.doubt.filter(|&(_, at)| t - at < self.no_data_ms.max(ps.interval_ms * 5 / 2));
        let Some((v, _)) = fresh.filter(|&(v, _)| v < limit + if live { th.hysteresis } else { 0.0 }) else {
            ps.doubt_pending = None;
            ps.doubt_samples = 0;
            self.clear_if_live(&key, t, out);
            return;
        };
        let since = *ps.doubt_pending.get_or_insert(t);
        if sample {
            ps.doubt_samples += 1;
        }
        let confirmed = t - since >= POOR_SIGNAL_DELAY_MS && ps.doubt_samples >= 2;
        if self.is_live(&Key::Threshold(p, Dir::Low)) || (!live && !confirmed) {
            return;
        }
        let step = self.profile.lifecycle.reannounce_step.get(p);
        let perfusion = self.perfusion_note(t);
        self.lc.raise(
            key,
            Priority::Medium,
            Obs::value(v, Dir::Low, step),
            t,
            || Detail {
                kind: AlarmKind::Threshold,
                condition: format!("{}_low_poor_signal", p.name()),
                parameter: Some(p),
                value: Some(v),
                limit: Some(limit),
                evidence: perfusion_evidence(
                    evidence([
                        ("rule", Value::from("questionable_below_limit")),
                        ("status", Value::from("questionable")),
                    ]),
                    perfusion,
                ),
                message: format!(
                    "{} {} < {} (poor signal: check the probe and the patient)",
                    p.display_name(),
                    round1(v),
                    round1(limit)
                ),
            },
            out,
        );
    }

    /// `sample`: called for a new reading (not a tick re-judging the held value).
    #[inline]
    fn eval_thresholds(&mut self, i: usize, t: i64, sample: bool, out: &mut Vec<Event>) {
        for d in 0..2 {
            if self.params[i].thresholds[d].is_some() {
                self.eval_threshold(i, d, t, sample, out);
            }
        }
    }

    /// Condition delay = time *and* confirmation: a delayed condition needs the delay to pass and at least two
    /// valid samples beyond the limit, so one stray sample held over the delay (minute-resolution records, a
    /// lone artefact between "no value" zeros) does not alarm. At 1 Hz a 10 s delay sees ~10 samples anyway.
    fn eval_threshold(&mut self, i: usize, d: usize, t: i64, sample: bool, out: &mut Vec<Event>) {
        let ps = &self.params[i];
        let Some(th) = ps.thresholds[d] else { return };
        let p = Parameter::ALL[i];
        let v = ps.value;
        let key = Key::Threshold(p, th.dir);
        let present = self.present_band(&key);
        let Some(band) = th.band(v, present) else {
            self.params[i].pending[d] = None;
            self.params[i].pending_samples[d] = 0;
            if present.is_some() {
                self.lc.clear(&key, t, out);
            }
            return;
        };
        let spo2_low = i == SPO2 && th.dir == Dir::Low;
        let mut rule = "limit";
        if present.is_none() {
            // Not signalling yet (or latched): the condition delay decides.
            let fire = if spo2_low && band == Priority::High {
                rule = "deep_drop";
                true
            } else if spo2_low && self.sat.is_some() {
                rule = "satseconds";
                self.sat.as_ref().is_some_and(|s| s.triggered(t).is_some())
            } else {
                let ps = &mut self.params[i];
                let since = *ps.pending[d].get_or_insert(t);
                if sample {
                    ps.pending_samples[d] += 1;
                }
                ps.delay_ms == 0 || (t - since >= ps.delay_ms && ps.pending_samples[d] >= 2)
            };
            if !fire {
                return;
            }
            self.params[i].pending[d] = None;
            self.params[i].pending_samples[d] = 0;
        }
        let delay_s = self.params[i].delay_ms / 1000;
        let sat =
            if spo2_low { self.sat.as_ref().map(|s| (s.integral(), s.recent_crossings(t), s.setting())) } else { None };
        let trigger = if rule == "satseconds" { self.sat.as_ref().and_then(|s| s.triggered(t)) } else { None };
        let limit = th.limit(band);
        let step = self.profile.lifecycle.reannounce_step.get(p);
        let perfusion = if i == SPO2 { self.perfusion_note(t) } else { None };
        let obs = Obs { value: Some(v), worse: Some((th.dir, step)), spot: p.is_nibp() && sample };
        self.lc.raise(
            key,
            band,
            obs,
            t,
            || {
                let mut ev = evidence([
                    ("rule", Value::from(rule)),
                    ("band", Value::from(prio_name(band))),
                    ("hysteresis", num(th.hysteresis)),
                ]);
                if rule == "limit" && !p.is_nibp() {
                    ev.insert("delay_s".into(), Value::from(delay_s));
                }
                if let Some((integral, crossings, setting)) = sat {
                    ev.insert("satseconds".into(), num(integral));
                    ev.insert("satseconds_setting".into(), num(setting));
                    ev.insert("crossings_in_window".into(), Value::from(crossings));
                }
                if let Some(Trigger::Crossings(n)) = trigger {
                    ev.insert("safety_net".into(), Value::from(format!("{n} crossings")));
                }
                let ev = perfusion_evidence(ev, perfusion);
                Detail {
                    kind: AlarmKind::Threshold,
                    condition: format!("{}_{}", p.name(), if th.dir == Dir::High { "high" } else { "low" }),
                    parameter: Some(p),
                    value: Some(v),
                    limit,
                    evidence: ev,
                    message: format!(
                        "{} {} {} {}",
                        p.display_name(),
                        round1(v),
                        th.sign(),
                        limit.map(round1).map_or_else(String::new, |l| l.to_string())
                    ),
                }
            },
            out,
        );
    }

    fn eval_rise(&mut self, p: Parameter, v: f64, t: i64, out: &mut Vec<Event>) {
        let cfg = self.profile.trend.rise;
        let key = Key::Rise(p);
        let baseline = match self.session.phase() {
            SessionPhase::Infusion | SessionPhase::Observation if cfg.enabled => self.session.baseline(),
            _ => None,
        };
        let Some(b) = baseline else {
            self.clear_if_live(&key, t, out);
            return;
        };
        let (base, thr) = if p == Parameter::NibpSys { (b.sys, cfg.sys) } else { (b.dia, cfg.dia) };
        let delta = v - base;
        let present = self.present_band(&key).is_some();
        if delta >= thr || (present && delta > thr - cfg.hysteresis) {
            let session_id = self.session.id().to_owned();
            let step = self.profile.lifecycle.reannounce_step.get(p);
            self.lc.raise(
                key,
                cfg.priority,
                Obs { value: Some(v), worse: Some((Dir::High, step)), spot: true },
                t,
                || Detail {
                    kind: AlarmKind::Trend,
                    condition: format!("{}_rise", p.name()),
                    parameter: Some(p),
                    value: Some(v),
                    limit: Some(base + thr),
                    evidence: evidence([
                        ("rule", Value::from("rise_from_baseline")),
                        ("baseline", num(base)),
                        ("baseline_source", serde_json::to_value(b.source).unwrap_or(Value::Null)),
                        ("delta", num(delta)),
                        ("threshold", num(thr)),
                        ("session_id", Value::from(session_id)),
                    ]),
                    message: format!(
                        "{} {} is +{} over baseline {} (alarm at +{})",
                        p.display_name(),
                        round1(v),
                        round1(delta),
                        round1(base),
                        round1(thr)
                    ),
                },
                out,
            );
        } else if present {
            self.lc.clear(&key, t, out);
        }
    }

    fn eval_slope(&mut self, p: Parameter, fit: trend::Fit, t: i64, out: &mut Vec<Event>) {
        let det = if p == Parameter::Spo2 { &self.spo2_slope } else { &self.nibp_slope };
        let Some(det) = det else { return };
        let cfg = *det.config();
        let key = Key::Slope(p);
        let present = self.present_band(&key).is_some();
        if det.alarming(&fit, present) {
            let rising = cfg.slope_per_min > 0.0;
            self.lc.raise(
                key,
                cfg.priority,
                Obs::default(),
                t,
                || Detail {
                    kind: AlarmKind::Trend,
                    condition: format!("{}_{}", p.name(), if rising { "rising" } else { "falling" }),
                    parameter: Some(p),
                    value: Some(round1(fit.latest)),
                    limit: Some(cfg.slope_per_min),
                    evidence: evidence([
                        ("rule", Value::from("theil_sen_slope")),
                        ("slope_per_min", Value::from((fit.slope_per_min * 100.0).round() / 100.0)),
                        ("change", num(fit.change)),
                        ("window_s", Value::from(cfg.window_s)),
                        ("span_s", Value::from((fit.span_min * 60.0).round())),
                        ("points", Value::from(fit.points)),
                        ("bucket_s", Value::from(cfg.bucket_s)),
                    ]),
                    message: format!(
                        "{} {} {:+.1}/min over {:.0} min ({:+.0})",
                        p.display_name(),
                        if rising { "rising" } else { "falling" },
                        fit.slope_per_min,
                        fit.span_min,
                        fit.change
                    ),
                },
                out,
            );
        } else if present {
            self.lc.clear(&key, t, out);
        }
    }

    fn eval_drift(&mut self, p: Parameter, k: usize, t: i64, out: &mut Vec<Event>) {
        let (up, down) = (Key::Drift(p, Dir::High), Key::Drift(p, Dir::Low));
        let present = self.present_band(&up).is_some() || self.present_band(&down).is_some();
        let Some(dir) = self.drift[k].as_ref().map(|d| d.direction(present)) else { return };
        let (key, other) = if dir > 0 { (up, down) } else { (down, up) };
        if dir == 0 || self.present_band(&other).is_some() {
            self.clear_if_live(&key, t, out);
            self.clear_if_live(&other, t, out);
            if dir == 0 {
                return;
            }
        }
        if self.present_band(&key).is_some() {
            return;
        }
        let Some(s) = self.drift[k].as_ref().map(|d| d.state()) else { return };
        let cfg = self.profile.trend.hr_drift;
        self.lc.raise(
            key,
            cfg.priority,
            Obs::default(),
            t,
            || Detail {
                kind: AlarmKind::Trend,
                condition: format!("{}_drift", p.name()),
                parameter: Some(p),
                value: Some(s.latest),
                limit: Some(round1(s.reference + f64::from(dir) * cfg.k)),
                evidence: evidence([
                    ("rule", Value::from("cusum")),
                    ("direction", Value::from(if dir > 0 { "up" } else { "down" })),
                    ("reference", num(s.reference)),
                    ("deviation", num(s.latest - s.reference)),
                    ("cusum", num(s.up.max(s.down))),
                    ("k", num(cfg.k)),
                    ("h", num(cfg.h)),
                    ("reference_tau_s", num(cfg.reference_tau_s)),
                ]),
                message: format!(
                    "{} drifting {} from {:.0} to {:.0}",
                    p.display_name(),
                    if dir > 0 { "up" } else { "down" },
                    s.reference,
                    s.latest
                ),
            },
            out,
        );
    }

    /// One demo alarm per bed, whether the device said so or the readings' status did (one cause, one alarm).
    fn raise_demo(&mut self, source: &str, t: i64, out: &mut Vec<Event>) {
        let key = Key::Demo(DEMO.into());
        let prio = self.profile.technical.priority;
        let source = source.to_owned();
        self.lc.raise(
            key,
            prio,
            Obs::default(),
            t,
            || Detail {
                kind: AlarmKind::Technical,
                condition: "demo_data".into(),
                parameter: None,
                value: None,
                limit: None,
                evidence: evidence([("source", Value::from(source.clone()))]),
                message: format!("Monitor in demo mode ({source}): values are not the patient's"),
            },
            out,
        );
    }

    /// Called about once a second: no-data timers, condition delays with held values, SatSeconds integration,
    /// apnoea, questionable values, NIBP overdue, sensor delays, the baseline, NEWS2, escalation, reminders and
    /// audio-pause expiry.
    pub fn tick(&mut self, now: impl Into<Now>) -> Vec<Event> {
        let mut out = Vec::new();
        let t = self.enter(now.into());
        let stale_after = self.no_data_for(SPO2);
        if let Some(s) = &mut self.sat {
            s.advance(t, stale_after);
        }
        let phase = self.session.phase();
        let chair_empty = phase == SessionPhase::Ended;
        self.lc.set_infusion(phase == SessionPhase::Infusion);
        // An oximeter sensor problem already explains missing SpO2 and pulse: one cause, one technical alarm.
        let sensor_problem = self.sources.iter().any(|s| s.sensor.is_some());
        for i in CONTINUOUS {
            let p = Parameter::ALL[i];
            let no_data = self.no_data_for(i);
            let disconnected = self.params[i]
                .source
                .as_deref()
                .is_some_and(|s| self.sources.iter().any(|x| x.disconnected && &*x.name == s));
            let explained = disconnected || (sensor_problem && matches!(p, Parameter::Spo2 | Parameter::Pr));
            if !self.params[i].seen {
                // A parameter the session expects raises no-data from session start, even if never seen.
                let expected = self.session.is_running() && self.profile.session.expected.contains(&p);
                if expected
                    && self.session_t.is_some_and(|s| t - s >= self.no_data_ms)
                    && !explained
                    && self.present_band(&Key::NoData(p)).is_none()
                {
                    self.raise_no_data(p, t, &mut out);
                }
                continue;
            }
            if t - self.params[i].last_t >= no_data {
                if self.held_by_doubt(i, t) {
                    // Questionable values still beyond the limit: the running alarm holds (issue 10 item 5).
                    continue;
                }
                // A stale value says nothing about the patient: its physiological alarms clear (or latch).
                let ps = &mut self.params[i];
                ps.pending = [None, None];
                ps.pending_samples = [0, 0];
                ps.zero_since = None;
                ps.zero_samples = 0;
                self.clear_if_live(&Key::Threshold(p, Dir::High), t, &mut out);
                self.clear_if_live(&Key::Threshold(p, Dir::Low), t, &mut out);
                if i == RR {
                    self.clear_if_live(&Key::Apnoea, t, &mut out);
                }
                if !chair_empty && !explained && self.present_band(&Key::NoData(p)).is_none() {
                    self.raise_no_data(p, t, &mut out);
                }
            } else if i == RR && self.params[RR].zero_since.is_some() {
                self.eval_apnoea(t, false, &mut out);
            } else if self.params[i].pending.iter().any(Option::is_some) || (i == SPO2 && self.sat.is_some()) {
                self.eval_thresholds(i, t, false, &mut out);
            }
            if i == SPO2
                && (self.params[SPO2].doubt.is_some() || (self.lc.any_live() && self.is_live(&Key::PoorSignal(p))))
            {
                self.eval_poor_signal(SPO2, t, false, &mut out);
            }
        }
        self.check_nibp_overdue(t, &mut out);
        self.check_sensors(t, &mut out);
        self.check_baseline(t, &mut out);
        self.check_news2(t, &mut out);
        self.end_self_test(t, &mut out);
        self.lc.tick(t, &mut out);
        out
    }

    /// Ends the self-test's test alarm once it has been shown for [`SELF_TEST_HOLD_MS`] (at once when it came
    /// back from the store after a restart: its self-test is over).
    fn end_self_test(&mut self, t: i64, out: &mut Vec<Event>) {
        if self.lc.any_live()
            && self.is_live(&Key::SelfTest)
            && self.self_test_at.is_none_or(|at| t - at >= SELF_TEST_HOLD_MS)
        {
            self.lc.end(&Key::SelfTest, t, out);
            self.self_test_at = None;
        }
    }

    /// Raises the self-test's test alarm: low priority, technical, `test: true`, never escalating; it ends by
    /// itself after [`SELF_TEST_HOLD_MS`].
    /// A test alarm still shown from an earlier run ends first: each run has its own alarm and events.
    fn self_test(&mut self, actor: &str, t: i64, out: &mut Vec<Event>) {
        self.end_if_live(&Key::SelfTest, t, out);
        self.self_test_at = Some(t);
        let by = actor.to_owned();
        self.lc.raise(
            Key::SelfTest,
            Priority::Low,
            Obs::default(),
            t,
            || {
                let ev = evidence([("requested_by", Value::from(by))]);
                Detail::technical(
                    lifecycle::SELF_TEST,
                    None,
                    ev,
                    "TEST alarm: Vigil self-test, not a patient alarm".into(),
                )
            },
            out,
        );
    }

    /// Raises (or keeps) `selftest_failed` when `failed` says what failed; ends it when every hop passed.
    fn self_test_result(&mut self, failed: Option<&str>, t: i64, out: &mut Vec<Event>) {
        let Some(what) = failed else {
            self.end_if_live(&Key::SelfTestFailed, t, out);
            return;
        };
        let what = what.to_owned();
        // Medium: the alarm path may be broken, so nurses must not rely on Vigil until someone looks.
        self.lc.raise(
            Key::SelfTestFailed,
            Priority::Medium,
            Obs::default(),
            t,
            || {
                let message = format!("Self-test failed: {what}; alarms may not reach everyone");
                Detail::technical(lifecycle::SELFTEST_FAILED, None, evidence([("failed", Value::from(what))]), message)
            },
            out,
        );
    }

    /// Whether questionable values still beyond the limit hold a present threshold alarm of parameter `i`.
    fn held_by_doubt(&self, i: usize, t: i64) -> bool {
        let ps = &self.params[i];
        let Some((v, at)) = ps.doubt else { return false };
        if t - at >= self.no_data_for(i) {
            return false;
        }
        let p = Parameter::ALL[i];
        ps.thresholds.iter().flatten().any(|th| {
            let present = self.present_band(&Key::Threshold(p, th.dir));
            present.is_some() && th.band(v, present).is_some()
        })
    }

    /// An infusion (or its observation) without a baseline has rise detection off: say so (issue 10 item 7).
    fn check_baseline(&mut self, t: i64, out: &mut Vec<Event>) {
        let key = Key::BaselineMissing;
        let running = matches!(self.session.phase(), SessionPhase::Infusion | SessionPhase::Observation);
        if !(running && self.profile.trend.rise.enabled && self.session.baseline().is_none()) {
            self.end_if_live(&key, t, out);
            return;
        }
        if self.present_band(&key).is_some() {
            return;
        }
        self.lc.raise(
            key,
            self.profile.technical.priority,
            Obs::default(),
            t,
            || {
                Detail::technical(
                    "baseline_missing",
                    Some(Parameter::NibpSys),
                    evidence([("rule", Value::from("rise_from_baseline")), ("state", Value::from("off"))]),
                    "No baseline blood pressure: rise detection is off until one is entered".into(),
                )
            },
            out,
        );
    }

    /// A failed cuff cycle (the monitor sent the systolic as no value): a technical alarm until the next
    /// reading (issue 10 item 9).
    fn raise_cuff_failure(&mut self, t: i64, out: &mut Vec<Event>) {
        self.lc.raise(
            Key::CuffFailure,
            self.profile.technical.priority,
            Obs::default(),
            t,
            || {
                Detail::technical(
                    "cuff_failure",
                    Some(Parameter::NibpSys),
                    evidence([("rule", Value::from("nibp_without_value"))]),
                    "NIBP measurement failed: check the cuff and measure again".into(),
                )
            },
            out,
        );
    }

    /// Forgets the previous patient's blood pressure: its values, cuff rhythm and alarms.
    fn forget_nibp(&mut self, t: i64, out: &mut Vec<Event>) {
        for p in [Parameter::NibpSys, Parameter::NibpDia, Parameter::NibpMean] {
            let ps = &mut self.params[p as usize];
            ps.seen = false;
            ps.pending = [None, None];
            for dir in [Dir::High, Dir::Low] {
                self.clear_if_live(&Key::Threshold(p, dir), t, out);
            }
        }
        // Physiological alarms clear (a high one still latches until acknowledged); technical ones end.
        for key in [Key::Rise(Parameter::NibpSys), Key::Rise(Parameter::NibpDia), Key::Slope(Parameter::NibpSys)] {
            self.clear_if_live(&key, t, out);
        }
        for key in [Key::CuffFailure, Key::NibpOverdue] {
            self.end_if_live(&key, t, out);
        }
        self.last_nibp = None;
        self.new_cuff_phase();
        if let Some(s) = &mut self.nibp_slope {
            s.reset();
        }
    }

    fn raise_no_data(&mut self, p: Parameter, t: i64, out: &mut Vec<Event>) {
        let ps = &self.params[p as usize];
        let silent = (t - ps.last_t) / 1000;
        let last = ps.value;
        let limit = self.no_data_for(p as usize) / 1000;
        self.lc.raise(
            Key::NoData(p),
            self.profile.technical.priority,
            Obs::default(),
            t,
            || Detail {
                kind: AlarmKind::Technical,
                condition: format!("{}_no_data", p.name()),
                parameter: Some(p),
                value: None,
                limit: Some(limit as f64),
                evidence: evidence([("silent_s", Value::from(silent)), ("last_valid_value", num(last))]),
                message: format!("{}: no valid data for {silent} s", p.display_name()),
            },
            out,
        );
    }

    /// `nibp_overdue` from the last measurement (or the session start): after the phase's cycle plus grace, or
    /// sooner, after `nibp_overdue_factor` times the cuff interval actually running (issue 10 item 9). A chair
    /// with no session is watched from its first NIBP on (item 7), at its own cuff rhythm but at least the
    /// pre-infusion cycle; an ended session expects nothing.
    fn check_nibp_overdue(&mut self, t: i64, out: &mut Vec<Event>) {
        let key = Key::NibpOverdue;
        let cycles = self.profile.session.nibp_cycle_s;
        let phase = self.session.phase();
        let interval = self.cuff_interval_ms();
        let cycle = match self.session.nibp_cycle_s(&cycles) {
            Some(c) => c,
            // No session: the chair's own cuff rhythm, at least the pre-infusion cycle, is what is expected.
            None if phase == SessionPhase::Idle && self.last_nibp.is_some() => {
                cycles.pre_infusion.max(interval.map_or(0, |iv| (iv / 1000) as u64))
            }
            None => {
                self.end_if_live(&key, t, out);
                return;
            }
        };
        let grace = self.profile.technical.nibp_grace_s;
        let latest = secs(cycle + grace);
        let after = match interval {
            Some(iv) => ((self.profile.technical.nibp_overdue_factor * iv.min(secs(cycle)) as f64) as i64).min(latest),
            None => latest,
        };
        let anchor = match (self.last_nibp, self.session_t) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => match a.or(b) {
                Some(x) => x,
                None => return,
            },
        };
        if t - anchor < after {
            self.clear_if_live(&key, t, out);
            return;
        }
        if self.present_band(&key).is_some() {
            return;
        }
        let last = self.last_nibp.map(|l| self.lc.label(l).to_rfc3339());
        let since_s = (t - anchor) / 1000;
        self.lc.raise(
            key,
            self.profile.technical.priority,
            Obs::default(),
            t,
            || Detail {
                kind: AlarmKind::Technical,
                condition: "nibp_overdue".into(),
                parameter: Some(Parameter::NibpSys),
                value: None,
                limit: Some((after / 1000) as f64),
                evidence: evidence([
                    ("phase", serde_json::to_value(phase).unwrap_or(Value::Null)),
                    ("cycle_s", Value::from(cycle)),
                    ("grace_s", Value::from(grace)),
                    ("cuff_interval_s", interval.map_or(Value::Null, |iv| Value::from(iv / 1000))),
                    ("last_reading", last.map_or(Value::Null, Value::from)),
                    ("since_s", Value::from(since_s)),
                ]),
                message: format!("NIBP overdue: none for {} min (cycle {} min)", since_s / 60, cycle / 60),
            },
            out,
        );
    }

    fn check_sensors(&mut self, t: i64, out: &mut Vec<Event>) {
        let delay = secs(self.profile.technical.sensor_delay_s);
        for k in 0..self.sources.len() {
            let Some((problem, since)) = self.sources[k].sensor else { continue };
            if t - since < delay {
                continue;
            }
            let name = self.sources[k].name.clone();
            let key = match problem {
                SensorProblem::Off => Key::SensorOff(name.clone()),
                SensorProblem::PulseSearch => Key::PulseSearch(name.clone()),
            };
            if self.present_band(&key).is_some() {
                continue;
            }
            let (condition, text) = match problem {
                SensorProblem::Off => ("sensor_off", "sensor off or not connected"),
                SensorProblem::PulseSearch => ("pulse_search", "searching for pulse"),
            };
            self.lc.raise(
                key,
                self.profile.technical.priority,
                Obs::default(),
                t,
                || Detail {
                    kind: AlarmKind::Technical,
                    condition: condition.into(),
                    parameter: Some(Parameter::Spo2),
                    value: None,
                    limit: None,
                    evidence: evidence([("source", Value::from(&*name)), ("for_s", Value::from((t - since) / 1000))]),
                    message: format!("{name}: {text}"),
                },
                out,
            );
        }
    }

    fn fresh(&self, i: usize, t: i64) -> Option<f64> {
        let ps = &self.params[i];
        (ps.seen && t - ps.last_t < self.no_data_for(i)).then_some(ps.value)
    }

    fn check_news2(&mut self, t: i64, out: &mut Vec<Event>) {
        let cfg = self.profile.news2;
        if !cfg.enabled {
            return;
        }
        let rr = self.fresh(RR, t);
        let spo2 = self.fresh(SPO2, t);
        let pulse = self.fresh(HR, t).or_else(|| self.fresh(PR, t));
        let ps = &self.params[SYS];
        let sys = (ps.seen && t - ps.last_t <= secs(cfg.max_nibp_age_s)).then_some(ps.value);
        let s = news2::score(rr, spo2, sys, pulse);
        let key = Key::News2;
        // An urgent score beside a threshold alarm only repeats it: NEWS2 starts then only at emergency level
        // (issue 10 "Fewer, better alarms"; a running NEWS2 alarm goes on).
        let echo = s.total < cfg.emergency_total && !self.is_live(&key) && self.lc.any_physiological();
        if !(s.total >= cfg.urgent_total || s.any_three) || echo {
            self.news2_pending = None;
            self.clear_if_live(&key, t, out);
            return;
        }
        // Like a condition delay: the score must last `delay_s` and be confirmed by fresh samples, so one stray
        // value held over the delay (a lone artefact in a minute-resolution record) does not raise it.
        let newest = [RR, SPO2, HR, PR, SYS]
            .iter()
            .filter(|&&i| self.params[i].seen)
            .map(|&i| self.params[i].last_t)
            .max()
            .unwrap_or(0);
        if self.news2_pending.is_none() {
            self.news2_samples = 0;
        } else if newest != self.news2_newest {
            self.news2_samples += 1;
        }
        self.news2_newest = newest;
        let since = *self.news2_pending.get_or_insert(t);
        if !self.is_live(&key) && (t - since < secs(cfg.delay_s) || self.news2_samples < 1) {
            return;
        }
        let urgent = cfg.urgent_total;
        // RCP 2017: 7 or more calls for emergency review, so the advisory becomes medium; a rising score
        // re-signals (issue 10 item 9).
        let emergency = s.total >= cfg.emergency_total;
        let band = if emergency { Priority::Medium } else { Priority::Low };
        self.lc.raise(
            key,
            band,
            Obs::value(s.total as f64, Dir::High, 1.0),
            t,
            || {
                let names = ["rr", "spo2", "nibp_sys", "pulse"];
                let values = [rr, spo2, sys, pulse];
                let mut parts = serde_json::Map::new();
                let mut missing = Vec::new();
                for k in 0..4 {
                    match s.parts[k] {
                        Some(pts) => {
                            parts.insert(names[k].into(), json!({ "value": values[k].map(round1), "points": pts }));
                        }
                        None => missing.push(names[k]),
                    }
                }
                let review = if emergency { "emergency" } else { "urgent" };
                Detail {
                    kind: AlarmKind::Advisory,
                    condition: "news2".into(),
                    parameter: None,
                    value: Some(s.total as f64),
                    limit: Some(urgent as f64),
                    evidence: evidence([
                        ("rule", Value::from("news2_rcp_2017")),
                        ("total", Value::from(s.total)),
                        ("any_three", Value::from(s.any_three)),
                        ("review", Value::from(review)),
                        ("parts", Value::Object(parts)),
                        ("not_scored", json!(missing)),
                        ("assumed", Value::from("air, alert, temperature not scored (partial score)")),
                    ]),
                    message: format!("NEWS2 {} (partial): {review} review advised", s.total),
                }
            },
            out,
        );
    }

    /// A link, sensor, demo or error-counter signal from one of the bed's sources.
    pub fn device(&mut self, signal: &DeviceSignal, now: impl Into<Now>) -> Vec<Event> {
        let mut out = Vec::new();
        let t = self.enter(now.into());
        let k = match self.sources.iter().position(|s| &*s.name == signal.source()) {
            Some(k) => k,
            None => {
                self.sources.push(SourceState::new(signal.source()));
                self.sources.len() - 1
            }
        };
        let name = self.sources[k].name.clone();
        let prio = self.profile.technical.priority;
        match signal {
            DeviceSignal::Connected { .. } => {
                self.sources[k].disconnected = false;
                self.clear_if_live(&Key::Disconnected(name), t, &mut out);
            }
            DeviceSignal::Disconnected { reason, .. } => {
                self.sources[k].sensor = None;
                self.sources[k].disconnected = true;
                // One cause, one alarm: the disconnect explains the silence of what this source measured.
                let mut explains = Vec::new();
                for i in CONTINUOUS {
                    if self.params[i].source.as_deref() == Some(&*name) {
                        explains.push(Value::from(Parameter::ALL[i].name()));
                        self.end_if_live(&Key::NoData(Parameter::ALL[i]), t, &mut out);
                    }
                }
                self.end_if_live(&Key::SensorOff(name.clone()), t, &mut out);
                self.end_if_live(&Key::PulseSearch(name.clone()), t, &mut out);
                self.monitor_link_lost(&name, t, &mut out);
                let reason = reason.clone();
                self.lc.raise(
                    Key::Disconnected(name.clone()),
                    prio,
                    Obs::default(),
                    t,
                    || Detail {
                        kind: AlarmKind::Technical,
                        condition: "monitor_disconnected".into(),
                        parameter: None,
                        value: None,
                        limit: None,
                        evidence: evidence([
                            ("source", Value::from(&*name)),
                            ("reason", Value::from(reason.clone())),
                            ("explains_no_data_of", Value::Array(explains)),
                        ]),
                        message: format!("{name}: monitor disconnected ({reason})"),
                    },
                    &mut out,
                );
            }
            DeviceSignal::Sensor { flags, .. } => {
                let problem = sensor_problem(*flags);
                let prev = self.sources[k].sensor.map(|(p, _)| p);
                if problem != prev {
                    self.sources[k].sensor = problem.map(|p| (p, t));
                    if problem != Some(SensorProblem::Off) {
                        self.clear_if_live(&Key::SensorOff(name.clone()), t, &mut out);
                    }
                    if problem != Some(SensorProblem::PulseSearch) {
                        self.clear_if_live(&Key::PulseSearch(name.clone()), t, &mut out);
                    }
                    if problem.is_some() {
                        self.check_sensors(t, &mut out);
                    }
                }
                let low_battery = flags.contains(crate::ingest::protocol::SensorFlags::LOW_BATTERY);
                if low_battery != self.sources[k].low_battery {
                    self.sources[k].low_battery = low_battery;
                    let key = Key::LowBattery(name.clone());
                    if low_battery {
                        self.lc.raise(
                            key,
                            Priority::Low,
                            Obs::default(),
                            t,
                            || Detail {
                                kind: AlarmKind::Technical,
                                condition: "low_battery".into(),
                                parameter: None,
                                value: None,
                                limit: None,
                                evidence: evidence([("source", Value::from(&*name))]),
                                message: format!("{name}: device battery low"),
                            },
                            &mut out,
                        );
                    } else {
                        self.clear_if_live(&key, t, &mut out);
                    }
                }
            }
            DeviceSignal::Demo { on, .. } => {
                self.sources[k].demo = *on;
                if *on {
                    self.raise_demo(&name, t, &mut out);
                } else if !self.demo_readings && !self.sources.iter().any(|s| s.demo) {
                    self.clear_if_live(&Key::Demo(DEMO.into()), t, &mut out);
                }
            }
            DeviceSignal::MonitorAlarms { alarms, .. } => self.monitor_alarms(&name, alarms, t, &mut out),
            DeviceSignal::InputErrors { bad, total, .. } => {
                let cfg = self.profile.technical;
                let rate = self.sources[k].record_counters(t, *bad, *total, secs(cfg.input_error_window_s));
                let key = Key::InputErrors(name.clone());
                let present = self.present_band(&key).is_some();
                let judged = rate.total >= cfg.input_error_min_frames;
                if judged && rate.ratio() >= cfg.input_error_ratio {
                    self.lc.raise(
                        key,
                        Priority::Low,
                        Obs::default(),
                        t,
                        || Detail {
                            kind: AlarmKind::Technical,
                            condition: "input_errors".into(),
                            parameter: None,
                            value: Some((rate.ratio() * 1000.0).round() / 1000.0),
                            limit: Some(cfg.input_error_ratio),
                            evidence: evidence([
                                ("source", Value::from(&*name)),
                                ("bad", Value::from(rate.bad)),
                                ("total", Value::from(rate.total)),
                                ("window_s", Value::from(rate.span_s.round())),
                            ]),
                            message: format!(
                                "{name}: {} of {} frames unreadable in the last {:.0} s",
                                rate.bad, rate.total, rate.span_s
                            ),
                        },
                        &mut out,
                    );
                } else if present && judged && rate.ratio() < cfg.input_error_ratio / 2.0 {
                    self.lc.clear(&key, t, &mut out);
                }
            }
        }
        out
    }

    /// The monitor's complete current alarm list from `source`: each alarm in it starts (or goes on, with the
    /// monitor's priority) as a `device` alarm with source `monitor`; each live one missing from it ends, with
    /// `ended_by: monitor`. Vigil's own rules are not touched: a monitor's "SpO2 low" and Vigil's `spo2_low`
    /// are two alarms. At most [`MAX_MONITOR_ALARMS`] per source are mirrored.
    fn monitor_alarms(&mut self, source: &Arc<str>, alarms: &[DeviceAlarm], t: i64, out: &mut Vec<Event>) {
        let alarms = &alarms[..alarms.len().min(MAX_MONITOR_ALARMS)];
        for live in self.lc.monitor_keys(source) {
            if !alarms.iter().any(|a| *a.key == *live) {
                let key = Key::Monitor(source.clone(), live);
                self.lc.amend(
                    &key,
                    t,
                    |d| {
                        d.evidence.insert("ended_by".into(), Value::from("monitor"));
                        false
                    },
                    out,
                );
                self.lc.end(&key, t, out);
            }
        }
        for a in alarms {
            let key = Key::Monitor(source.clone(), a.key.as_str().into());
            let band = match a.priority {
                DeviceAlarmPriority::High => Priority::High,
                DeviceAlarmPriority::Medium => Priority::Medium,
                DeviceAlarmPriority::Low | DeviceAlarmPriority::Info => Priority::Low,
            };
            // Back after a lost link: the monitor still reports it, so it is current again.
            self.lc.amend(
                &key,
                t,
                |d| {
                    d.evidence.remove("link").is_some() && {
                        d.message = monitor_message(a);
                        true
                    }
                },
                out,
            );
            let reading = a.parameter.and_then(|p| {
                let ps = &self.params[p as usize];
                ps.seen.then(|| (p, ps.value, self.lc.label(ps.last_t)))
            });
            let name = source.clone();
            self.lc.raise(
                key,
                band,
                Obs::default(),
                t,
                || {
                    let mut ev = evidence([
                        ("source", Value::from(&*name)),
                        ("device_key", Value::from(a.key.clone())),
                        ("device_priority", Value::from(device_priority_name(a.priority))),
                        ("technical", Value::from(a.technical)),
                        ("text", Value::from(a.text.clone())),
                    ]);
                    if let Some((p, v, at)) = reading {
                        ev.insert("reading".into(), json!({"parameter": p.name(), "value": num(v), "time": at}));
                    }
                    Detail {
                        kind: AlarmKind::Device,
                        condition: MONITOR_ALARM.into(),
                        parameter: a.parameter,
                        value: reading.map(|(_, v, _)| round1(v)),
                        limit: None,
                        evidence: ev,
                        message: monitor_message(a),
                    }
                },
                out,
            );
        }
    }

    /// The link to `source` is lost: its monitor alarms stay (the monitor most likely still shows them, and
    /// nobody can tell it stopped), marked `link: lost` in an `update` event, until the link is back and the
    /// monitor's next list confirms or ends them. `monitor_disconnected` sounds beside them.
    fn monitor_link_lost(&mut self, source: &Arc<str>, t: i64, out: &mut Vec<Event>) {
        for live in self.lc.monitor_keys(source) {
            let key = Key::Monitor(source.clone(), live);
            self.lc.amend(
                &key,
                t,
                |d| {
                    if d.evidence.contains_key("link") {
                        return false;
                    }
                    d.evidence.insert("link".into(), Value::from("lost"));
                    d.message = format!("{} (link to the monitor lost: last reported state)", d.message);
                    true
                },
                out,
            );
        }
    }

    /// A person's command. A refused command changes nothing and says why.
    pub fn command(&mut self, cmd: &Command, actor: &str, now: impl Into<Now>) -> Result<Vec<Event>, CommandError> {
        let mut out = Vec::new();
        let clock = now.into();
        let t = self.enter(clock);
        let now = clock.wall;
        match cmd {
            Command::Acknowledge { alarm_id } => {
                let keys = self.lc.acknowledge(alarm_id.as_deref(), actor, t, &mut out)?;
                for key in keys {
                    // Acknowledging a drift accepts the new level as the reference.
                    if let Key::Drift(p, _) = key {
                        if let Some(d) = &mut self.drift[if p == Parameter::Hr { 0 } else { 1 }] {
                            d.rebase();
                        }
                    }
                }
            }
            Command::PauseAudio { seconds } => self.lc.pause_audio(*seconds, actor, t, &mut out)?,
            Command::ResumeAudio => self.lc.resume_audio(actor, t, &mut out)?,
            Command::SessionStart { patient, baseline_sys, baseline_dia } => {
                let baseline = match (baseline_sys, baseline_dia) {
                    (Some(s), Some(d)) => Some((*s, *d)),
                    (None, None) => None,
                    _ => return Err(SessionError::HalfBaseline.into()),
                };
                let ev = self.session.start(patient.clone(), baseline, actor, now)?;
                // A new patient: the previous one's blood pressure, trend state and the NIBP clock start over.
                self.forget_nibp(t, &mut out);
                self.session_t = Some(t);
                self.news2_pending = None;
                if let Some(s) = &mut self.sat {
                    s.reset();
                }
                for s in [&mut self.spo2_slope, &mut self.nibp_slope].into_iter().flatten() {
                    s.reset();
                }
                for d in self.drift.iter_mut().flatten() {
                    d.reset();
                }
                self.push_session(ev, &mut out);
            }
            Command::InfusionStart => {
                let ev = self.session.infusion_start(actor, now)?;
                self.new_cuff_phase();
                self.push_session(ev, &mut out);
                self.check_baseline(t, &mut out);
            }
            Command::InfusionStop => {
                let ev = self.session.infusion_stop(actor, now)?;
                self.new_cuff_phase();
                self.push_session(ev, &mut out);
            }
            Command::SessionEnd => {
                let ev = self.session.end(actor, now)?;
                // The chair is empty: its expectations end; physiological alarms clear (or stay latched), and
                // the patient's blood pressure is forgotten.
                self.forget_nibp(t, &mut out);
                self.session_t = None;
                self.end_if_live(&Key::BaselineMissing, t, &mut out);
                for i in CONTINUOUS {
                    self.params[i].seen = false;
                    self.end_if_live(&Key::NoData(Parameter::ALL[i]), t, &mut out);
                }
                self.push_session(ev, &mut out);
            }
            Command::SetBaseline { sys, dia } => {
                let ev = self.session.set_baseline(*sys, *dia, actor, now)?;
                self.push_session(ev, &mut out);
                self.check_baseline(t, &mut out);
            }
            Command::SetLimit { key, value } => self.set_limit(key, *value, actor, now, t, &mut out)?,
            Command::SelfTest => self.self_test(actor, t, &mut out),
            Command::SelfTestResult { failed } => self.self_test_result(failed.as_deref(), t, &mut out),
        }
        Ok(out)
    }

    /// A per-bed override that removes a limit, or moves it outside [`limits::safe_range`], leaves that alarm
    /// in effect off: a technical alarm says so while it lasts (issue 10 item 9).
    fn check_limits_in_effect(&mut self, t: i64, out: &mut Vec<Event>) {
        for p in Parameter::ALL {
            let (base, now) = (self.base.limits.get(p).copied(), self.profile.limits.get(p).copied());
            for dir in [Dir::High, Dir::Low] {
                let band =
                    |l: Option<profile::ParameterLimits>| l.and_then(|l| if dir == Dir::High { l.high } else { l.low });
                let key = Key::LimitOff(p, dir);
                let Some(base_band) = band(base) else {
                    self.end_if_live(&key, t, out);
                    continue;
                };
                let off = limits::off_reason(p, dir, band(now));
                let Some(reason) = off.filter(|_| band(now) != Some(base_band)) else {
                    self.end_if_live(&key, t, out);
                    continue;
                };
                if self.is_live(&key) {
                    continue;
                }
                let side = if dir == Dir::High { "high" } else { "low" };
                self.lc.raise(
                    key,
                    self.profile.technical.priority,
                    Obs::default(),
                    t,
                    || {
                        let ev = evidence([("direction", Value::from(side)), ("reason", Value::from(reason.clone()))]);
                        Detail::technical(
                            "alarm_off",
                            Some(p),
                            ev,
                            format!("{} {side} alarm off: {reason}", p.display_name()),
                        )
                    },
                    out,
                );
            }
        }
    }

    fn push_session(&mut self, ev: SessionEvent, out: &mut Vec<Event>) {
        self.last_session_event = Some(ev.clone());
        out.push(Event::Session(ev));
    }

    fn set_limit(
        &mut self,
        key: &str,
        value: Option<f64>,
        actor: &str,
        now: Timestamp,
        t: i64,
        out: &mut Vec<Event>,
    ) -> Result<(), CommandError> {
        let old = read_number(&self.profile, key).ok_or_else(|| CommandError::UnknownLimitKey(key.to_owned()))?;
        let new = match value {
            Some(v) => Some(v),
            None => read_number(&self.base, key).ok_or_else(|| CommandError::UnknownLimitKey(key.to_owned()))?,
        };
        let mut p = (*self.profile).clone();
        write_number(&mut p, key, new).map_err(|reason| CommandError::InvalidLimit { key: key.to_owned(), reason })?;
        p.validate().map_err(|(path, reason)| CommandError::InvalidLimit { key: path, reason })?;
        self.profile = Arc::new(p);
        self.rebuild();
        // Judge present values against the new limits at once (an NIBP only while it is recent).
        for i in 0..7 {
            let ps = &self.params[i];
            let recent =
                if Parameter::ALL[i].is_nibp() { secs(self.profile.news2.max_nibp_age_s) } else { self.no_data_for(i) };
            if ps.seen && t - ps.last_t < recent {
                self.eval_thresholds(i, t, false, out);
            }
        }
        self.check_limits_in_effect(t, out);
        let mut ev = self.session.snapshot("limit_set", now, Some(actor));
        ev.detail = Some(evidence([
            ("key", Value::from(key)),
            ("old", old.map_or(Value::Null, Value::from)),
            ("new", new.map_or(Value::Null, Value::from)),
            ("profile", Value::from(self.profile.name.clone())),
            ("restored_profile_value", Value::from(value.is_none())),
        ]));
        out.push(Event::Session(ev));
        Ok(())
    }

    /// Takes back what a restart would lose, from the store (called once, right after [`Engine::new`]):
    /// * `alarms`: the latest event of each live alarm (the stored alarm snapshot), see [`Lifecycle::restore`];
    /// * `sessions`: the bed's stored session events, oldest first: every `limit_set` is applied again in order
    ///   (the overrides in force), and the latest event's session (phase, baseline, patient) is resumed if it
    ///   was running.
    ///
    /// Emits nothing: what it restores was already stored and published. Returns how many alarms came back.
    pub fn restore(&mut self, alarms: Vec<crate::event::AlarmEvent>, sessions: &[SessionEvent]) -> usize {
        for ev in sessions.iter().filter(|e| e.action == "limit_set") {
            let Some(detail) = &ev.detail else { continue };
            let Some(key) = detail.get("key").and_then(Value::as_str) else { continue };
            let new = detail.get("new").and_then(Value::as_f64);
            let mut p = (*self.profile).clone();
            if write_number(&mut p, key, new).is_ok() && p.validate().is_ok() {
                self.profile = Arc::new(p);
            }
        }
        self.rebuild();
        if let Some(last) = sessions.last() {
            self.session.restore(last);
            self.last_session_event = Some(last.clone());
        }
        self.lc.restore(alarms)
    }
}

/// Most monitor alarms mirrored per source (a monitor shows far fewer; a decoder bug must not flood the bed).
pub const MAX_MONITOR_ALARMS: usize = 32;

fn device_priority_name(p: DeviceAlarmPriority) -> &'static str {
    match p {
        DeviceAlarmPriority::High => "high",
        DeviceAlarmPriority::Medium => "medium",
        DeviceAlarmPriority::Low => "low",
        DeviceAlarmPriority::Info => "info",
    }
}

fn monitor_message(a: &DeviceAlarm) -> String {
    format!("Monitor: {}", a.text)
}

/// Reads an overridable profile number: `Some(None)` for an unset optional limit, `None` for an unknown key.
/// Whether a reading was measured before `start` (a value from before the session, kept out of its baseline).
fn measured_before(reading: &Reading, start: Timestamp) -> bool {
    reading.measured.is_some_and(|m| m < start)
}

/// Adds the perfusion index beside an SpO2 value to its alarm's evidence, and says when it made the value
/// questionable (below the profile's minimum).
fn perfusion_evidence(
    mut ev: serde_json::Map<String, Value>,
    perfusion: Option<(f64, f64)>,
) -> serde_json::Map<String, Value> {
    if let Some((pi, min)) = perfusion {
        ev.insert("perfusion_index".into(), Value::from((pi * 100.0).round() / 100.0));
        ev.insert("min_perfusion_index".into(), Value::from(min));
        if pi < min {
            ev.insert("cause".into(), Value::from("low_perfusion_index"));
        }
    }
    ev
}

/// A parameter by name that has limits to override.
fn alarmed(name: &str) -> Option<Parameter> {
    Parameter::from_name(name).filter(|p| p.is_alarmed())
}

fn read_number(p: &Profile, key: &str) -> Option<Option<f64>> {
    let parts: Vec<&str> = key.split('.').collect();
    match parts.as_slice() {
        ["limits", param, dir @ ("high" | "low"), band @ ("medium" | "high")] => {
            let l = p.limits.get(alarmed(param)?);
            let b = l.and_then(|l| if *dir == "high" { l.high } else { l.low });
            Some(b.and_then(|b| if *band == "medium" { b.medium } else { b.high }))
        }
        ["limits", param, "hysteresis"] => Some(p.limits.get(alarmed(param)?).map(|l| l.hysteresis)),
        ["limits", param, "delay_s"] => Some(p.limits.get(alarmed(param)?).map(|l| l.delay_s as f64)),
        ["satseconds", "setting"] => Some(Some(p.satseconds.setting as f64)),
        ["trend", "rise", "sys"] => Some(Some(p.trend.rise.sys)),
        ["trend", "rise", "dia"] => Some(Some(p.trend.rise.dia)),
        _ => None,
    }
}

/// Why a limit on the perfusion index is refused: it qualifies SpO2 and is never alarmed on.
const NOT_ALARMED: &str = "the parameter is never alarmed on, so it has no limits";

fn write_number(p: &mut Profile, key: &str, v: Option<f64>) -> Result<(), String> {
    if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
        return Err("must be a finite number >= 0".into());
    }
    let required = || v.ok_or_else(|| "cannot be removed".to_owned());
    let parts: Vec<&str> = key.split('.').collect();
    match parts.as_slice() {
        ["limits", param, dir @ ("high" | "low"), band @ ("medium" | "high")] => {
            let param = Parameter::from_name(param).ok_or("unknown parameter")?;
            let l = p.limits.get_mut(param).ok_or(NOT_ALARMED)?.get_or_insert(profile::ParameterLimits {
                high: None,
                low: None,
                hysteresis: 0.0,
                delay_s: 0,
            });
            let b = if *dir == "high" { &mut l.high } else { &mut l.low };
            let b = b.get_or_insert(profile::Band { medium: None, high: None });
            *(if *band == "medium" { &mut b.medium } else { &mut b.high }) = v;
        }
        ["limits", param, field @ ("hysteresis" | "delay_s")] => {
            let param = Parameter::from_name(param).ok_or("unknown parameter")?;
            let l = p
                .limits
                .get_mut(param)
                .ok_or(NOT_ALARMED)?
                .as_mut()
                .ok_or("the parameter has no limits in this profile")?;
            if *field == "hysteresis" {
                l.hysteresis = required()?;
            } else {
                let d = required()?;
                if d.fract() != 0.0 {
                    return Err("must be whole seconds".into());
                }
                l.delay_s = d as u64;
            }
        }
        ["satseconds", "setting"] => p.satseconds.setting = required()? as u32,
        ["trend", "rise", "sys"] => p.trend.rise.sys = required()?,
        ["trend", "rise", "dia"] => p.trend.rise.dia = required()?,
        _ => return Err("not an overridable key".into()),
    }
    Ok(())
}
