//! Alarm lifecycle (IEC 60601-1-8 vocabulary, IHE ACM phases): one live alarm per condition key, a stable
//! `alarm_id`, a per-alarm `seq`, and a per-bed `bed_seq` that never repeats or skips.
//!
//! Rules only say "this condition is present at this priority band" or "it is absent"; this module turns that
//! into `start` / `update` / `escalate` / `de-escalate` / `end` events and applies latching, acknowledgement,
//! audio pause and time escalation (CLINICAL.md "Alarm semantics").

use std::sync::Arc;

use chrono::{DateTime, TimeDelta};
use serde_json::{Map, Value};

use crate::event::{AlarmEvent, AlarmKind, AlarmPhase, AlarmSource, AlarmState, BedAlarms, Event, Priority};
use crate::vitals::{BedId, Parameter, Timestamp};

/// Which side of the normal range a threshold guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Alarm above the limit.
    High,
    /// Alarm below the limit.
    Low,
}

/// Identity of an alarm condition within a bed: at most one live alarm per key. A new alarm (new `alarm_id`)
/// starts only after the previous one with the same key has ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// Value outside a limit.
    Threshold(Parameter, Dir),
    /// Rise from session baseline.
    Rise(Parameter),
    /// Robust slope.
    Slope(Parameter),
    /// CUSUM drift, upwards or downwards.
    Drift(Parameter, Dir),
    /// No valid data.
    NoData(Parameter),
    /// NIBP overdue for the phase.
    NibpOverdue,
    /// Sensor off / no sensor / defective, per source.
    SensorOff(Arc<str>),
    /// Pulse search, per source.
    PulseSearch(Arc<str>),
    /// Low battery, per source.
    LowBattery(Arc<str>),
    /// Link lost, per source.
    Disconnected(Arc<str>),
    /// Demo data (one per bed: the engine uses a single key whatever the source).
    Demo(Arc<str>),
    /// High input error rate, per source.
    InputErrors(Arc<str>),
    /// Advisory NEWS2.
    News2,
    /// Respiration rate 0 from a source that measures it: apnoea.
    Apnoea,
    /// Values beyond the limit that the device flags as questionable (poor signal).
    PoorSignal(Parameter),
    /// The cuff reported a failed measurement.
    CuffFailure,
    /// An infusion runs with no baseline: rise detection is off.
    BaselineMissing,
    /// A per-bed override put this limit outside its safe range (or removed it): the alarm is in effect off.
    LimitOff(Parameter, Dir),
    /// One alarm for one clinical episode: the rules of a family are its members.
    Group(Family),
    /// The monitor's own alarm, per source and the device's key for it.
    Monitor(Arc<str>, Arc<str>),
    /// The self-test's marked test alarm (`test: true`): it proves the alarm path, not the patient.
    SelfTest,
    /// The last scheduled self-test of this bed failed a hop.
    SelfTestFailed,
}

/// Families of rules that describe one clinical episode: a nurse sees one alarm whose evidence lists every
/// rule that fired (issue 10 "Fewer, better alarms"). Trend rules join their family's threshold alarm instead of
/// sounding beside it; HR and pulse rate are one heart-rate alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Systolic or diastolic high, rise from baseline, steep systolic rise.
    BloodPressureHigh,
    /// Systolic or mean low.
    BloodPressureLow,
    /// SpO2 low (valid or poor signal), SpO2 falling.
    Desaturation,
    /// Heart rate or pulse rate high, drifting up.
    RateHigh,
    /// Heart rate or pulse rate low, drifting down.
    RateLow,
    /// Respiration rate low, apnoea.
    BreathingLow,
}

impl Family {
    /// The machine name, in the evidence.
    pub const fn name(self) -> &'static str {
        match self {
            Family::BloodPressureHigh => "blood_pressure_high",
            Family::BloodPressureLow => "blood_pressure_low",
            Family::Desaturation => "desaturation",
            Family::RateHigh => "heart_rate_high",
            Family::RateLow => "heart_rate_low",
            Family::BreathingLow => "breathing_low",
        }
    }
}

/// The family a rule belongs to, if any.
pub fn family_of(key: &Key) -> Option<Family> {
    use Parameter::*;
    Some(match key {
        Key::Threshold(NibpSys | NibpDia, Dir::High) | Key::Rise(_) | Key::Slope(NibpSys) => Family::BloodPressureHigh,
        Key::Threshold(NibpSys | NibpMean, Dir::Low) => Family::BloodPressureLow,
        Key::Threshold(Spo2, Dir::Low) | Key::PoorSignal(Spo2) | Key::Slope(Spo2) => Family::Desaturation,
        Key::Threshold(Hr | Pr, Dir::High) | Key::Drift(_, Dir::High) => Family::RateHigh,
        Key::Threshold(Hr | Pr, Dir::Low) | Key::Drift(_, Dir::Low) => Family::RateLow,
        Key::Threshold(Rr, Dir::Low) | Key::Apnoea => Family::BreathingLow,
        _ => return None,
    })
}

/// What an event says beyond its lifecycle fields; built only when an event is emitted.
#[derive(Debug, Clone)]
pub struct Detail {
    /// Rule family.
    pub kind: AlarmKind,
    /// Stable machine name.
    pub condition: String,
    /// Parameter concerned.
    pub parameter: Option<Parameter>,
    /// Value.
    pub value: Option<f64>,
    /// Limit compared with.
    pub limit: Option<f64>,
    /// What the rule saw.
    pub evidence: Map<String, Value>,
    /// Nurse-readable line.
    pub message: String,
}

/// What a rule saw this time besides the band: the value, for the worst value and for sounding again when the
/// condition worsens (CLINICAL.md "A new condition always alarms again"; issue 10 item 1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Obs {
    /// The value now, if the rule has one.
    pub value: Option<f64>,
    /// Which way is worse, and how far beyond the value last annunciated (or acknowledged) sounds it again;
    /// a step of 0 never sounds again by value.
    pub worse: Option<(Dir, f64)>,
    /// A new spot reading (NIBP): any reading worse than the last one annunciated sounds again.
    pub spot: bool,
}

impl Obs {
    /// A rule with a value and a direction of worsening.
    pub const fn value(v: f64, dir: Dir, step: f64) -> Obs {
        Obs { value: Some(v), worse: Some((dir, step)), spot: false }
    }
}

/// Lifecycle settings the engine takes from the profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Priorities that latch, indexed low, medium, high.
    pub latching: [bool; 3],
    /// Unanswered medium physiological alarms escalate after this long.
    pub escalate_after_ms: Option<i64>,
    /// Longest audio pause, seconds.
    pub max_pause_s: u32,
    /// An acknowledged alarm that persists sounds again after this long, indexed low, medium, high.
    pub reminder_ms: [Option<i64>; 3],
    /// Unanswered technical alarms that blind surveillance escalate after this long during an infusion.
    pub blind_escalate_after_ms: Option<i64>,
}

impl Settings {
    /// From the profile's lifecycle and technical sections.
    pub fn from_profile(p: &crate::alarm::Profile) -> Settings {
        let mut latching = [false; 3];
        for x in &p.lifecycle.latching {
            latching[prio_index(*x)] = true;
        }
        let opt = |s: u64| (s > 0).then_some(s as i64 * 1000);
        Settings {
            latching,
            escalate_after_ms: opt(p.lifecycle.escalate_medium_after_s),
            max_pause_s: p.lifecycle.audio_pause_max_s,
            reminder_ms: [None, opt(p.lifecycle.reminder_s.medium), opt(p.lifecycle.reminder_s.high)],
            blind_escalate_after_ms: opt(p.technical.escalate_in_infusion_s),
        }
    }
}

/// One rule of an alarm: its key, whether its condition is present, its band, and what it last said.
#[derive(Debug, Clone)]
struct Member {
    key: Key,
    present: bool,
    band: Priority,
    detail: Detail,
}

#[derive(Debug, Clone)]
struct Alarm {
    key: Key,
    /// The rules of the alarm (one, unless it is a family's); the first present one of the highest band speaks.
    members: Vec<Member>,
    /// The latest event: the canonical record of the alarm (its value is kept current between events).
    last: AlarmEvent,
    /// The band of the value (or rule) while present, apart from any escalation by time.
    band: Priority,
    /// The highest priority shown in this alarm's life: a latched alarm shows it.
    max_priority: Priority,
    escalated_by_time: bool,
    present: bool,
    acked: bool,
    acked_at: Option<i64>,
    paused: bool,
    unanswered_since: Option<i64>,
    may_escalate: bool,
    /// The value the nurse last saw announced (at start, escalation, re-annunciation or acknowledge).
    annunciated: Option<f64>,
    /// The worst value and its time (ms), for the record.
    worst: Option<(f64, i64)>,
    /// A technical condition gone since then: the alarm ends once it stayed away for the hold-off.
    clearing_since: Option<i64>,
    /// A technical condition that keeps coming back: one alarm, ending only after a longer calm.
    intermittent: bool,
}

impl Alarm {
    fn member(&self, key: &Key) -> Option<usize> {
        self.members.iter().position(|m| &m.key == key)
    }

    /// The member that speaks for the alarm: the first present one of the highest band.
    fn top(&self) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, m) in self.members.iter().enumerate() {
            if m.present && best.is_none_or(|b| m.band > self.members[b].band) {
                best = Some(i);
            }
        }
        best
    }

    /// The band of the present members together.
    fn members_band(&self) -> Option<Priority> {
        self.top().map(|i| self.members[i].band)
    }

    fn effective(&self) -> Priority {
        if !self.present {
            self.max_priority
        } else if self.escalated_by_time {
            Priority::High.max(self.band)
        } else {
            self.band
        }
    }

    fn note(&mut self, obs: &Obs, now: i64) {
        let Some(v) = obs.value else { return };
        self.last.value = Some(v);
        if let Some((dir, _)) = obs.worse {
            let worse = match (self.worst, dir) {
                (None, _) => true,
                (Some((w, _)), Dir::High) => v > w,
                (Some((w, _)), Dir::Low) => v < w,
            };
            if worse {
                self.worst = Some((v, now));
            }
        }
    }

    /// Why a present alarm must sound again by value, if it must.
    fn worsened(&self, obs: &Obs) -> Option<String> {
        let (v, prev, (dir, step)) = (obs.value?, self.annunciated?, obs.worse?);
        let by = match dir {
            Dir::High => v - prev,
            Dir::Low => prev - v,
        };
        if obs.spot && by > 0.0 {
            Some(format!("new reading {} worse than {} announced", round1(v), round1(prev)))
        } else if step > 0.0 && by >= step {
            Some(format!("worse by {} since {} announced", round1(by), round1(prev)))
        } else {
            None
        }
    }

    /// Sounds again: not acknowledged, not paused, a fresh escalation timer.
    fn reannunciate(&mut self, now: i64) {
        self.acked = false;
        self.acked_at = None;
        self.paused = false;
        self.unanswered_since = Some(now);
        self.annunciated = self.last.value;
    }
}

/// A technical condition must stay away this long before its alarm ends: a flap is no new alarm.
const HOLD_OFF_MS: i64 = 5_000;
/// An intermittent one, this long.
const INTERMITTENT_HOLD_OFF_MS: i64 = 60_000;
/// A technical alarm that ended this many times within [`FLAP_WINDOW_MS`] starts again as intermittent.
const FLAPS: usize = 2;
/// The window in which flaps are counted.
const FLAP_WINDOW_MS: i64 = 600_000;

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Technical conditions that leave the chair unwatched: during an infusion they escalate when unanswered.
fn blinds_surveillance(key: &Key) -> bool {
    matches!(key, Key::NoData(_) | Key::SensorOff(_) | Key::PulseSearch(_) | Key::Disconnected(_) | Key::Demo(_))
}

/// Why a lifecycle command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No live alarm has this id.
    UnknownAlarm(String),
    /// Already acknowledged.
    AlreadyAcknowledged(String),
    /// Nothing to acknowledge.
    NothingToAcknowledge,
    /// Nothing sounding to pause.
    NothingToPause,
    /// Pause length out of range.
    PauseOutOfRange(u32, u32),
    /// Audio is not paused.
    NotPaused,
}

/// The live alarms of one bed and the bed's event numbering. Times are milliseconds on the engine's monotonic
/// clock; `label_offset_ms` turns them into the wall-clock labels events carry.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    bed: BedId,
    next_bed_seq: u64,
    alarms: Vec<Alarm>,
    pause_until: Option<i64>,
    settings: Settings,
    infusion: bool,
    label_offset_ms: i64,
    /// When technical alarms ended lately, by key, for flaps (bounded).
    recent_ends: Vec<(Key, i64)>,
}

fn prio_index(p: Priority) -> usize {
    match p {
        Priority::Low => 0,
        Priority::Medium => 1,
        Priority::High => 2,
    }
}

/// Milliseconds since the epoch to a timestamp.
pub fn ts(ms: i64) -> Timestamp {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Lifecycle {
    /// A bed's lifecycle; `next_bed_seq` is the number the next alarm event gets.
    pub fn new(bed: BedId, next_bed_seq: u64, settings: Settings) -> Self {
        Lifecycle {
            bed,
            next_bed_seq,
            alarms: Vec::new(),
            pause_until: None,
            settings,
            infusion: false,
            label_offset_ms: 0,
            recent_ends: Vec::new(),
        }
    }

    /// New settings (a limit override changed the profile); live alarms keep their state.
    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// Whether an infusion is running (technical alarms that blind surveillance escalate only then).
    pub fn set_infusion(&mut self, on: bool) {
        self.infusion = on;
    }

    /// Wall clock minus monotonic clock, for the labels of the events emitted from now on.
    pub fn set_label_offset(&mut self, offset_ms: i64) {
        self.label_offset_ms = offset_ms;
    }

    /// The wall-clock label of a monotonic time.
    pub fn label(&self, t: i64) -> Timestamp {
        ts(t + self.label_offset_ms)
    }

    /// Whether an alarm with this key is live (not ended): its own, or its family's with this rule in it.
    #[inline]
    pub fn is_live(&self, key: &Key) -> bool {
        self.find(key).is_some()
    }

    /// The alarm holding the rule `key`, and the rule's place in it.
    #[inline]
    fn find(&self, key: &Key) -> Option<(usize, usize)> {
        let family = family_of(key);
        self.alarms.iter().enumerate().find_map(|(i, a)| {
            let same = match family {
                Some(f) => a.key == Key::Group(f),
                None => &a.key == key,
            };
            if same {
                a.member(key).map(|m| (i, m))
            } else {
                None
            }
        })
    }

    /// The band of the rule `key` while its condition is present (not when latched or absent).
    #[inline]
    pub fn band(&self, key: &Key) -> Option<Priority> {
        let (i, m) = self.find(key)?;
        let m = &self.alarms[i].members[m];
        m.present.then_some(m.band)
    }

    /// Whether any alarm is live.
    pub fn any_live(&self) -> bool {
        !self.alarms.is_empty()
    }

    /// Whether a threshold alarm's condition is present.
    pub fn any_physiological(&self) -> bool {
        self.alarms
            .iter()
            .any(|a| a.present && a.members.iter().any(|m| m.present && m.detail.kind == AlarmKind::Threshold))
    }

    /// The `alarm_id` of the live alarm holding the rule `key`.
    pub fn id_of(&self, key: &Key) -> Option<&str> {
        self.find(key).map(|(i, _)| self.alarms[i].last.alarm_id.as_str())
    }

    /// The bed_seq the next event will get.
    pub fn next_bed_seq(&self) -> u64 {
        self.next_bed_seq
    }

    fn state_of(a: &Alarm) -> AlarmState {
        if !a.present {
            AlarmState::Latched
        } else if a.acked {
            AlarmState::Acknowledged
        } else if a.paused {
            AlarmState::AudioPaused
        } else {
            AlarmState::Active
        }
    }

    fn emit(&mut self, idx: usize, phase: AlarmPhase, now: i64, by: Option<&str>, out: &mut Vec<Event>) {
        let seq = self.next_bed_seq;
        self.next_bed_seq += 1;
        let pause_until = self.pause_until;
        let label = self.label_offset_ms;
        let a = &mut self.alarms[idx];
        let priority = a.effective();
        a.max_priority = a.max_priority.max(priority);
        a.last.seq += 1;
        a.last.bed_seq = seq;
        a.last.time = ts(now + label);
        a.last.phase = phase;
        a.last.state = if phase == AlarmPhase::End { AlarmState::Cleared } else { Self::state_of(a) };
        a.last.priority = priority;
        a.last.by = by.map(str::to_owned);
        a.last.audio_paused_until = match (a.paused, pause_until) {
            (true, Some(u)) if phase != AlarmPhase::End => Some(ts(u + label)),
            _ => None,
        };
        if let Some((w, at)) = a.worst {
            a.last.evidence.insert("worst_value".into(), Value::from(round1(w)));
            a.last.evidence.insert("worst_time".into(), Value::from(ts(at + label).to_rfc3339()));
        }
        if let Key::Group(f) = a.key {
            a.last.evidence.insert("family".into(), Value::from(f.name()));
            let rules: Vec<Value> = a
                .members
                .iter()
                .map(|m| {
                    let mut r = Map::new();
                    r.insert("condition".into(), Value::from(m.detail.condition.clone()));
                    r.insert("present".into(), Value::from(m.present));
                    r.insert("band".into(), serde_json::to_value(m.band).unwrap_or(Value::Null));
                    r.insert("value".into(), m.detail.value.map_or(Value::Null, |v| Value::from(round1(v))));
                    r.insert("limit".into(), m.detail.limit.map_or(Value::Null, |v| Value::from(round1(v))));
                    r.insert("message".into(), Value::from(m.detail.message.clone()));
                    Value::Object(r)
                })
                .collect();
            a.last.evidence.insert("rules".into(), Value::Array(rules));
        }
        out.push(Event::Alarm(a.last.clone()));
    }

    /// Refreshes the raised rule's words (if not done yet), then lets the top rule speak.
    fn speak<F: FnOnce() -> Detail>(a: &mut Alarm, mi: usize, detail: &mut Option<F>) {
        if let Some(f) = detail.take() {
            a.members[mi].detail = f();
        }
        Self::apply_top(a);
    }

    /// The alarm speaks with its top rule's words.
    fn apply_top(a: &mut Alarm) {
        let Some(t) = a.top() else { return };
        let d = &a.members[t].detail;
        if d.value.is_some() || a.last.value.is_none() {
            a.last.value = d.value;
        }
        a.last.kind = d.kind;
        a.last.source = source_of(d.kind);
        a.last.condition.clone_from(&d.condition);
        a.last.parameter = d.parameter;
        a.last.limit = d.limit;
        a.last.evidence.clone_from(&d.evidence);
        a.last.message.clone_from(&d.message);
        a.may_escalate = a.members.iter().any(|m| matches!(m.detail.kind, AlarmKind::Threshold | AlarmKind::Trend));
    }

    /// The condition `key` is present at priority `band`. Starts, escalates, de-escalates, re-activates or
    /// sounds the alarm again as needed; `detail` is called only when an event is emitted (or a rule joins its
    /// family's alarm).
    ///
    /// The value band is kept apart from escalation by time, so a value that enters a higher band always sounds
    /// again, even when time had already raised the priority and a nurse acknowledged it. A value worse by the
    /// profile's step than the one last announced, or a spot reading worse than the last one announced, sounds
    /// again too (issue 10 item 1; IEC 60601-1-8: a new reason to act is annunciated). A rule of a family
    /// ([`family_of`]) joins that family's alarm: one episode, one alarm, every rule in its evidence.
    pub fn raise(
        &mut self,
        key: Key,
        band: Priority,
        obs: Obs,
        now: i64,
        detail: impl FnOnce() -> Detail,
        out: &mut Vec<Event>,
    ) {
        let family = family_of(&key);
        let found = self.alarms.iter().position(|a| match family {
            Some(f) => a.key == Key::Group(f),
            None => a.key == key,
        });
        let Some(idx) = found else {
            let d = detail();
            let alarm_id = format!("{}-{}", self.bed, self.next_bed_seq);
            let may_escalate = matches!(d.kind, AlarmKind::Threshold | AlarmKind::Trend);
            let last = AlarmEvent {
                time: self.label(now),
                bed: self.bed.clone(),
                alarm_id,
                seq: 0,
                bed_seq: 0,
                kind: d.kind,
                source: source_of(d.kind),
                condition: d.condition.clone(),
                parameter: d.parameter,
                priority: band,
                phase: AlarmPhase::Start,
                state: AlarmState::Active,
                value: d.value.or(obs.value),
                limit: d.limit,
                evidence: d.evidence.clone(),
                message: d.message.clone(),
                by: None,
                audio_paused_until: None,
                test: key == Key::SelfTest,
            };
            let mut a = Alarm {
                key: family.map_or_else(|| key.clone(), Key::Group),
                members: vec![Member { key, present: true, band, detail: d }],
                last,
                band,
                max_priority: band,
                escalated_by_time: false,
                present: true,
                acked: false,
                acked_at: None,
                paused: false,
                unanswered_since: Some(now),
                may_escalate,
                annunciated: None,
                worst: None,
                clearing_since: None,
                intermittent: false,
            };
            if a.last.kind == AlarmKind::Technical && !a.last.test {
                self.recent_ends.retain(|(_, at)| now - at < FLAP_WINDOW_MS);
                let flaps = self.recent_ends.iter().filter(|(k, _)| *k == a.key).count();
                if flaps >= FLAPS {
                    a.intermittent = true;
                    a.last.message = format!("Intermittent: {}", a.last.message);
                    let text = format!("ended and came back {flaps} times in {} min", FLAP_WINDOW_MS / 60_000);
                    a.last.evidence.insert("intermittent".into(), Value::from(text));
                    a.members[0].detail.message.clone_from(&a.last.message);
                    a.members[0].detail.evidence.clone_from(&a.last.evidence);
                }
            }
            a.note(&obs, now);
            a.annunciated = a.last.value;
            self.alarms.push(a);
            let idx = self.alarms.len() - 1;
            self.emit(idx, AlarmPhase::Start, now, None, out);
            return;
        };
        let escalate_after = self.settings.escalate_after_ms;
        let a = &mut self.alarms[idx];
        // Back within the hold-off: the same alarm goes on, nothing to announce.
        a.clearing_since = None;
        let top_before = a.top();
        // A new member takes its detail now; a known one keeps the closure for `speak`, which builds it only if
        // the member speaks.
        let (mi, joined, mut detail) = match a.member(&key) {
            Some(i) => {
                let family = a.members.len() > 1;
                let m = &mut a.members[i];
                let joined = !m.present;
                m.present = true;
                m.band = band;
                (i, joined && a.present && family, Some(detail))
            }
            None => {
                a.members.push(Member { key, present: true, band, detail: detail() });
                (a.members.len() - 1, a.present, None)
            }
        };
        let top = a.top();
        let is_top = top == Some(mi);
        if is_top {
            if top_before != top {
                // Another rule speaks now: its values are what the nurse compares.
                a.worst = None;
                a.annunciated = obs.value;
            }
            a.note(&obs, now);
        }
        let group_band = a.members_band().unwrap_or(band);
        if !a.present {
            // The condition is back while latched: a new activation with its own escalation timer.
            a.present = true;
            a.band = group_band;
            a.escalated_by_time = false;
            a.reannunciate(now);
            Self::speak(a, mi, &mut detail);
            a.annunciated = a.last.value;
            a.last.evidence.insert("reactivated".into(), Value::from("condition returned while latched"));
            self.emit(idx, AlarmPhase::Update, now, None, out);
            return;
        }
        let old_band = a.band;
        let old_priority = a.effective();
        a.band = group_band;
        if group_band > old_band {
            a.reannunciate(now);
            Self::speak(a, mi, &mut detail);
            a.annunciated = a.last.value;
            self.emit(idx, AlarmPhase::Escalate, now, None, out);
        } else if group_band < old_band {
            if group_band == Priority::Medium
                && a.may_escalate
                && !a.acked
                && !a.paused
                && escalate_after.is_some_and(|after| a.unanswered_since.is_some_and(|s| now - s >= after))
            {
                // Unanswered for longer than the escalation time already: dropping to medium would only
                // escalate again at the next tick, so it stays high.
                a.escalated_by_time = true;
            }
            if a.effective() < old_priority {
                Self::speak(a, mi, &mut detail);
                self.emit(idx, AlarmPhase::DeEscalate, now, None, out);
            }
        } else if let Some(reason) = is_top.then(|| a.worsened(&obs)).flatten() {
            a.reannunciate(now);
            Self::speak(a, mi, &mut detail);
            a.annunciated = a.last.value;
            a.last.evidence.insert("reannounced".into(), Value::from(reason));
            self.emit(idx, AlarmPhase::Update, now, None, out);
        } else if joined {
            // Another rule of the family fired: the alarm's evidence says so.
            Self::speak(a, mi, &mut detail);
            self.emit(idx, AlarmPhase::Update, now, None, out);
        }
    }

    /// The condition `key` is absent. A family's alarm goes on while another of its rules is present (and
    /// de-escalates if that one is lower); otherwise the alarm ends, or latches when a priority it reached
    /// latches and nobody acknowledged it yet. A latched alarm shows the highest priority it reached and its
    /// worst value.
    pub fn clear(&mut self, key: &Key, now: i64, out: &mut Vec<Event>) {
        let Some((idx, mi)) = self.find(key) else { return };
        let a = &mut self.alarms[idx];
        if !a.present || !a.members[mi].present {
            return;
        }
        a.members[mi].present = false;
        if a.last.kind == AlarmKind::Technical && a.members.len() == 1 {
            // A technical condition ends only after it stayed away for the hold-off (see `tick`).
            a.clearing_since.get_or_insert(now);
            return;
        }
        if let Some(band) = a.members_band() {
            let old_priority = a.effective();
            a.band = band;
            Self::apply_top(a);
            if a.effective() < old_priority {
                self.emit(idx, AlarmPhase::DeEscalate, now, None, out);
            }
            return;
        }
        let top = a.max_priority.max(a.effective());
        if self.settings.latching[prio_index(top)] && !a.acked {
            let a = &mut self.alarms[idx];
            a.present = false;
            a.unanswered_since = None;
            self.emit(idx, AlarmPhase::Update, now, None, out);
        } else {
            self.finish(idx, now, out);
        }
    }

    /// Ends the alarm at `idx`, remembering when a technical one ended (for flaps).
    fn finish(&mut self, idx: usize, now: i64, out: &mut Vec<Event>) {
        self.alarms[idx].present = false;
        self.emit(idx, AlarmPhase::End, now, None, out);
        let a = self.alarms.remove(idx);
        if a.last.kind == AlarmKind::Technical {
            if self.recent_ends.len() >= 64 {
                self.recent_ends.remove(0);
            }
            self.recent_ends.push((a.key, now));
        }
    }

    /// Latches or ends a technical alarm whose condition stayed away for its hold-off.
    fn settle_cleared(&mut self, now: i64, out: &mut Vec<Event>) {
        let mut idx = 0;
        while idx < self.alarms.len() {
            let a = &self.alarms[idx];
            let hold = if a.intermittent { INTERMITTENT_HOLD_OFF_MS } else { HOLD_OFF_MS };
            if a.clearing_since.is_some_and(|since| now - since >= hold) {
                let top = a.max_priority.max(a.effective());
                if self.settings.latching[prio_index(top)] && !a.acked {
                    let a = &mut self.alarms[idx];
                    a.clearing_since = None;
                    a.present = false;
                    a.unanswered_since = None;
                    self.emit(idx, AlarmPhase::Update, now, None, out);
                } else {
                    self.finish(idx, now, out);
                    continue;
                }
            }
            idx += 1;
        }
    }

    /// Ends a rule unconditionally (it no longer applies: session ended, source gone); its alarm ends with it
    /// unless another rule of its family is present.
    pub fn end(&mut self, key: &Key, now: i64, out: &mut Vec<Event>) {
        let Some((idx, mi)) = self.find(key) else { return };
        let a = &mut self.alarms[idx];
        if a.members.len() > 1 && a.members.iter().enumerate().any(|(i, m)| i != mi && m.present) {
            a.members.remove(mi);
            if let Some(band) = a.members_band() {
                a.band = band;
            }
            Self::apply_top(a);
            return;
        }
        self.finish(idx, now, out);
    }

    /// The device keys of the live monitor alarms of `source`.
    pub fn monitor_keys(&self, source: &str) -> Vec<Arc<str>> {
        self.alarms
            .iter()
            .filter_map(|a| match &a.key {
                Key::Monitor(s, k) if &**s == source => Some(k.clone()),
                _ => None,
            })
            .collect()
    }

    /// Changes the words of the live rule `key` with `change`; when it says the change is worth announcing, the
    /// alarm speaks again with an `update` event (a monitor alarm whose link was lost, or is back); otherwise the
    /// words go with its next event (the `end`).
    pub fn amend(&mut self, key: &Key, now: i64, change: impl FnOnce(&mut Detail) -> bool, out: &mut Vec<Event>) {
        let Some((idx, mi)) = self.find(key) else { return };
        let announce = change(&mut self.alarms[idx].members[mi].detail);
        Self::apply_top(&mut self.alarms[idx]);
        if announce {
            self.emit(idx, AlarmPhase::Update, now, None, out);
        }
    }

    /// The words of the live rule `key`.
    pub fn detail(&self, key: &Key) -> Option<&Detail> {
        self.find(key).map(|(idx, mi)| &self.alarms[idx].members[mi].detail)
    }

    /// Audio-pause expiry, time escalation, reminders for acknowledged alarms that persist, and escalation of
    /// unanswered technical alarms that blind surveillance during an infusion.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Event>) {
        self.settle_cleared(now, out);
        if let Some(until) = self.pause_until {
            if now >= until {
                self.pause_until = None;
                for idx in 0..self.alarms.len() {
                    if self.alarms[idx].paused {
                        self.alarms[idx].paused = false;
                        if self.alarms[idx].present && !self.alarms[idx].acked {
                            self.alarms[idx].unanswered_since = Some(now);
                        }
                        self.emit(idx, AlarmPhase::Update, now, None, out);
                    }
                }
            }
        }
        let s = self.settings;
        for idx in 0..self.alarms.len() {
            let infusion = self.infusion;
            let a = &mut self.alarms[idx];
            if !a.present || a.clearing_since.is_some() {
                continue;
            }
            let unanswered_for = |after: Option<i64>| {
                after.is_some_and(|after| a.unanswered_since.is_some_and(|since| now - since >= after))
            };
            let waiting = !a.acked && !a.paused && !a.escalated_by_time && a.band == Priority::Medium;
            if waiting && a.may_escalate && unanswered_for(s.escalate_after_ms) {
                a.escalated_by_time = true;
                let after = s.escalate_after_ms.unwrap_or_default() / 1000;
                a.last.evidence.insert("escalated".into(), Value::from(format!("unanswered for {after} s")));
                self.emit(idx, AlarmPhase::Escalate, now, None, out);
            } else if waiting && infusion && blinds_surveillance(&a.key) && unanswered_for(s.blind_escalate_after_ms) {
                a.escalated_by_time = true;
                let after = s.blind_escalate_after_ms.unwrap_or_default() / 1000;
                a.last.evidence.insert(
                    "escalated".into(),
                    Value::from(format!("chair unwatched during the infusion, unanswered for {after} s")),
                );
                self.emit(idx, AlarmPhase::Escalate, now, None, out);
            } else if a.acked {
                let reminder = s.reminder_ms[prio_index(a.effective())];
                if let (Some(after), Some(at)) = (reminder, a.acked_at) {
                    if now - at >= after {
                        a.reannunciate(now);
                        let msg = format!("still present {} s after acknowledge", after / 1000);
                        a.last.evidence.insert("reminder".into(), Value::from(msg));
                        self.emit(idx, AlarmPhase::Update, now, None, out);
                    }
                }
            }
        }
    }

    /// Acknowledges one alarm or all. An alarm whose condition has gone ends; others stay visible as
    /// acknowledged while the condition lasts.
    pub fn acknowledge(
        &mut self,
        alarm_id: Option<&str>,
        actor: &str,
        now: i64,
        out: &mut Vec<Event>,
    ) -> Result<Vec<Key>, Refusal> {
        let targets: Vec<usize> = match alarm_id {
            Some(id) => {
                let idx = self
                    .alarms
                    .iter()
                    .position(|a| a.last.alarm_id == id)
                    .ok_or_else(|| Refusal::UnknownAlarm(id.to_owned()))?;
                if self.alarms[idx].acked {
                    return Err(Refusal::AlreadyAcknowledged(id.to_owned()));
                }
                vec![idx]
            }
            None => {
                let v: Vec<usize> = (0..self.alarms.len()).filter(|&i| !self.alarms[i].acked).collect();
                if v.is_empty() {
                    return Err(Refusal::NothingToAcknowledge);
                }
                v
            }
        };
        let mut acked = Vec::new();
        let mut ended = Vec::new();
        for idx in targets {
            let a = &mut self.alarms[idx];
            a.acked = true;
            a.acked_at = Some(now);
            a.paused = false;
            a.unanswered_since = None;
            a.annunciated = a.last.value;
            acked.extend(a.members.iter().map(|m| m.key.clone()));
            if a.present {
                self.emit(idx, AlarmPhase::Update, now, Some(actor), out);
            } else {
                self.emit(idx, AlarmPhase::End, now, Some(actor), out);
                ended.push(idx);
            }
        }
        for idx in ended.into_iter().rev() {
            self.alarms.remove(idx);
        }
        Ok(acked)
    }

    /// Pauses audio of the alarms sounding now for `seconds`. New conditions still sound.
    pub fn pause_audio(&mut self, seconds: u32, actor: &str, now: i64, out: &mut Vec<Event>) -> Result<(), Refusal> {
        let max = self.settings.max_pause_s;
        if seconds == 0 || seconds > max {
            return Err(Refusal::PauseOutOfRange(seconds, max));
        }
        let targets: Vec<usize> = (0..self.alarms.len()).filter(|&i| !self.alarms[i].acked).collect();
        if targets.is_empty() {
            return Err(Refusal::NothingToPause);
        }
        self.pause_until = Some(now + seconds as i64 * 1000);
        for idx in targets {
            self.alarms[idx].paused = true;
            self.alarms[idx].unanswered_since = None;
            self.emit(idx, AlarmPhase::Update, now, Some(actor), out);
        }
        Ok(())
    }

    /// Ends an audio pause early.
    pub fn resume_audio(&mut self, actor: &str, now: i64, out: &mut Vec<Event>) -> Result<(), Refusal> {
        if self.pause_until.is_none() {
            return Err(Refusal::NotPaused);
        }
        self.pause_until = None;
        for idx in 0..self.alarms.len() {
            if self.alarms[idx].paused {
                self.alarms[idx].paused = false;
                if self.alarms[idx].present {
                    self.alarms[idx].unanswered_since = Some(now);
                }
                self.emit(idx, AlarmPhase::Update, now, Some(actor), out);
            }
        }
        Ok(())
    }

    /// When audio pause ends, if paused.
    pub fn audio_paused_until(&self) -> Option<Timestamp> {
        self.pause_until.map(|u| self.label(u))
    }

    /// Snapshot of the live alarms.
    pub fn snapshot(&self, now: Timestamp) -> BedAlarms {
        BedAlarms {
            bed: self.bed.clone(),
            time: now,
            bed_seq: self.next_bed_seq.saturating_sub(1),
            alarms: self.alarms.iter().map(|a| a.last.clone()).collect(),
        }
    }
}

impl Detail {
    /// A technical condition's words: no value, no limit.
    pub fn technical(
        condition: &str,
        parameter: Option<Parameter>,
        evidence: Map<String, Value>,
        message: String,
    ) -> Detail {
        Detail {
            kind: AlarmKind::Technical,
            condition: condition.to_owned(),
            parameter,
            value: None,
            limit: None,
            evidence,
            message,
        }
    }
}

/// The condition name of a monitor's own alarm.
pub const MONITOR_ALARM: &str = "monitor_alarm";
/// The condition name of the self-test's marked test alarm.
pub const SELF_TEST: &str = "self_test";
/// The condition name of the technical alarm a failed scheduled self-test raises.
pub const SELFTEST_FAILED: &str = "selftest_failed";

/// Who decides alarms of this kind.
pub const fn source_of(kind: AlarmKind) -> AlarmSource {
    match kind {
        AlarmKind::Device => AlarmSource::Monitor,
        _ => AlarmSource::Vigil,
    }
}

/// A small evidence map builder.
pub fn evidence<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert(k.to_owned(), v);
    }
    m
}

/// Milliseconds in `s` seconds.
pub const fn secs(s: u64) -> i64 {
    s as i64 * 1000
}

/// A `TimeDelta` helper for callers.
pub fn delta_ms(ms: i64) -> TimeDelta {
    TimeDelta::milliseconds(ms)
}

// Restore after a restart (additive: nothing above depends on it).

/// The condition key of a stored alarm event, from its `condition` (and `source` evidence for per-source
/// conditions). `None` for conditions the engine does not own (e.g. the supervisor's `bed_unmonitored`).
fn key_of_event(e: &AlarmEvent) -> Option<Key> {
    key_of_condition(&e.condition, &e.evidence, e.parameter)
}

/// The condition key of a rule, from its condition name and the evidence it carried.
fn key_of_condition(c: &str, evidence: &Map<String, Value>, parameter: Option<Parameter>) -> Option<Key> {
    let source = || evidence.get("source").and_then(Value::as_str).map(Arc::<str>::from);
    let per_param = |suffix: &str| c.strip_suffix(suffix).and_then(Parameter::from_name);
    let dir =
        |up: &str| if evidence.get("direction").and_then(Value::as_str) == Some(up) { Dir::High } else { Dir::Low };
    Some(match c {
        "demo_data" => Key::Demo(super::DEMO.into()),
        "nibp_overdue" => Key::NibpOverdue,
        "news2" => Key::News2,
        "apnoea" => Key::Apnoea,
        "cuff_failure" => Key::CuffFailure,
        "baseline_missing" => Key::BaselineMissing,
        "alarm_off" => Key::LimitOff(parameter?, dir("high")),
        "sensor_off" => Key::SensorOff(source()?),
        "pulse_search" => Key::PulseSearch(source()?),
        "low_battery" => Key::LowBattery(source()?),
        "monitor_disconnected" => Key::Disconnected(source()?),
        "input_errors" => Key::InputErrors(source()?),
        MONITOR_ALARM => Key::Monitor(source()?, evidence.get("device_key").and_then(Value::as_str)?.into()),
        SELF_TEST => Key::SelfTest,
        SELFTEST_FAILED => Key::SelfTestFailed,
        _ => {
            if let Some(p) = per_param("_no_data") {
                Key::NoData(p)
            } else if let Some(p) = per_param("_low_poor_signal") {
                Key::PoorSignal(p)
            } else if let Some(p) = per_param("_high") {
                Key::Threshold(p, Dir::High)
            } else if let Some(p) = per_param("_low") {
                Key::Threshold(p, Dir::Low)
            } else if let Some(p) = per_param("_rise") {
                Key::Rise(p)
            } else if let Some(p) = per_param("_rising").or_else(|| per_param("_falling")) {
                Key::Slope(p)
            } else if let Some(p) = per_param("_drift") {
                Key::Drift(p, dir("up"))
            } else {
                return None;
            }
        }
    })
}

impl Lifecycle {
    /// Takes back a bed's live alarms after a restart: `events` are the latest event of each alarm that had not
    /// ended (the stored alarm snapshot). Each keeps its `alarm_id`, `seq`, state (active, latched,
    /// acknowledged, audio-paused) and priority, so the lifecycle continues where it was: no second `start`
    /// while the condition lasts, an `end` once it is gone (or acknowledged, when latched). Events whose condition
    /// this engine does not own are skipped. Returns how many alarms were restored. `next_bed_seq` is not
    /// touched: it comes from the store.
    pub fn restore(&mut self, events: Vec<AlarmEvent>) -> usize {
        let mut restored = 0;
        for last in events {
            if last.phase == AlarmPhase::End || last.state == AlarmState::Cleared {
                continue;
            }
            let Some(key) = key_of_event(&last) else { continue };
            if self.is_live(&key) {
                continue;
            }
            // A family's alarm: its rules as the evidence listed them (the speaking rule when it lists none).
            let detail = |condition: &str, value: Option<f64>, limit: Option<f64>, message: String| Detail {
                kind: last.kind,
                condition: condition.to_owned(),
                parameter: last.parameter,
                value,
                limit,
                evidence: last.evidence.clone(),
                message,
            };
            let mut members: Vec<Member> = last
                .evidence
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    let condition = r.get("condition")?.as_str()?;
                    let key = key_of_condition(condition, &last.evidence, last.parameter)?;
                    let band = serde_json::from_value(r.get("band")?.clone()).ok()?;
                    let message = r.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
                    let d = detail(condition, r["value"].as_f64(), r["limit"].as_f64(), message);
                    Some(Member { key, present: r.get("present") == Some(&Value::Bool(true)), band, detail: d })
                })
                .collect();
            if members.is_empty() {
                let present = last.state != AlarmState::Latched;
                let d = detail(&last.condition, last.value, last.limit, last.message.clone());
                members.push(Member { key: key.clone(), present, band: last.priority, detail: d });
            }
            let t = last.time.timestamp_millis();
            let acked = last.state == AlarmState::Acknowledged;
            let paused = last.state == AlarmState::AudioPaused;
            if let Some(until) = last.audio_paused_until.filter(|_| paused) {
                let until = until.timestamp_millis();
                self.pause_until = Some(self.pause_until.map_or(until, |p| p.max(until)));
            }
            let band = members.iter().filter(|m| m.present).map(|m| m.band).max().unwrap_or(last.priority);
            self.alarms.push(Alarm {
                key: family_of(&key).map_or(key, Key::Group),
                members,
                band,
                max_priority: last.priority,
                escalated_by_time: last.priority > band,
                present: last.state != AlarmState::Latched,
                acked,
                acked_at: acked.then_some(t),
                paused,
                unanswered_since: (!acked).then_some(t),
                may_escalate: matches!(last.kind, AlarmKind::Threshold | AlarmKind::Trend),
                annunciated: last.value,
                worst: last.evidence.get("worst_value").and_then(Value::as_f64).map(|w| (w, t)),
                clearing_since: None,
                intermittent: last.evidence.contains_key("intermittent"),
                last,
            });
            restored += 1;
        }
        restored
    }
}
