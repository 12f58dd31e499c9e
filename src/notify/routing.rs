//! Which target gets which alarm event, and when an escalation chain moves on: a pure [`Plan`] built from
//! `[notify]`, called by the store inside the transaction that writes the event (no I/O, time is an argument).
//!
//! The rules (also in `docs/notifications.md`):
//! - A target takes an alarm when it takes the alarm's priority and bed. It is sent the events it asks for
//!   (`start`, `escalate`, `acknowledged`, `end`).
//! - For a priority with a chain, the chain's targets are not sent the start at once: the first step's target
//!   is notified when the alarm starts, each next step's when the previous step's wait passed without an
//!   acknowledge. A step whose target does not take the alarm's bed is passed over.
//! - Every target notified about an alarm (by a chain or directly) is sent its later events it asks for
//!   (`acknowledged`, `end`), whatever the priority by then, so no recipient is left with an alarm that never
//!   ends.
//! - An acknowledge (dashboard, MQTT, acknowledge link, a target's receipt) or the alarm's end stops the chain.
//! - An escalation to a priority with another chain starts that chain at its first step.
//! - A self-test alarm (`test: true`) goes to every target that takes its bed, whatever the target's priorities,
//!   events and chains, at its start and its end; it starts no chain (the self-test has a hop per target).

use std::collections::{HashMap, HashSet};

use crate::event::{AlarmEvent, AlarmPhase, AlarmState, Priority};
use crate::store::notify::{ChainState, ChainStatus, Delivery, NotifyRouter, Routed};
use crate::vitals::Timestamp;

use super::config::{NotifyConfig, NotifyOn};

/// The reason of a notification sent because a target takes the alarm (not through a chain).
pub const DIRECT: &str = "event";
/// The reason of a self-test alarm's notifications.
pub const SELF_TEST: &str = "self-test";

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    priorities: Vec<Priority>,
    beds: Option<HashSet<String>>,
    events: Vec<NotifyOn>,
}

impl Rule {
    fn takes_bed(&self, bed: &str) -> bool {
        self.beds.as_ref().is_none_or(|b| b.contains(bed))
    }
}

#[derive(Debug, Clone)]
struct Step {
    target: String,
    wait: chrono::Duration,
}

/// The routing policy of one configuration.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    rules: Vec<Rule>,
    chains: HashMap<Priority, Vec<Step>>,
}

/// What kind of notification an alarm event is, if any.
pub fn classify(event: &AlarmEvent) -> Option<NotifyOn> {
    match event.phase {
        AlarmPhase::Start => Some(NotifyOn::Start),
        AlarmPhase::Escalate => Some(NotifyOn::Escalate),
        AlarmPhase::End => Some(NotifyOn::End),
        AlarmPhase::Update if event.state == AlarmState::Acknowledged && event.by.is_some() => {
            Some(NotifyOn::Acknowledged)
        }
        _ => None,
    }
}

impl Plan {
    /// The plan of a (validated) `[notify]` section.
    pub fn new(config: &NotifyConfig) -> Plan {
        let rules = config
            .targets
            .iter()
            .map(|t| Rule {
                name: t.name.clone(),
                priorities: t.priorities.clone(),
                beds: t.beds.as_ref().map(|b| b.iter().cloned().collect()),
                events: t.events(),
            })
            .collect();
        let chains = config
            .escalation
            .iter()
            .map(|c| {
                let steps = c
                    .steps
                    .iter()
                    .map(|s| Step {
                        target: s.target.clone(),
                        wait: chrono::Duration::seconds(i64::try_from(s.wait_s).unwrap_or(i64::MAX / 1000)),
                    })
                    .collect();
                (c.priority, steps)
            })
            .collect();
        Plan { rules, chains }
    }

    fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    fn in_chain(&self, priority: Priority, target: &str) -> bool {
        self.chains.get(&priority).is_some_and(|steps| steps.iter().any(|s| s.target == target))
    }

    /// From step `from` on, the first step whose target takes `bed`: its index and the step.
    fn step_from(&self, priority: Priority, from: usize, bed: &str) -> Option<(usize, &Step)> {
        let steps = self.chains.get(&priority)?;
        steps.iter().enumerate().skip(from).find(|(_, s)| self.rule(&s.target).is_some_and(|r| r.takes_bed(bed)))
    }

    fn steps(&self, priority: Priority) -> usize {
        self.chains.get(&priority).map_or(0, Vec::len)
    }

    /// Puts `state` at chain step `index` of `priority` (notifying its target), from `now`.
    fn enter_step(&self, state: &mut ChainState, priority: Priority, index: usize, now: Timestamp, out: &mut Routed) {
        let Some(step) = self.chains.get(&priority).and_then(|s| s.get(index)) else { return };
        let steps = self.steps(priority);
        state.priority = priority;
        state.step = index;
        state.steps = steps;
        state.target = step.target.clone();
        state.next_at = Some(now + step.wait);
        state.status = ChainStatus::Running;
        state.updated = now;
        if !state.notified.contains(&step.target) {
            state.notified.push(step.target.clone());
        }
        out.deliveries.push(Delivery {
            target: step.target.clone(),
            reason: format!("escalation step {} of {steps}", index + 1),
        });
    }
}

/// The state of an alarm not yet in a chain: no step, nobody notified.
fn no_chain_yet(event: &AlarmEvent) -> ChainState {
    ChainState {
        alarm_id: event.alarm_id.clone(),
        bed: event.bed.to_string(),
        priority: event.priority,
        step: 0,
        steps: 0,
        target: String::new(),
        next_at: None,
        status: ChainStatus::Running,
        by: None,
        notified: Vec::new(),
        updated: event.time,
    }
}

impl Plan {
    /// A self-test alarm: its start to every target that takes the bed, its end to those told of its start.
    fn route_test(&self, event: &AlarmEvent, chain: Option<&ChainState>) -> Routed {
        let mut out = Routed::default();
        match (classify(event), chain) {
            (Some(NotifyOn::Start), _) => {
                let notified: Vec<String> =
                    self.rules.iter().filter(|r| r.takes_bed(&event.bed)).map(|r| r.name.clone()).collect();
                out.deliveries =
                    notified.iter().map(|t| Delivery { target: t.clone(), reason: SELF_TEST.into() }).collect();
                out.chain = Some(ChainState { notified, ..no_chain_yet(event) });
            }
            (Some(NotifyOn::End), Some(chain)) => {
                out.deliveries =
                    chain.notified.iter().map(|t| Delivery { target: t.clone(), reason: SELF_TEST.into() }).collect();
                let mut state = chain.clone();
                state.status = ChainStatus::Ended;
                state.updated = event.time;
                out.chain = Some(state);
            }
            _ => {}
        }
        out
    }
}

impl NotifyRouter for Plan {
    fn route(&self, event: &AlarmEvent, chain: Option<&ChainState>) -> Routed {
        if event.test {
            return self.route_test(event, chain);
        }
        let on = classify(event);
        let mut out = Routed::default();
        let bed = event.bed.as_ref();
        let live = event.phase != AlarmPhase::End && event.state != AlarmState::Acknowledged;
        let mut state = chain.cloned().unwrap_or_else(|| no_chain_yet(event));
        let before = state.clone();
        // The chain: start, switch to a higher priority's chain, or stop.
        let has_chain = state.steps > 0;
        let switch = has_chain && state.priority != event.priority && on == Some(NotifyOn::Escalate);
        if live && state.status == ChainStatus::Running && (!has_chain || switch) {
            if let Some((index, _)) = self.step_from(event.priority, 0, bed) {
                self.enter_step(&mut state, event.priority, index, event.time, &mut out);
            }
        }
        if state.status == ChainStatus::Running && (on == Some(NotifyOn::Acknowledged) || !live) {
            state.status = if event.by.is_some() { ChainStatus::Acknowledged } else { ChainStatus::Ended };
            state.by = event.by.clone();
            state.next_at = None;
            state.updated = event.time;
        }
        // Everyone else this event is for.
        if let Some(on) = on {
            let chained: Vec<String> = out.deliveries.iter().map(|d| d.target.clone()).collect();
            for rule in &self.rules {
                if chained.contains(&rule.name) || !rule.events.contains(&on) {
                    continue;
                }
                let notified = state.notified.contains(&rule.name);
                let takes = rule.priorities.contains(&event.priority)
                    && rule.takes_bed(bed)
                    && !self.in_chain(event.priority, &rule.name);
                if notified || takes {
                    out.deliveries.push(Delivery { target: rule.name.clone(), reason: DIRECT.into() });
                    if !notified {
                        state.notified.push(rule.name.clone());
                        state.updated = event.time;
                    }
                }
            }
        }
        if state != before {
            out.chain = Some(state);
        }
        out
    }

    fn advance(&self, chain: &ChainState, now: Timestamp) -> Routed {
        let mut out = Routed::default();
        if chain.status != ChainStatus::Running || chain.next_at.is_none_or(|t| t > now) {
            return out;
        }
        let mut state = chain.clone();
        match self.step_from(chain.priority, chain.step + 1, &chain.bed) {
            Some((index, _)) => self.enter_step(&mut state, chain.priority, index, now, &mut out),
            None => {
                state.status = ChainStatus::Exhausted;
                state.next_at = None;
                state.updated = now;
            }
        }
        out.chain = Some(state);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn plan(toml_text: &str) -> Plan {
        let config: NotifyConfig = crate::config::from_toml(toml_text).unwrap();
        config.validate(&["chair-1", "chair-2"]).unwrap();
        Plan::new(&config)
    }

    const TWO_STEP: &str = r#"
        [[targets]]
        name = "bay"
        kind = "webhook"
        url = "http://127.0.0.1:1/bay"
        priorities = ["high"]
        [[targets]]
        name = "charge"
        kind = "webhook"
        url = "http://127.0.0.1:1/charge"
        priorities = ["high", "medium"]
        [[targets]]
        name = "log"
        kind = "webhook"
        url = "http://127.0.0.1:1/log"
        priorities = ["high", "medium", "low"]
        events = ["start", "end"]
        [[escalation]]
        priority = "high"
        steps = [{ target = "bay", wait_s = 60 }, { target = "charge", wait_s = 120 }]
    "#;

    fn event(phase: AlarmPhase, state: AlarmState, priority: Priority, secs: i64) -> AlarmEvent {
        crate::notify::test_event(phase, state, priority, secs)
    }

    fn targets(r: &Routed) -> Vec<(&str, &str)> {
        r.deliveries.iter().map(|d| (d.target.as_str(), d.reason.as_str())).collect()
    }

    #[test]
    fn a_high_alarm_goes_to_the_first_step_and_the_direct_targets_and_not_yet_to_the_second_step() {
        let p = plan(TWO_STEP);
        let r = p.route(&event(AlarmPhase::Start, AlarmState::Active, Priority::High, 0), None);
        assert_eq!(targets(&r), [("bay", "escalation step 1 of 2"), ("log", "event")]);
        let chain = r.chain.unwrap();
        assert_eq!((chain.step, chain.steps, chain.status), (0, 2, ChainStatus::Running));
        assert_eq!(chain.next_at.unwrap().timestamp(), 1_700_000_060);
    }

    #[test]
    fn an_unanswered_step_moves_on_after_its_wait_and_the_last_one_exhausts_the_chain() {
        let p = plan(TWO_STEP);
        let chain = p.route(&event(AlarmPhase::Start, AlarmState::Active, Priority::High, 0), None).chain.unwrap();
        let at = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        assert_eq!(p.advance(&chain, at(59)), Routed::default(), "not due yet");
        let r = p.advance(&chain, at(60));
        assert_eq!(targets(&r), [("charge", "escalation step 2 of 2")]);
        let chain = r.chain.unwrap();
        assert_eq!(chain.notified, ["bay", "log", "charge"]);
        assert_eq!(chain.next_at, Some(at(180)));
        let done = p.advance(&chain, at(180)).chain.unwrap();
        assert_eq!((done.status, done.next_at), (ChainStatus::Exhausted, None));
    }

    #[test]
    fn an_acknowledge_stops_the_chain_and_is_sent_to_everyone_notified_who_asks_for_it() {
        let p = plan(TWO_STEP);
        let chain = p.route(&event(AlarmPhase::Start, AlarmState::Active, Priority::High, 0), None).chain.unwrap();
        let mut ack = event(AlarmPhase::Update, AlarmState::Acknowledged, Priority::High, 10);
        ack.by = Some("nina".into());
        let r = p.route(&ack, Some(&chain));
        assert_eq!(targets(&r), [("bay", "event")], "log asked for start and end only; charge was never notified");
        let chain = r.chain.unwrap();
        assert_eq!((chain.status, chain.by.as_deref(), chain.next_at), (ChainStatus::Acknowledged, Some("nina"), None));
        assert_eq!(p.advance(&chain, Utc.timestamp_opt(1_700_001_000, 0).unwrap()), Routed::default());
        let end = p.route(&event(AlarmPhase::End, AlarmState::Cleared, Priority::High, 20), Some(&chain));
        assert_eq!(targets(&end), [("bay", "event"), ("log", "event")]);
    }

    #[test]
    fn the_end_of_an_unacknowledged_alarm_ends_the_chain_and_reaches_every_notified_target() {
        let p = plan(TWO_STEP);
        let start = p.route(&event(AlarmPhase::Start, AlarmState::Active, Priority::High, 0), None).chain.unwrap();
        let chain = p.advance(&start, Utc.timestamp_opt(1_700_000_060, 0).unwrap()).chain.unwrap();
        // Ends at a lower priority than charge or bay take: they still hear of the end.
        let r = p.route(&event(AlarmPhase::End, AlarmState::Cleared, Priority::Low, 70), Some(&chain));
        assert_eq!(targets(&r), [("bay", "event"), ("charge", "event"), ("log", "event")]);
        assert_eq!(r.chain.unwrap().status, ChainStatus::Ended);
    }

    #[test]
    fn a_medium_alarm_has_no_chain_and_goes_straight_to_the_targets_that_take_medium() {
        let p = plan(TWO_STEP);
        let r = p.route(&event(AlarmPhase::Start, AlarmState::Active, Priority::Medium, 0), None);
        assert_eq!(targets(&r), [("charge", "event"), ("log", "event")]);
        let state = r.chain.unwrap();
        assert_eq!((state.steps, state.next_at), (0, None), "tracked for its end, no chain");
        // Escalating to high starts the high chain at its first step; charge is already notified.
        let mut up = event(AlarmPhase::Escalate, AlarmState::Active, Priority::High, 30);
        up.seq = 2;
        let r = p.route(&up, Some(&state));
        assert_eq!(targets(&r), [("bay", "escalation step 1 of 2"), ("charge", "event")]);
        assert_eq!(r.chain.unwrap().steps, 2);
    }

    #[test]
    fn a_step_whose_target_does_not_take_the_bed_is_passed_over() {
        let p = plan(&TWO_STEP.replace("priorities = [\"high\"]\n", "priorities = [\"high\"]\nbeds = [\"chair-2\"]\n"));
        let r = p.route(&event(AlarmPhase::Start, AlarmState::Active, Priority::High, 0), None);
        assert_eq!(targets(&r), [("charge", "escalation step 2 of 2"), ("log", "event")]);
    }

    #[test]
    fn a_self_test_alarm_reaches_every_target_of_its_bed_whatever_their_priorities_and_starts_no_chain() {
        let p = plan(&TWO_STEP.replace("priorities = [\"high\"]\n", "priorities = [\"high\"]\nbeds = [\"chair-2\"]\n"));
        let mut start = event(AlarmPhase::Start, AlarmState::Active, Priority::Low, 0);
        start.test = true;
        let r = p.route(&start, None);
        // bay takes chair-2 only; charge takes no low alarms and log asks for start and end: all hear of the test.
        assert_eq!(targets(&r), [("charge", "self-test"), ("log", "self-test")]);
        let chain = r.chain.unwrap();
        assert_eq!((chain.steps, chain.next_at), (0, None), "no escalation for a test");
        let mut end = event(AlarmPhase::End, AlarmState::Cleared, Priority::Low, 5);
        end.test = true;
        let r = p.route(&end, Some(&chain));
        assert_eq!(targets(&r), [("charge", "self-test"), ("log", "self-test")]);
        assert_eq!(r.chain.unwrap().status, ChainStatus::Ended);
    }

    #[test]
    fn value_updates_and_audio_pauses_send_nothing() {
        let p = plan(TWO_STEP);
        let chain = p.route(&event(AlarmPhase::Start, AlarmState::Active, Priority::High, 0), None).chain.unwrap();
        let mut pause = event(AlarmPhase::Update, AlarmState::AudioPaused, Priority::High, 5);
        pause.by = Some("nina".into());
        assert_eq!(p.route(&pause, Some(&chain)), Routed::default(), "a pause is not an acknowledge");
        let value = event(AlarmPhase::Update, AlarmState::Active, Priority::High, 6);
        assert_eq!(p.route(&value, Some(&chain)), Routed::default());
    }
}
