//! Shared harness for the alarm tests: a script of inputs at explicit seconds, run in virtual time with a tick
//! every second (like `vigil replay`), and the alarm events it produced.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use vigil::alarm::{DeviceSignal, Engine, Profile};
use vigil::event::{AlarmEvent, Command, Event};
use vigil::vitals::{Parameter, Reading, Timestamp, ValueStatus};

/// Second 0 of every script.
pub fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap()
}

/// Second `s` of a script.
pub fn at(s: i64) -> Timestamp {
    t0() + TimeDelta::seconds(s)
}

/// One scripted input.
#[derive(Debug, Clone)]
pub enum Input {
    /// A valid value.
    V(Parameter, f64),
    /// A value with a status.
    S(Parameter, Option<f64>, ValueStatus),
    /// A command by `nurse`.
    C(Command),
    /// A device signal.
    D(DeviceSignal),
    /// A valid value measured at another second of the script (an NIBP reported late or sent again).
    M(Parameter, f64, i64),
    /// A valid spot measurement of a continuous parameter (the cuff's pulse).
    Spot(Parameter, f64),
    /// A valid value from a named source.
    From(Parameter, f64, &'static str),
}

/// Input at a second.
pub type Step = (i64, Input);

/// A valid value of `p` every second in `[from, to)`.
pub fn every_second(p: Parameter, from: i64, to: i64, v: impl Fn(i64) -> f64) -> Vec<Step> {
    (from..to).map(|t| (t, Input::V(p, v(t)))).collect()
}

/// The steps of several scripts together.
pub fn cat(parts: Vec<Vec<Step>>) -> Vec<Step> {
    parts.into_iter().flatten().collect()
}

/// A steady, normal oximeter (SpO2 97, pulse 70) every second in `[from, to)`: a session expects one, so
/// tables about other rules feed it to stay about those rules.
pub fn oximeter(from: i64, to: i64) -> Vec<Step> {
    [every_second(Parameter::Spo2, from, to, |_| 97.0), every_second(Parameter::Pr, from, to, |_| 70.0)].concat()
}

/// A reading.
pub fn reading(p: Parameter, value: Option<f64>, status: ValueStatus, t: Timestamp) -> Reading {
    Reading {
        bed: "chair-1".into(),
        parameter: p,
        value,
        status,
        device_time: None,
        received: t,
        measured: None,
        spot: false,
        source: None,
    }
}

/// What a test compares: second, condition, phase, priority, state.
pub type Seen = (i64, String, String, String, String);

/// Runs `steps` (any order) until second `end` inclusive; ticks every second before that second's inputs.
pub fn run_with(profile: Profile, steps: &[Step], end: i64) -> (Vec<AlarmEvent>, Engine) {
    let mut steps = steps.to_vec();
    steps.sort_by_key(|s| s.0);
    let mut engine = Engine::new("chair-1".into(), Arc::new(profile), 1);
    let mut events = Vec::new();
    let mut k = 0;
    for s in 0..=end {
        let now = at(s);
        events.extend(engine.tick(now));
        while k < steps.len() && steps[k].0 == s {
            let out = match &steps[k].1 {
                Input::V(p, v) => engine.observe(&reading(*p, Some(*v), ValueStatus::Valid, now), now),
                Input::S(p, v, st) => engine.observe(&reading(*p, *v, *st, now), now),
                Input::C(c) => engine.command(c, "nurse", now).unwrap_or_else(|e| panic!("{c:?} refused: {e}")),
                Input::D(d) => engine.device(d, now),
                Input::M(p, v, measured) => {
                    let r = Reading { measured: Some(at(*measured)), ..reading(*p, Some(*v), ValueStatus::Valid, now) };
                    engine.observe(&r, now)
                }
                Input::From(p, v, source) => {
                    let r =
                        Reading { source: Some((*source).into()), ..reading(*p, Some(*v), ValueStatus::Valid, now) };
                    engine.observe(&r, now)
                }
                Input::Spot(p, v) => {
                    engine.observe(&Reading { spot: true, ..reading(*p, Some(*v), ValueStatus::Valid, now) }, now)
                }
            };
            events.extend(out);
            k += 1;
        }
    }
    let alarms = events
        .into_iter()
        .filter_map(|e| match e {
            Event::Alarm(a) => Some(a),
            _ => None,
        })
        .collect();
    (alarms, engine)
}

/// Runs with the default profile.
pub fn run(steps: &[Step], end: i64) -> Vec<AlarmEvent> {
    run_with(Profile::ketamine_chair(), steps, end).0
}

/// Second, condition, phase, priority, state of each event.
pub fn seen(events: &[AlarmEvent]) -> Vec<Seen> {
    events
        .iter()
        .map(|e| {
            let s = |v: serde_json::Value| v.as_str().unwrap().to_owned();
            (
                (e.time - t0()).num_seconds(),
                e.condition.clone(),
                s(serde_json::to_value(e.phase).unwrap()),
                s(serde_json::to_value(e.priority).unwrap()),
                s(serde_json::to_value(e.state).unwrap()),
            )
        })
        .collect()
}

/// Shorthand for an expected event.
pub fn ev(t: i64, condition: &str, phase: &str, priority: &str, state: &str) -> Seen {
    (t, condition.into(), phase.into(), priority.into(), state.into())
}

/// The alarm events among `events`.
pub fn alarms(events: Vec<Event>) -> Vec<AlarmEvent> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Alarm(a) => Some(a),
            _ => None,
        })
        .collect()
}
