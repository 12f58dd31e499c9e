//! The publisher's bounded, coalescing queue in front of rumqttc's request channel.
//!
//! rumqttc's request channel is bounded; when it is full, `try_publish` fails. Instead of dropping what did not
//! fit (or, worse, republishing everything to make up for it), the publisher parks it here:
//!
//! * retained topics (alarm snapshots, sessions, device status) keep their **latest** payload, one per topic,
//!   and go first in each flush round: a late subscriber must get the present state, never a stale one;
//! * vitals (QoS 0) keep the latest payload per bed: an older one not yet sent is replaced and counted as shed;
//! * command replies wait in a short FIFO; beyond [`MAX_REPLIES`] the oldest is dropped and counted.
//!
//! Alarm and session events never pass through here: they stream from the store's outbox, in order, with QoS 1.
//! Every part is bounded: at most one retained payload per topic, one vitals payload per bed, and
//! [`MAX_REPLIES`] replies.

use std::collections::{HashMap, VecDeque};

use rumqttc::QoS;

/// Command replies kept waiting for room, at most.
pub(super) const MAX_REPLIES: usize = 256;

/// One publish waiting for room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Parked {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
}

/// A map that keeps one value per key and the order in which keys first arrived.
#[derive(Debug, Default)]
struct Latest {
    values: HashMap<String, Vec<u8>>,
    order: VecDeque<String>,
}

impl Latest {
    /// Stores the payload; returns true when it replaced one not yet sent.
    fn put(&mut self, topic: String, payload: Vec<u8>) -> bool {
        match self.values.get_mut(&topic) {
            Some(old) => {
                *old = payload;
                true
            }
            None => {
                self.order.push_back(topic.clone());
                self.values.insert(topic, payload);
                false
            }
        }
    }

    fn front(&self) -> Option<(&String, &Vec<u8>)> {
        let topic = self.order.front()?;
        Some((topic, &self.values[topic]))
    }

    fn pop_front(&mut self) {
        if let Some(t) = self.order.pop_front() {
            self.values.remove(&t);
        }
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    fn clear(&mut self) -> usize {
        let n = self.order.len();
        self.values.clear();
        self.order.clear();
        n
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    retained: Latest,
    vitals: Latest,
    replies: VecDeque<Parked>,
    /// Vitals payloads replaced by a newer one of the same bed before they could be sent, or dropped because
    /// the publisher lagged behind the hub or the broker was away.
    pub vitals_shed: u64,
    /// Command replies dropped because [`MAX_REPLIES`] were already waiting.
    pub replies_dropped: u64,
}

impl Backlog {
    /// Parks a retained publish (QoS 1): the latest payload of a topic wins.
    pub fn retained(&mut self, topic: String, payload: Vec<u8>) {
        self.retained.put(topic, payload);
    }

    /// Parks a vitals publish (QoS 0): the latest payload of a bed's topic wins; a replaced one is shed.
    pub fn vitals(&mut self, topic: String, payload: Vec<u8>) {
        if self.vitals.put(topic, payload) {
            self.vitals_shed += 1;
        }
    }

    /// Parks a command reply (QoS 1, not retained); the oldest is dropped beyond [`MAX_REPLIES`].
    pub fn reply(&mut self, topic: String, payload: Vec<u8>) {
        if self.replies.len() >= MAX_REPLIES {
            self.replies.pop_front();
            self.replies_dropped += 1;
        }
        self.replies.push_back(Parked { topic, payload, qos: QoS::AtLeastOnce, retain: false });
    }

    /// Drops the parked vitals (they are stale once the broker is away), counting them as shed.
    pub fn shed_vitals(&mut self) {
        self.vitals_shed += self.vitals.clear() as u64;
    }

    /// Publishes parked items while `send` accepts them, in rounds of one retained payload, one reply and one
    /// vitals payload: retained state goes first in each round, yet a stream of retained updates cannot starve the
    /// vitals (nor the other way round). Stops at the first refusal (no room) and keeps the rest. Returns how many
    /// were sent.
    pub fn flush(&mut self, mut send: impl FnMut(&Parked) -> bool) -> usize {
        let mut sent = 0;
        loop {
            let before = sent;
            if let Some((topic, payload)) = self.retained.front() {
                let p = Parked { topic: topic.clone(), payload: payload.clone(), qos: QoS::AtLeastOnce, retain: true };
                if !send(&p) {
                    return sent;
                }
                self.retained.pop_front();
                sent += 1;
            }
            if let Some(p) = self.replies.front() {
                if !send(p) {
                    return sent;
                }
                self.replies.pop_front();
                sent += 1;
            }
            if let Some((topic, payload)) = self.vitals.front() {
                let p = Parked { topic: topic.clone(), payload: payload.clone(), qos: QoS::AtMostOnce, retain: false };
                if !send(&p) {
                    return sent;
                }
                self.vitals.pop_front();
                sent += 1;
            }
            if sent == before {
                return sent;
            }
        }
    }

    /// How many publishes are parked.
    pub fn len(&self) -> usize {
        self.retained.len() + self.vitals.len() + self.replies.len()
    }

    /// Whether nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(sent: &[Parked]) -> Vec<(&str, &[u8])> {
        sent.iter().map(|p| (p.topic.as_str(), p.payload.as_slice())).collect()
    }

    #[test]
    fn vitals_of_one_bed_are_coalesced_latest_wins_and_the_replaced_ones_are_counted_as_shed() {
        let mut b = Backlog::default();
        b.vitals("bed-1/vitals".into(), b"1".to_vec());
        b.vitals("bed-2/vitals".into(), b"a".to_vec());
        b.vitals("bed-1/vitals".into(), b"2".to_vec());
        b.vitals("bed-1/vitals".into(), b"3".to_vec());
        assert_eq!(b.len(), 2, "one parked payload per bed");
        assert_eq!(b.vitals_shed, 2);
        let mut sent = Vec::new();
        assert_eq!(
            b.flush(|p| {
                sent.push(p.clone());
                true
            }),
            2
        );
        assert_eq!(topics(&sent), [("bed-1/vitals", &b"3"[..]), ("bed-2/vitals", &b"a"[..])]);
        assert!(sent.iter().all(|p| p.qos == QoS::AtMostOnce && !p.retain));
        assert!(b.is_empty());
    }

    #[test]
    fn a_retained_topic_keeps_its_latest_payload_until_there_is_room_and_goes_before_vitals() {
        let mut b = Backlog::default();
        b.vitals("bed-1/vitals".into(), b"v".to_vec());
        b.retained("bed-1/alarms".into(), b"old".to_vec());
        b.retained("bed-1/alarms".into(), b"new".to_vec());
        // No room: nothing is lost, nothing is sent.
        assert_eq!(b.flush(|_| false), 0);
        assert_eq!(b.len(), 2);
        // Room for one: the retained state goes first.
        let mut sent = Vec::new();
        let mut room = 1;
        b.flush(|p| {
            if room == 0 {
                return false;
            }
            room -= 1;
            sent.push(p.clone());
            true
        });
        assert_eq!(topics(&sent), [("bed-1/alarms", &b"new"[..])]);
        assert!(sent[0].retain && sent[0].qos == QoS::AtLeastOnce);
        assert_eq!(b.len(), 1, "the vitals wait for the next room");
        assert_eq!(b.vitals_shed, 0, "retained payloads are never counted as shed vitals");
    }

    #[test]
    fn a_stream_of_retained_updates_does_not_starve_the_vitals() {
        let mut b = Backlog::default();
        for i in 0..100 {
            b.retained(format!("bed-{i}/device"), b"d".to_vec());
        }
        b.vitals("bed-1/vitals".into(), b"v".to_vec());
        let mut sent = Vec::new();
        let mut room = 4;
        b.flush(|p| {
            if room == 0 {
                return false;
            }
            room -= 1;
            sent.push(p.topic.clone());
            true
        });
        assert_eq!(sent, ["bed-0/device", "bed-1/vitals", "bed-1/device", "bed-2/device"]);
    }

    #[test]
    fn replies_are_bounded_and_the_dropped_ones_are_counted() {
        let mut b = Backlog::default();
        for i in 0..MAX_REPLIES + 3 {
            b.reply("r".into(), i.to_string().into_bytes());
        }
        assert_eq!(b.len(), MAX_REPLIES);
        assert_eq!(b.replies_dropped, 3);
        let mut first = None;
        b.flush(|p| {
            first.get_or_insert_with(|| p.payload.clone());
            true
        });
        assert_eq!(first.as_deref(), Some(&b"3"[..]), "the oldest were dropped");
    }

    #[test]
    fn parked_vitals_are_shed_when_the_broker_goes_away_but_retained_state_stays() {
        let mut b = Backlog::default();
        b.vitals("bed-1/vitals".into(), b"v".to_vec());
        b.vitals("bed-2/vitals".into(), b"v".to_vec());
        b.retained("bed-1/alarms".into(), b"a".to_vec());
        b.shed_vitals();
        assert_eq!(b.vitals_shed, 2);
        assert_eq!(b.len(), 1);
    }
}
