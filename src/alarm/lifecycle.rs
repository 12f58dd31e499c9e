//! Alarm lifecycle (IEC 60601-1-8 vocabulary, IHE ACM phases): one live alarm per condition key, a stable
//! `alarm_id`, a per-alarm `seq`, and a per-bed `bed_seq` that never repeats or skips.
//!
//! Rules only say "this condition is present at this priority band" or "it is absent"; this module turns that
//! into `start` / `update` / `escalate` / `de-escalate` / `end` events and applies latching, acknowledgement,
//! audio pause and time escalation (CLINICAL.md "Alarm semantics").

use std::sync::Arc;

use chrono::{DateTime, TimeDelta};
use serde_json::{Map, Value};

use crate::event::{AlarmEvent, AlarmKind, AlarmPhase, AlarmState, BedAlarms, Event, Priority};
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
    /// CUSUM drift.
    Drift(Parameter),
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

#[derive(Debug, Clone)]
struct Alarm {
    key: Key,
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
}

impl Alarm {
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

    /// Whether an alarm with this key is live (not ended).
    #[inline]
    pub fn is_live(&self, key: &Key) -> bool {
        self.alarms.iter().any(|a| &a.key == key)
    }

    /// The band of the alarm with this key while its condition is present (not when latched or absent).
    #[inline]
    pub fn band(&self, key: &Key) -> Option<Priority> {
        self.alarms.iter().find(|a| &a.key == key && a.present).map(|a| a.band)
    }

    /// Whether any alarm is live.
    pub fn any_live(&self) -> bool {
        !self.alarms.is_empty()
    }

    /// The `alarm_id` of a live alarm.
    pub fn id_of(&self, key: &Key) -> Option<&str> {
        self.alarms.iter().find(|a| &a.key == key).map(|a| a.last.alarm_id.as_str())
    }

    /// The key of the live alarm with this id.
    pub fn key_of(&self, alarm_id: &str) -> Option<&Key> {
        self.alarms.iter().find(|a| a.last.alarm_id == alarm_id).map(|a| &a.key)
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
        out.push(Event::Alarm(a.last.clone()));
    }

    fn apply_detail(a: &mut Alarm, d: Detail) {
        if d.value.is_some() || a.last.value.is_none() {
            a.last.value = d.value;
        }
        a.last.limit = d.limit;
        a.last.evidence = d.evidence;
        a.last.message = d.message;
    }

    /// The condition `key` is present at priority `band`. Starts, escalates, de-escalates, re-activates or
    /// sounds the alarm again as needed; `detail` is called only when an event is emitted.
    ///
    /// The value band is kept apart from escalation by time, so a value that enters a higher band always sounds
    /// again, even when time had already raised the priority and a nurse acknowledged it. A value worse by the
    /// profile's step than the one last announced, or a spot reading worse than the last one announced, sounds
    /// again too (issue 10 item 1; IEC 60601-1-8: a new reason to act is annunciated).
    pub fn raise(
        &mut self,
        key: Key,
        band: Priority,
        obs: Obs,
        now: i64,
        detail: impl FnOnce() -> Detail,
        out: &mut Vec<Event>,
    ) {
        let Some(idx) = self.alarms.iter().position(|a| a.key == key) else {
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
                condition: d.condition,
                parameter: d.parameter,
                priority: band,
                phase: AlarmPhase::Start,
                state: AlarmState::Active,
                value: d.value.or(obs.value),
                limit: d.limit,
                evidence: d.evidence,
                message: d.message,
                by: None,
                audio_paused_until: None,
            };
            let mut a = Alarm {
                key,
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
            };
            a.note(&obs, now);
            a.annunciated = a.last.value;
            self.alarms.push(a);
            let idx = self.alarms.len() - 1;
            self.emit(idx, AlarmPhase::Start, now, None, out);
            return;
        };
        let escalate_after = self.settings.escalate_after_ms;
        let a = &mut self.alarms[idx];
        a.note(&obs, now);
        if !a.present {
            // The condition is back while latched: a new activation with its own escalation timer.
            a.present = true;
            a.band = band;
            a.escalated_by_time = false;
            a.reannunciate(now);
            Self::apply_detail(a, detail());
            a.annunciated = a.last.value;
            a.last.evidence.insert("reactivated".into(), Value::from("condition returned while latched"));
            self.emit(idx, AlarmPhase::Update, now, None, out);
            return;
        }
        let old_band = a.band;
        let old_priority = a.effective();
        a.band = band;
        if band > old_band {
            a.reannunciate(now);
            Self::apply_detail(a, detail());
            a.annunciated = a.last.value;
            self.emit(idx, AlarmPhase::Escalate, now, None, out);
        } else if band < old_band {
            if band == Priority::Medium
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
                Self::apply_detail(a, detail());
                self.emit(idx, AlarmPhase::DeEscalate, now, None, out);
            }
        } else if let Some(reason) = a.worsened(&obs) {
            a.reannunciate(now);
            Self::apply_detail(a, detail());
            a.annunciated = a.last.value;
            a.last.evidence.insert("reannounced".into(), Value::from(reason));
            self.emit(idx, AlarmPhase::Update, now, None, out);
        }
    }

    /// The condition `key` is absent: ends the alarm, or latches it when a priority it reached latches and
    /// nobody acknowledged it yet. A latched alarm shows the highest priority it reached and its worst value.
    pub fn clear(&mut self, key: &Key, now: i64, out: &mut Vec<Event>) {
        let Some(idx) = self.alarms.iter().position(|a| &a.key == key) else { return };
        let a = &self.alarms[idx];
        if !a.present {
            return;
        }
        let top = a.max_priority.max(a.effective());
        if self.settings.latching[prio_index(top)] && !a.acked {
            let a = &mut self.alarms[idx];
            a.present = false;
            a.unanswered_since = None;
            self.emit(idx, AlarmPhase::Update, now, None, out);
        } else {
            self.alarms[idx].present = false;
            self.emit(idx, AlarmPhase::End, now, None, out);
            self.alarms.remove(idx);
        }
    }

    /// Ends an alarm unconditionally (its rule no longer applies: session ended, source gone).
    pub fn end(&mut self, key: &Key, now: i64, out: &mut Vec<Event>) {
        let Some(idx) = self.alarms.iter().position(|a| &a.key == key) else { return };
        self.alarms[idx].present = false;
        self.emit(idx, AlarmPhase::End, now, None, out);
        self.alarms.remove(idx);
    }

    /// Audio-pause expiry, time escalation, reminders for acknowledged alarms that persist, and escalation of
    /// unanswered technical alarms that blind surveillance during an infusion.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Event>) {
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
            if !a.present {
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
            acked.push(a.key.clone());
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
