//! The engine loop: one engine per bed and profile, fed rows in time order, ticked once per second of virtual
//! time, with the summary counted as events go by (nothing grows with the length of the recording).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::TimeDelta;

use super::input::{Action, Row, RowKind};
use super::{prio, round2, Counts, ReplayError};
use crate::alarm::{Engine, Profile};
use crate::event::{AlarmEvent, AlarmPhase, AlarmState, Command, Event, Priority};
use crate::vitals::{BedId, Parameter, Reading, Timestamp, ValueStatus};

/// The actor of every command replay gives the engine.
pub const ACTOR: &str = "replay";

/// A nurse's action the engine refused (nothing to acknowledge, no session for a baseline, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal<'a> {
    /// When.
    pub time: Timestamp,
    /// Which bed.
    pub bed: &'a str,
    /// The CSV line of the action.
    pub line: usize,
    /// The action as written.
    pub action: &'a Action,
    /// Why the engine refused it.
    pub reason: String,
}

/// What the loop hands to the output: the first profile's alarm events and its refused actions.
pub trait Sink {
    /// One alarm event of the first profile.
    fn alarm(&mut self, a: &AlarmEvent) -> std::io::Result<()>;
    /// One refused action (first profile).
    fn refused(&mut self, r: &Refusal<'_>) -> std::io::Result<()>;
}

/// Counts of one profile, kept as the events go by. Time in alarm is the union over beds of the time with a
/// condition present, counted from the number of present alarms (events arrive in time order).
struct Tally {
    counts: Counts,
    open: HashMap<String, Priority>,
    start_priority: HashMap<String, Priority>,
    present: usize,
    present_since: Option<Timestamp>,
    present_ms: i64,
    by_priority: [(usize, Option<Timestamp>, i64); 3],
}

fn prio_index(p: Priority) -> usize {
    match p {
        Priority::High => 0,
        Priority::Medium => 1,
        Priority::Low => 2,
    }
}

impl Tally {
    fn new(profile: &str) -> Tally {
        Tally {
            counts: Counts {
                profile: profile.to_owned(),
                alarms: 0,
                events: 0,
                alarms_per_hour: 0.0,
                by_priority: BTreeMap::new(),
                by_parameter: BTreeMap::new(),
                by_condition: BTreeMap::new(),
                per_hour_by_priority: BTreeMap::new(),
                per_hour_by_parameter: BTreeMap::new(),
                time_in_alarm_s: 0.0,
                time_in_alarm_by_priority_s: BTreeMap::new(),
                escalations: 0,
            },
            open: HashMap::new(),
            start_priority: HashMap::new(),
            present: 0,
            present_since: None,
            present_ms: 0,
            by_priority: [(0, None, 0); 3],
        }
    }

    fn alarm(&mut self, a: &AlarmEvent) {
        let c = &mut self.counts;
        c.events += 1;
        match a.phase {
            AlarmPhase::Start => {
                c.alarms += 1;
                *c.by_priority.entry(prio(a.priority).into()).or_default() += 1;
                let param = a.parameter.map_or("none", Parameter::name);
                *c.by_parameter.entry(param.into()).or_default() += 1;
                *c.by_condition.entry(a.condition.clone()).or_default() += 1;
                self.start_priority.insert(a.alarm_id.clone(), a.priority);
            }
            AlarmPhase::Escalate => c.escalations += 1,
            _ => {}
        }
        // Time in alarm counts while the condition is present (not while merely latched: latched time would
        // measure how long nobody acknowledged, not the patient).
        let present = matches!(a.state, AlarmState::Active | AlarmState::Acknowledged | AlarmState::AudioPaused);
        if present && !self.open.contains_key(&a.alarm_id) {
            let p = self.start_priority.get(&a.alarm_id).copied().unwrap_or(a.priority);
            self.open.insert(a.alarm_id.clone(), p);
            self.open_at(a.time, p);
        } else if !present {
            if let Some(p) = self.open.remove(&a.alarm_id) {
                self.close_at(a.time, p);
            }
        }
        if a.phase == AlarmPhase::End {
            self.start_priority.remove(&a.alarm_id);
        }
    }

    fn open_at(&mut self, t: Timestamp, p: Priority) {
        if self.present == 0 {
            self.present_since = Some(t);
        }
        self.present += 1;
        let slot = &mut self.by_priority[prio_index(p)];
        if slot.0 == 0 {
            slot.1 = Some(t);
        }
        slot.0 += 1;
    }

    fn close_at(&mut self, t: Timestamp, p: Priority) {
        self.present -= 1;
        if self.present == 0 {
            if let Some(s) = self.present_since.take() {
                self.present_ms += (t - s).num_milliseconds().max(0);
            }
        }
        let slot = &mut self.by_priority[prio_index(p)];
        slot.0 -= 1;
        if slot.0 == 0 {
            if let Some(s) = slot.1.take() {
                slot.2 += (t - s).num_milliseconds().max(0);
            }
        }
    }

    fn finish(mut self, first: Timestamp, end: Timestamp) -> Counts {
        for (_, p) in std::mem::take(&mut self.open) {
            self.close_at(end, p);
        }
        let hours = ((end - first).num_milliseconds() as f64 / 3_600_000.0).max(1.0 / 3600.0);
        let mut c = self.counts;
        c.alarms_per_hour = round2(c.alarms as f64 / hours);
        c.per_hour_by_priority = c.by_priority.iter().map(|(k, v)| (k.clone(), round2(*v as f64 / hours))).collect();
        c.per_hour_by_parameter = c.by_parameter.iter().map(|(k, v)| (k.clone(), round2(*v as f64 / hours))).collect();
        c.time_in_alarm_s = self.present_ms as f64 / 1000.0;
        for p in [Priority::High, Priority::Medium, Priority::Low] {
            let ms = self.by_priority[prio_index(p)].2;
            if ms > 0 {
                c.time_in_alarm_by_priority_s.insert(prio(p).into(), ms as f64 / 1000.0);
            }
        }
        c
    }
}

/// One bed: an engine per profile, and the reading handed to them, filled in place for each row (building a
/// fresh one per row cloned the bed's name, an atomic increment and decrement per reading).
struct Bed {
    id: BedId,
    engines: Vec<Engine>,
    reading: Reading,
}

/// What a finished loop found.
pub struct Outcome {
    /// Rows read (every bed, before `--bed`).
    pub rows: usize,
    /// Beds replayed, sorted.
    pub beds: Vec<String>,
    /// First and last row (every bed).
    pub first: Option<Timestamp>,
    /// Last row.
    pub last: Option<Timestamp>,
    /// Counts per profile, in the order given.
    pub counts: Vec<Counts>,
    /// Nurse's actions replayed (first profile) and how many it refused.
    pub actions: usize,
    /// Refused actions (first profile).
    pub refused: usize,
}

/// Fills a bed's held reading in place for one row and lends it to the engine.
fn fill(
    held: &mut Reading,
    (parameter, value, status): (Parameter, Option<f64>, ValueStatus),
    received: Timestamp,
    measured: Option<Timestamp>,
    spot: bool,
) -> &Reading {
    held.parameter = parameter;
    held.value = value;
    held.status = status;
    held.received = received;
    held.measured = measured;
    held.spot = spot;
    held
}

/// A bed index with no runner bed yet.
const NO_BED: u32 = u32::MAX;

/// The engine loop over rows in time order.
pub struct Runner<'a> {
    profiles: Vec<Arc<Profile>>,
    only_bed: Option<&'a str>,
    /// The runner's bed for each of the input's bed indices ([`Row::bed`]); `NO_BED` until the bed's first row.
    slots: Vec<u32>,
    beds: Vec<Bed>,
    /// Bed indices in bed-name order: ticks visit beds in this order.
    order: Vec<usize>,
    tallies: Vec<Tally>,
    next_tick: Option<Timestamp>,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    rows: usize,
    actions: usize,
    refused: usize,
    seen: BTreeSet<BedId>,
}

impl<'a> Runner<'a> {
    /// A loop for these profiles (the first one's events go to the sink) and optionally one bed only.
    pub fn new(profiles: Vec<Profile>, only_bed: Option<&'a str>) -> Runner<'a> {
        let tallies = profiles.iter().map(|p| Tally::new(&p.name)).collect();
        Runner {
            profiles: profiles.into_iter().map(Arc::new).collect(),
            only_bed,
            slots: Vec::new(),
            beds: Vec::new(),
            order: Vec::new(),
            tallies,
            next_tick: None,
            first: None,
            last: None,
            rows: 0,
            actions: 0,
            refused: 0,
            seen: BTreeSet::new(),
        }
    }

    fn emit(&mut self, k: usize, events: Vec<Event>, sink: &mut dyn Sink) -> Result<(), ReplayError> {
        if events.is_empty() {
            return Ok(());
        }
        for e in events {
            let Event::Alarm(a) = e else { continue };
            self.tallies[k].alarm(&a);
            if k == 0 {
                sink.alarm(&a)?;
            }
        }
        Ok(())
    }

    /// One row (rows must come in time order); `bed` is the name of the row's bed index ([`super::Input::bed`]).
    pub fn row(&mut self, r: &Row, bed: &BedId, sink: &mut dyn Sink) -> Result<(), ReplayError> {
        self.rows += 1;
        if self.first.is_none() {
            self.first = Some(r.time);
            self.next_tick = Some(r.time + TimeDelta::seconds(1));
        }
        self.last = Some(r.time);
        if self.only_bed.is_some_and(|b| b != &**bed) {
            return Ok(());
        }
        self.tick_until(r.time, sink)?;
        let slot = r.bed as usize;
        let i = match self.slots.get(slot) {
            Some(&i) if i != NO_BED => i as usize,
            _ => self.add_bed(slot, bed),
        };
        for k in 0..self.profiles.len() {
            let events = self.feed(i, k, r, bed, sink)?;
            self.emit(k, events, sink)?;
        }
        Ok(())
    }

    fn add_bed(&mut self, slot: usize, bed: &BedId) -> usize {
        let engines = self.profiles.iter().map(|p| Engine::new(bed.clone(), p.clone(), 1)).collect();
        let i = self.beds.len();
        let reading = Reading {
            bed: bed.clone(),
            parameter: Parameter::Hr,
            value: None,
            status: ValueStatus::Unavailable,
            device_time: None,
            received: Timestamp::default(),
            measured: None,
            spot: false,
            source: None,
        };
        self.beds.push(Bed { id: bed.clone(), engines, reading });
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, NO_BED);
        }
        // At most one runner bed per input bed index, so `i` fits the index's u32.
        self.slots[slot] = i as u32;
        self.seen.insert(bed.clone());
        let at = self.order.partition_point(|&j| self.beds[j].id < *bed);
        self.order.insert(at, i);
        i
    }

    /// Virtual time: one tick of every bed per second of recording time up to `t`. In a gap longer than an hour
    /// (a capture of unrelated messages, a recording paused overnight) every timer has long run out: tick the
    /// first hour second by second, then once just before the row.
    fn tick_until(&mut self, t: Timestamp, sink: &mut dyn Sink) -> Result<(), ReplayError> {
        let Some(mut next) = self.next_tick else { return Ok(()) };
        let gap_start = next;
        while next <= t {
            for o in 0..self.order.len() {
                let i = self.order[o];
                for k in 0..self.profiles.len() {
                    let events = self.beds[i].engines[k].tick(next);
                    if !events.is_empty() {
                        self.emit(k, events, sink)?;
                    }
                }
            }
            next += TimeDelta::seconds(1);
            if next - gap_start > TimeDelta::hours(1) && next < t {
                next = t;
            }
        }
        self.next_tick = Some(next);
        Ok(())
    }

    fn feed(
        &mut self,
        i: usize,
        k: usize,
        r: &Row,
        bed: &BedId,
        sink: &mut dyn Sink,
    ) -> Result<Vec<Event>, ReplayError> {
        let Bed { engines, reading: held, .. } = &mut self.beds[i];
        let engine = &mut engines[k];
        Ok(match &r.kind {
            RowKind::Reading(p, v, status) => {
                // Without a status column the CSV convention holds: a value is valid, 0 means "no value".
                let status = status.unwrap_or(match v {
                    Some(v) if *v != 0.0 => ValueStatus::Valid,
                    _ => ValueStatus::Unavailable,
                });
                engine.observe(fill(held, (*p, *v, status), r.time, None, false), r.time)
            }
            RowKind::Device(d) => {
                engine.observe(fill(held, (d.parameter, d.value, d.status), r.time, d.measured, d.spot), r.time)
            }
            RowKind::Signal(sig) => engine.device(sig, r.time),
            // A refused session command in a recording (e.g. infusion_stop without a start) changes nothing.
            RowKind::Command(c) => engine.command(c, ACTOR, r.time).unwrap_or_default(),
            RowKind::Action { action, line } => {
                let action = &**action;
                let commands: Vec<Command> = match action {
                    Action::AcknowledgeAll => vec![Command::Acknowledge { alarm_id: None }],
                    Action::Acknowledge(condition) => engine
                        .active_alarms(r.time)
                        .alarms
                        .into_iter()
                        .filter(|a| &a.condition == condition)
                        .map(|a| Command::Acknowledge { alarm_id: Some(a.alarm_id) })
                        .collect(),
                    Action::PauseAudio(seconds) => vec![Command::PauseAudio {
                        seconds: seconds.unwrap_or(self.profiles[k].lifecycle.audio_pause_max_s),
                    }],
                    Action::Baseline(sys, dia) => vec![Command::SetBaseline { sys: *sys, dia: *dia }],
                };
                let mut reasons = Vec::new();
                if commands.is_empty() {
                    if let Action::Acknowledge(condition) = action {
                        reasons.push(format!("no live alarm of condition '{condition}' on this bed"));
                    }
                }
                let mut out = Vec::new();
                for c in &commands {
                    match engine.command(c, ACTOR, r.time) {
                        Ok(ev) => out.extend(ev),
                        Err(e) => reasons.push(e.to_string()),
                    }
                }
                if k == 0 {
                    self.actions += 1;
                    for reason in reasons {
                        self.refused += 1;
                        sink.refused(&Refusal { time: r.time, bed, line: *line, action, reason })?;
                    }
                }
                out
            }
        })
    }

    /// The end of the recording: alarms still present end their time in alarm at the last row.
    pub fn finish(self) -> Outcome {
        let first = self.first;
        let last = self.last;
        let (f, e) = (first.unwrap_or_default(), last.unwrap_or_default());
        Outcome {
            rows: self.rows,
            beds: self.seen.iter().map(|b| b.to_string()).collect(),
            first,
            last,
            counts: self.tallies.into_iter().map(|t| t.finish(f, e)).collect(),
            actions: self.actions,
            refused: self.refused,
        }
    }
}

/// Widens the no-data timeout when the recording samples continuous parameters more sparsely than the profile
/// expects (MIMIC numerics are 1 per minute): otherwise every gap between samples would be a technical alarm.
/// Judged on the first rows of the recording (`rows`, at most [`super::ADAPT_ROWS`]).
pub fn adapt(profile: &mut Profile, rows: &[Row]) -> Vec<String> {
    let mut last: HashMap<(u32, Parameter), Timestamp> = HashMap::new();
    let mut gaps: Vec<f64> = Vec::new();
    for r in rows {
        let p = match &r.kind {
            RowKind::Reading(p, Some(_), _) => *p,
            RowKind::Device(d) if d.value.is_some() => d.parameter,
            _ => continue,
        };
        if p.is_continuous() {
            if let Some(prev) = last.insert((r.bed, p), r.time) {
                gaps.push((r.time - prev).num_milliseconds() as f64 / 1000.0);
            }
        }
    }
    let Some(median) = crate::session::median(&gaps) else { return Vec::new() };
    let needed = (2.0 * median).ceil() as u64;
    if needed <= profile.technical.no_data_s {
        return Vec::new();
    }
    if needed > 3600 {
        return vec![format!(
            "technical.no_data_s kept at {} s: samples are {median} s apart (median), too sparse to judge data gaps",
            profile.technical.no_data_s
        )];
    }
    let old = profile.technical.no_data_s;
    profile.technical.no_data_s = needed;
    vec![format!(
        "technical.no_data_s raised from {old} to {needed} s: the recording samples continuous parameters every {median} s (median)"
    )]
}
