//! The pure alarm engine: no I/O, no tokio, no wall clock. Readings, device signals, commands and time in;
//! alarm and session events out. One [`Engine`] per bed.
//!
//! Semantics and their sources: `docs/alarms.md` and `shared/CLINICAL.md`. In short:
//! - threshold alarms take their priority from the limit band, clear with hysteresis, and wait out the
//!   profile's condition delay for continuous parameters; NIBP spot readings are never delayed;
//! - SpO2's medium band uses SatSeconds with a three-crossings safety net; a deep drop alarms high at once;
//! - only `Valid` readings raise physiological alarms, and a value of 0 is "no value" (monitors export 0 for
//!   missing HR/SpO2: `shared/data/README.md`), never asystole or desaturation;
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
use crate::session::{Session, SessionError};
use crate::vitals::{BedId, Parameter, Reading, Timestamp, ValueStatus};

use lifecycle::{evidence, secs, Detail, Dir, Key, Lifecycle, Refusal};
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
}

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
    params: [ParamState; 7],
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
}

impl Engine {
    /// An engine for `bed` with `profile`; `next_bed_seq` is the store's next per-bed number, so numbering is
    /// contiguous across restarts (and alarm ids, `<bed>-<bed_seq of start>`, never repeat).
    pub fn new(bed: BedId, profile: Arc<Profile>, next_bed_seq: u64) -> Engine {
        let lc = Lifecycle::new(
            bed.clone(),
            next_bed_seq,
            &profile.lifecycle.latching,
            profile.lifecycle.escalate_medium_after_s,
            profile.lifecycle.audio_pause_max_s,
        );
        let mut e = Engine {
            session: Session::new(bed.clone()),
            bed,
            base: profile.clone(),
            profile,
            lc,
            params: Default::default(),
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
        };
        e.rebuild();
        e
    }

    /// Derives the hot-path state from the (possibly overridden) profile, keeping what was measured.
    fn rebuild(&mut self) {
        let p = self.profile.clone();
        self.no_data_ms = secs(p.technical.no_data_s);
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

    /// One reading. Only valid, plausible, non-zero values can raise physiological alarms.
    pub fn observe(&mut self, reading: &Reading, now: Timestamp) -> Vec<Event> {
        let mut out = Vec::new();
        let t = now.timestamp_millis();
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
        let Some(v) = reading.valid_value() else { return out };
        let p = reading.parameter;
        // 0 is "no value" in monitor exports (shared/data/README.md), never asystole or desaturation.
        if !v.is_finite() || v <= 0.0 || v > p.plausible_range().1 {
            return out;
        }
        let i = p as usize;
        {
            let ps = &mut self.params[i];
            ps.seen = true;
            ps.last_t = t;
            ps.value = v;
        }
        if p.is_continuous() {
            self.clear_if_live(&Key::NoData(p), t, &mut out);
        } else {
            self.last_nibp = Some(t);
            self.clear_if_live(&Key::NibpOverdue, t, &mut out);
            self.session.note_nibp(p, v);
        }
        if i == SPO2 {
            if let Some(s) = &mut self.sat {
                s.advance(t, self.no_data_ms);
                s.observe(t, v);
            }
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
                if let Some(fit) = self.nibp_slope.as_mut().and_then(|s| s.observe(t, v)) {
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
        self.lc.raise(
            key,
            band,
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
            self.lc.raise(
                key,
                cfg.priority,
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
        let key = Key::Drift(p);
        let present = self.present_band(&key).is_some();
        let Some(d) = &self.drift[k] else { return };
        let dir = d.direction(present);
        if dir == 0 {
            if present {
                self.lc.clear(&key, t, out);
            }
            return;
        }
        if present {
            return;
        }
        let s = d.state();
        let cfg = self.profile.trend.hr_drift;
        self.lc.raise(
            key,
            cfg.priority,
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
    /// NIBP overdue, sensor delays, NEWS2, escalation and audio-pause expiry.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Event> {
        let mut out = Vec::new();
        let t = now.timestamp_millis();
        if let Some(s) = &mut self.sat {
            s.advance(t, self.no_data_ms);
        }
        let chair_empty = self.session.phase() == SessionPhase::Ended;
        // An oximeter sensor problem already explains missing SpO2 and pulse: one cause, one technical alarm.
        let sensor_problem = self.sources.iter().any(|s| s.sensor.is_some());
        for i in CONTINUOUS {
            let ps = &self.params[i];
            if !ps.seen {
                continue;
            }
            let p = Parameter::ALL[i];
            if t - ps.last_t >= self.no_data_ms {
                // A stale value says nothing about the patient: its physiological alarms clear (or latch).
                self.params[i].pending = [None, None];
                self.params[i].pending_samples = [0, 0];
                self.clear_if_live(&Key::Threshold(p, Dir::High), t, &mut out);
                self.clear_if_live(&Key::Threshold(p, Dir::Low), t, &mut out);
                let key = Key::NoData(p);
                let explained = sensor_problem && matches!(p, Parameter::Spo2 | Parameter::Pr);
                if !chair_empty && !explained && !self.is_live(&key) {
                    self.raise_no_data(p, t, &mut out);
                }
            } else if ps.pending.iter().any(Option::is_some) || (i == SPO2 && self.sat.is_some()) {
                self.eval_thresholds(i, t, false, &mut out);
            }
        }
        self.check_nibp_overdue(t, &mut out);
        self.check_sensors(t, &mut out);
        self.check_news2(t, &mut out);
        self.lc.tick(t, &mut out);
        out
    }

    fn raise_no_data(&mut self, p: Parameter, t: i64, out: &mut Vec<Event>) {
        let ps = &self.params[p as usize];
        let silent = (t - ps.last_t) / 1000;
        let last = ps.value;
        let limit = self.profile.technical.no_data_s;
        self.lc.raise(
            Key::NoData(p),
            self.profile.technical.priority,
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

    fn check_nibp_overdue(&mut self, t: i64, out: &mut Vec<Event>) {
        let key = Key::NibpOverdue;
        let Some(cycle) = self.session.nibp_cycle_s(&self.profile.session.nibp_cycle_s) else {
            self.end_if_live(&key, t, out);
            return;
        };
        let grace = self.profile.technical.nibp_grace_s;
        let started = self.session.started().map_or(i64::MIN, |s| s.timestamp_millis());
        let anchor = self.last_nibp.unwrap_or(i64::MIN).max(started);
        if t - anchor < secs(cycle + grace) {
            self.clear_if_live(&key, t, out);
            return;
        }
        if self.is_live(&key) {
            return;
        }
        let phase = self.session.phase();
        let last = self.last_nibp.map(|l| lifecycle::ts(l).to_rfc3339());
        let since_s = (t - anchor) / 1000;
        self.lc.raise(
            key,
            self.profile.technical.priority,
            t,
            || Detail {
                kind: AlarmKind::Technical,
                condition: "nibp_overdue".into(),
                parameter: Some(Parameter::NibpSys),
                value: None,
                limit: Some((cycle + grace) as f64),
                evidence: evidence([
                    ("phase", serde_json::to_value(phase).unwrap_or(Value::Null)),
                    ("cycle_s", Value::from(cycle)),
                    ("grace_s", Value::from(grace)),
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
            if self.is_live(&key) {
                continue;
            }
            let (condition, text) = match problem {
                SensorProblem::Off => ("sensor_off", "sensor off or not connected"),
                SensorProblem::PulseSearch => ("pulse_search", "searching for pulse"),
            };
            self.lc.raise(
                key,
                self.profile.technical.priority,
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
        (ps.seen && t - ps.last_t < self.no_data_ms).then_some(ps.value)
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
        if !(s.total >= cfg.urgent_total || s.any_three) {
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
        if t - since < secs(cfg.delay_s) || self.news2_samples < 1 || self.is_live(&key) {
            return;
        }
        let urgent = cfg.urgent_total;
        self.lc.raise(
            key,
            Priority::Low,
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
                let review = if s.total >= 7 { "emergency" } else { "urgent" };
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
    pub fn device(&mut self, signal: &DeviceSignal, now: Timestamp) -> Vec<Event> {
        let mut out = Vec::new();
        let t = now.timestamp_millis();
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
            DeviceSignal::Connected { .. } => self.clear_if_live(&Key::Disconnected(name), t, &mut out),
            DeviceSignal::Disconnected { reason, .. } => {
                self.sources[k].sensor = None;
                self.end_if_live(&Key::SensorOff(name.clone()), t, &mut out);
                self.end_if_live(&Key::PulseSearch(name.clone()), t, &mut out);
                let reason = reason.clone();
                self.lc.raise(
                    Key::Disconnected(name.clone()),
                    prio,
                    t,
                    || Detail {
                        kind: AlarmKind::Technical,
                        condition: "monitor_disconnected".into(),
                        parameter: None,
                        value: None,
                        limit: None,
                        evidence: evidence([("source", Value::from(&*name)), ("reason", Value::from(reason.clone()))]),
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

    /// A person's command. A refused command changes nothing and says why.
    pub fn command(&mut self, cmd: &Command, actor: &str, now: Timestamp) -> Result<Vec<Event>, CommandError> {
        let mut out = Vec::new();
        let t = now.timestamp_millis();
        match cmd {
            Command::Acknowledge { alarm_id } => {
                let keys = self.lc.acknowledge(alarm_id.as_deref(), actor, t, &mut out)?;
                for key in keys {
                    // Acknowledging a drift accepts the new level as the reference.
                    if let Key::Drift(p) = key {
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
                // A new patient: trend state and the NIBP clock start over.
                self.last_nibp = None;
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
                self.push_session(ev, &mut out);
            }
            Command::InfusionStop => {
                let ev = self.session.infusion_stop(actor, now)?;
                self.push_session(ev, &mut out);
            }
            Command::SessionEnd => {
                let ev = self.session.end(actor, now)?;
                // The chair is empty: its expectations end; physiological alarms clear (or stay latched).
                self.end_if_live(&Key::NibpOverdue, t, &mut out);
                for i in CONTINUOUS {
                    self.params[i].seen = false;
                    self.end_if_live(&Key::NoData(Parameter::ALL[i]), t, &mut out);
                }
                self.clear_if_live(&Key::Rise(Parameter::NibpSys), t, &mut out);
                self.clear_if_live(&Key::Rise(Parameter::NibpDia), t, &mut out);
                self.push_session(ev, &mut out);
            }
            Command::SetBaseline { sys, dia } => {
                let ev = self.session.set_baseline(*sys, *dia, actor, now)?;
                self.push_session(ev, &mut out);
            }
            Command::SetLimit { key, value } => self.set_limit(key, *value, actor, now, &mut out)?,
        }
        Ok(out)
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
        let t = now.timestamp_millis();
        // Judge present values against the new limits at once.
        for i in 0..7 {
            let ps = &self.params[i];
            if ps.seen && (Parameter::ALL[i].is_nibp() || t - ps.last_t < self.no_data_ms) {
                self.eval_thresholds(i, t, false, out);
            }
        }
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

/// Reads an overridable profile number: `Some(None)` for an unset optional limit, `None` for an unknown key.
fn read_number(p: &Profile, key: &str) -> Option<Option<f64>> {
    let parts: Vec<&str> = key.split('.').collect();
    match parts.as_slice() {
        ["limits", param, dir @ ("high" | "low"), band @ ("medium" | "high")] => {
            let l = p.limits.get(Parameter::from_name(param)?);
            let b = l.and_then(|l| if *dir == "high" { l.high } else { l.low });
            Some(b.and_then(|b| if *band == "medium" { b.medium } else { b.high }))
        }
        ["limits", param, "hysteresis"] => Some(p.limits.get(Parameter::from_name(param)?).map(|l| l.hysteresis)),
        ["limits", param, "delay_s"] => Some(p.limits.get(Parameter::from_name(param)?).map(|l| l.delay_s as f64)),
        ["satseconds", "setting"] => Some(Some(p.satseconds.setting as f64)),
        ["trend", "rise", "sys"] => Some(Some(p.trend.rise.sys)),
        ["trend", "rise", "dia"] => Some(Some(p.trend.rise.dia)),
        _ => None,
    }
}

fn write_number(p: &mut Profile, key: &str, v: Option<f64>) -> Result<(), String> {
    if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
        return Err("must be a finite number >= 0".into());
    }
    let required = || v.ok_or_else(|| "cannot be removed".to_owned());
    let parts: Vec<&str> = key.split('.').collect();
    match parts.as_slice() {
        ["limits", param, dir @ ("high" | "low"), band @ ("medium" | "high")] => {
            let param = Parameter::from_name(param).ok_or("unknown parameter")?;
            let l = p.limits.get_mut(param).get_or_insert(profile::ParameterLimits {
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
            let l = p.limits.get_mut(param).as_mut().ok_or("the parameter has no limits in this profile")?;
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
