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

#[derive(Debug, Clone)]
struct Alarm {
    key: Key,
    /// The latest event: the canonical record of the alarm.
    last: AlarmEvent,
    band: Priority,
    max_priority: Priority,
    escalated_by_time: bool,
    present: bool,
    acked: bool,
    paused: bool,
    unanswered_since: Option<i64>,
    may_escalate: bool,
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

/// The live alarms of one bed and the bed's event numbering.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    bed: BedId,
    next_bed_seq: u64,
    alarms: Vec<Alarm>,
    pause_until: Option<i64>,
    latching: [bool; 3],
    escalate_after_ms: Option<i64>,
    max_pause_s: u32,
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
    pub fn new(bed: BedId, next_bed_seq: u64, latching: &[Priority], escalate_after_s: u64, max_pause_s: u32) -> Self {
        let mut l = [false; 3];
        for p in latching {
            l[prio_index(*p)] = true;
        }
        Lifecycle {
            bed,
            next_bed_seq,
            alarms: Vec::new(),
            pause_until: None,
            latching: l,
            escalate_after_ms: (escalate_after_s > 0).then_some(escalate_after_s as i64 * 1000),
            max_pause_s,
        }
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
        let a = &mut self.alarms[idx];
        a.last.seq += 1;
        a.last.bed_seq = seq;
        a.last.time = ts(now);
        a.last.phase = phase;
        a.last.state = if phase == AlarmPhase::End { AlarmState::Cleared } else { Self::state_of(a) };
        a.last.priority = if a.escalated_by_time { Priority::High.max(a.band) } else { a.band };
        a.last.by = by.map(str::to_owned);
        a.last.audio_paused_until = match (a.paused, pause_until) {
            (true, Some(u)) if phase != AlarmPhase::End => Some(ts(u)),
            _ => None,
        };
        out.push(Event::Alarm(a.last.clone()));
    }

    fn apply_detail(a: &mut Alarm, d: Detail) {
        a.last.value = d.value;
        a.last.limit = d.limit;
        a.last.evidence = d.evidence;
        a.last.message = d.message;
    }

    /// The condition `key` is present at priority `band`. Starts, escalates, de-escalates or re-activates the
    /// alarm as needed; `detail` is called only when an event is emitted.
    pub fn raise(&mut self, key: Key, band: Priority, now: i64, detail: impl FnOnce() -> Detail, out: &mut Vec<Event>) {
        let Some(idx) = self.alarms.iter().position(|a| a.key == key) else {
            let d = detail();
            let alarm_id = format!("{}-{}", self.bed, self.next_bed_seq);
            let may_escalate = matches!(d.kind, AlarmKind::Threshold | AlarmKind::Trend);
            let last = AlarmEvent {
                time: ts(now),
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
                value: d.value,
                limit: d.limit,
                evidence: d.evidence,
                message: d.message,
                by: None,
                audio_paused_until: None,
            };
            self.alarms.push(Alarm {
                key,
                last,
                band,
                max_priority: band,
                escalated_by_time: false,
                present: true,
                acked: false,
                paused: false,
                unanswered_since: Some(now),
                may_escalate,
            });
            let idx = self.alarms.len() - 1;
            self.emit(idx, AlarmPhase::Start, now, None, out);
            return;
        };
        let escalate_after = self.escalate_after_ms;
        let a = &mut self.alarms[idx];
        let old_priority = if a.escalated_by_time { Priority::High.max(a.band) } else { a.band };
        let was_present = a.present;
        a.band = band;
        a.max_priority = a.max_priority.max(band);
        let new_priority = if a.escalated_by_time { Priority::High.max(band) } else { band };
        if new_priority > old_priority {
            // A worse condition is a new reason to act: it sounds again even if acknowledged or paused.
            a.acked = false;
            a.paused = false;
            a.present = true;
            a.unanswered_since = Some(now);
            Self::apply_detail(a, detail());
            self.emit(idx, AlarmPhase::Escalate, now, None, out);
        } else if new_priority == Priority::Medium
            && old_priority == Priority::High
            && was_present
            && a.may_escalate
            && !a.acked
            && !a.paused
            && escalate_after.is_some_and(|after| a.unanswered_since.is_some_and(|s| now - s >= after))
        {
            // Unanswered for longer than the escalation time already: dropping to medium would only escalate
            // again at the next tick, so it stays high.
            a.escalated_by_time = true;
        } else if new_priority < old_priority {
            a.present = true;
            Self::apply_detail(a, detail());
            self.emit(idx, AlarmPhase::DeEscalate, now, None, out);
        } else if !was_present {
            // Condition back while latched: signalling again.
            a.present = true;
            a.unanswered_since = Some(now);
            Self::apply_detail(a, detail());
            self.emit(idx, AlarmPhase::Update, now, None, out);
        }
    }

    /// The condition `key` is absent: ends the alarm, or latches it when its highest priority latches and
    /// nobody acknowledged it yet.
    pub fn clear(&mut self, key: &Key, now: i64, out: &mut Vec<Event>) {
        let Some(idx) = self.alarms.iter().position(|a| &a.key == key) else { return };
        let a = &self.alarms[idx];
        if !a.present {
            return;
        }
        let top = if a.escalated_by_time { Priority::High } else { a.max_priority };
        if self.latching[prio_index(top)] && !a.acked {
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

    /// Audio-pause expiry and time escalation.
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
        let Some(after) = self.escalate_after_ms else { return };
        for idx in 0..self.alarms.len() {
            let a = &mut self.alarms[idx];
            if a.may_escalate
                && !a.escalated_by_time
                && a.band == Priority::Medium
                && a.present
                && !a.acked
                && !a.paused
                && a.unanswered_since.is_some_and(|s| now - s >= after)
            {
                a.escalated_by_time = true;
                a.max_priority = Priority::High;
                a.last.evidence.insert("escalated".into(), Value::from(format!("unanswered for {} s", after / 1000)));
                self.emit(idx, AlarmPhase::Escalate, now, None, out);
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
            a.paused = false;
            a.unanswered_since = None;
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
        if seconds == 0 || seconds > self.max_pause_s {
            return Err(Refusal::PauseOutOfRange(seconds, self.max_pause_s));
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
        self.pause_until.map(ts)
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

// Restore after a restart (additive: nothing above depends on it).

/// The condition key of a stored alarm event, from its `condition` (and `source` evidence for per-source
/// conditions). `None` for conditions the engine does not own (e.g. the supervisor's `bed_unmonitored`).
fn key_of_event(e: &AlarmEvent) -> Option<Key> {
    let source = || e.evidence.get("source").and_then(Value::as_str).map(Arc::<str>::from);
    let c = e.condition.as_str();
    let per_param = |suffix: &str| c.strip_suffix(suffix).and_then(Parameter::from_name);
    Some(match c {
        "demo_data" => Key::Demo(super::DEMO.into()),
        "nibp_overdue" => Key::NibpOverdue,
        "news2" => Key::News2,
        "sensor_off" => Key::SensorOff(source()?),
        "pulse_search" => Key::PulseSearch(source()?),
        "low_battery" => Key::LowBattery(source()?),
        "monitor_disconnected" => Key::Disconnected(source()?),
        "input_errors" => Key::InputErrors(source()?),
        _ => {
            if let Some(p) = per_param("_no_data") {
                Key::NoData(p)
            } else if let Some(p) = per_param("_high") {
                Key::Threshold(p, Dir::High)
            } else if let Some(p) = per_param("_low") {
                Key::Threshold(p, Dir::Low)
            } else if let Some(p) = per_param("_rise") {
                Key::Rise(p)
            } else if let Some(p) = per_param("_rising").or_else(|| per_param("_falling")) {
                Key::Slope(p)
            } else if let Some(p) = per_param("_drift") {
                Key::Drift(p)
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
            let t = last.time.timestamp_millis();
            let acked = last.state == AlarmState::Acknowledged;
            let paused = last.state == AlarmState::AudioPaused;
            if let Some(until) = last.audio_paused_until.filter(|_| paused) {
                let until = until.timestamp_millis();
                self.pause_until = Some(self.pause_until.map_or(until, |p| p.max(until)));
            }
            self.alarms.push(Alarm {
                key,
                band: last.priority,
                max_priority: last.priority,
                escalated_by_time: false,
                present: last.state != AlarmState::Latched,
                acked,
                paused,
                unanswered_since: (!acked).then_some(t),
                may_escalate: matches!(last.kind, AlarmKind::Threshold | AlarmKind::Trend),
                last,
            });
            restored += 1;
        }
        restored
    }
}
