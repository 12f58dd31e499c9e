//! The publisher's in-process link into the embedded broker, for vitals.
//!
//! With `mqtt.mode = "embedded"`, rumqttd runs in this process. Vitals are most of the traffic (one QoS 0
//! message per bed per second), and sending them over loopback TCP means rumqttc encodes each, the kernel copies
//! it twice and rumqttd's network thread decodes it again before its router sees it. rumqttd's local link hands
//! the router the publish directly: the same router path, without the socket. Measured at 5,000 beds in
//! `docs/performance.md`.
//!
//! Only vitals take this path. Alarm and session events keep streaming from the outbox over the TCP connection
//! with QoS 1: the local link has no acknowledgement, so it cannot tell the outbox that the broker took an
//! event. Retained state (alarm snapshots, sessions, devices) and the status with its last will stay there too.
//!
//! rumqttd queues what a link sends in an unbounded buffer that its router swaps out whenever it is woken. A
//! router that is gone or stuck would let it grow without end, so this link refuses to queue more than
//! [`MAX_QUEUED`] messages and says why; the publisher then sheds the vitals, counts them and logs the failure.

use rumqttd::local::{LinkError, LinkRx, LinkTx};

/// Messages waiting for the router, at most: about 4 s of a 5,000-bed ward's vitals. The router swaps its
/// whole queue out each time it wakes, so a healthy router keeps this near zero.
pub const MAX_QUEUED: usize = 20_000;

/// Why a message did not go through the local link.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocalLinkError {
    /// The broker's router has stopped: nothing sent here can arrive any more.
    #[error("the embedded broker's router has stopped")]
    RouterGone,
    /// The router has not taken what was queued: it is stuck or overloaded.
    #[error("the embedded broker's router is not taking messages ({queued} queued)")]
    Full {
        /// How many were waiting.
        queued: usize,
    },
}

/// A link to the router of the embedded broker in this process.
pub struct LocalLink {
    tx: LinkTx,
    /// Kept so the router does not see the link as gone; QoS 0 publishes without subscriptions get no replies.
    _rx: Option<LinkRx>,
}

impl std::fmt::Debug for LocalLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLink").field("queued", &self.queued()).finish()
    }
}

impl LocalLink {
    /// Wraps rumqttd's link halves (from `rumqttd::Broker::link`).
    pub fn new(tx: LinkTx, rx: LinkRx) -> Self {
        LocalLink { tx, _rx: Some(rx) }
    }

    /// A link with only its sending half, for tests that play the router themselves.
    #[doc(hidden)]
    pub fn from_tx(tx: LinkTx) -> Self {
        LocalLink { tx, _rx: None }
    }

    /// Messages waiting for the router.
    pub fn queued(&self) -> usize {
        self.tx.buffer().len()
    }

    /// Hands a QoS 0, non-retained publish to the router.
    ///
    /// A router too busy to be woken at once still finds the message in its queue the next time it wakes (the
    /// next vitals message wakes it), so only a router that is gone or has left [`MAX_QUEUED`] messages waiting
    /// is an error; the message is then not queued.
    pub fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), LocalLinkError> {
        let queued = self.queued();
        if queued >= MAX_QUEUED {
            return Err(LocalLinkError::Full { queued });
        }
        match self.tx.try_publish(topic, payload) {
            Ok(_) => Ok(()),
            Err(LinkError::TrySend(flume::TrySendError::Full(_))) => Ok(()),
            Err(_) => {
                // Take it back out: no router will ever read it.
                self.tx.buffer().pop_back();
                Err(LocalLinkError::RouterGone)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttd::protocol::Packet;

    /// A link whose router is played by the test: the receiver of its wake-ups and its queue.
    fn link(wakeups: usize) -> (LocalLink, flume::Receiver<impl Sized>) {
        let (router_tx, router_rx) = flume::bounded(wakeups);
        (LocalLink::from_tx(LinkTx::new(7, router_tx, Default::default())), router_rx)
    }

    #[test]
    fn a_publish_is_queued_for_the_router_as_qos0_and_wakes_it() {
        let (mut link, router) = link(10);
        link.publish("ketamine/a/b/bed-1/vitals".into(), b"{\"spo2\":97}".to_vec()).unwrap();
        assert_eq!(router.len(), 1);
        let queued = link.tx.buffer().pop_front().unwrap();
        let Packet::Publish(p, _) = queued else { panic!("not a publish: {queued:?}") };
        assert_eq!(&p.topic[..], b"ketamine/a/b/bed-1/vitals");
        assert_eq!(&p.payload[..], b"{\"spo2\":97}");
        assert!(format!("{p:?}").contains("qos: AtMostOnce"), "QoS 0: {p:?}");
        assert!(!p.retain);
    }

    #[test]
    fn a_router_too_busy_to_be_woken_still_gets_the_message_on_its_next_wake() {
        let (mut link, router) = link(1);
        link.publish("t/1".into(), vec![1]).unwrap();
        // The wake-up channel is full now; the second message waits in the queue all the same.
        link.publish("t/2".into(), vec![2]).unwrap();
        assert_eq!(router.len(), 1);
        assert_eq!(link.queued(), 2);
    }

    #[test]
    fn a_stopped_router_is_an_error_and_nothing_is_left_queued() {
        let (mut link, router) = link(10);
        drop(router);
        assert_eq!(link.publish("t".into(), vec![1]), Err(LocalLinkError::RouterGone));
        assert_eq!(link.queued(), 0);
    }

    #[test]
    fn a_router_that_takes_nothing_stops_the_queue_at_its_bound() {
        let (mut link, _router) = link(MAX_QUEUED + 10);
        for i in 0..MAX_QUEUED {
            link.publish("t".into(), vec![i as u8]).unwrap();
        }
        assert_eq!(link.publish("t".into(), vec![0]), Err(LocalLinkError::Full { queued: MAX_QUEUED }));
        assert_eq!(link.queued(), MAX_QUEUED);
        // Once the router takes the queue, the link works again.
        link.tx.buffer().clear();
        assert_eq!(link.publish("t".into(), vec![0]), Ok(()));
    }
}
