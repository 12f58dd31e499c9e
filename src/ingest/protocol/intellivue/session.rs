//! The host side of an IntelliVue Data Export session, as a pure state machine: messages in ([`Session::on_pdu`]),
//! time in ([`Session::poll`], milliseconds on any monotonic clock), bytes to send out
//! ([`Session::take_outgoing`]) and link changes for the bed ([`Session::take_link_change`]). The transport
//! (serial port, UDP socket) only moves bytes.
//!
//! Sequence: association request → the monitor's accept → its MDS Create event → our result → extended polls
//! for numerics and for the alert monitor every [`POLL_PERIOD_MS`], and a keep-alive poll of the MDS every
//! [`KEEP_ALIVE_MS`]. The association is taken as lost, and requested again, when the monitor aborts or releases
//! it, refuses it, does not answer the request within [`ANSWER_TIMEOUT_MS`], or sends no poll result for
//! [`RESULT_TIMEOUT_MS`] (a restarted monitor knows no association and stays silent). On the serial link at most
//! [`PACE_FRAMES`] frames leave per [`PACE_WINDOW_MS`] (the MIB port's limit).

use std::collections::VecDeque;

use super::{
    association_request, frame, keep_alive, mds_create_result, nom, poll_request, release_request, release_response,
    Pdu,
};

/// Poll period for numerics and for alerts.
pub const POLL_PERIOD_MS: u64 = 1000;
/// Keep-alive period.
pub const KEEP_ALIVE_MS: u64 = 10_000;
/// How long the monitor may take to answer the association request, or to send its MDS Create event.
pub const ANSWER_TIMEOUT_MS: u64 = 5000;
/// No poll result for this long: the association is lost.
pub const RESULT_TIMEOUT_MS: u64 = 5000;
/// Wait before associating again after a refusal, abort or release.
pub const RETRY_MS: u64 = 2000;
/// At most this many frames …
pub const PACE_FRAMES: usize = 4;
/// … per this window on the serial link.
pub const PACE_WINDOW_MS: u64 = 128;
/// Messages waiting to be sent, at most (a stalled link does not grow memory: older requests are dropped).
const MAX_OUTBOX: usize = 16;

/// Which interface the session runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// MIB/RS-232: framed, paced.
    Serial,
    /// LAN (UDP): one message per datagram, unframed.
    Lan,
}

/// What the bed should hear about the association: `Up` associated and polling, `Down` not associated.
pub use super::super::LinkChange;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Send an association request at this time.
    Idle { at: u64 },
    /// Request sent at `since`; waiting for the accept.
    Associating { since: u64 },
    /// Accepted at `since`; waiting for the MDS Create event.
    AwaitingMds { since: u64 },
    /// Polling; the last result (or the start) at `heard`.
    Polling { heard: u64 },
}

/// What arrived since the last [`Session::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrived {
    Accepted,
    Refused,
    Released,
    Aborted,
    MdsCreate(u16),
    Result,
}

/// The session state machine.
#[derive(Debug)]
pub struct Session {
    link: Link,
    state: State,
    arrived: VecDeque<Arrived>,
    outbox: VecDeque<Vec<u8>>,
    sent: VecDeque<u64>,
    invoke_id: u16,
    poll_number: u16,
    next_numerics: u64,
    next_alerts: u64,
    next_keep_alive: u64,
    change: Option<LinkChange>,
    /// Whether the bed was last told Up (`Some(true)`), Down (`Some(false)`) or nothing yet.
    told_up: Option<bool>,
    associations: u64,
}

impl Session {
    /// A session that associates at once.
    pub fn new(link: Link) -> Session {
        Session {
            link,
            state: State::Idle { at: 0 },
            arrived: VecDeque::new(),
            outbox: VecDeque::new(),
            sent: VecDeque::new(),
            invoke_id: 0,
            poll_number: 0,
            next_numerics: 0,
            next_alerts: 0,
            next_keep_alive: 0,
            change: None,
            told_up: None,
            associations: 0,
        }
    }

    /// How many associations completed so far (a re-association after a monitor restart counts again).
    pub fn associations(&self) -> u64 {
        self.associations
    }

    /// Whether the session is polling now.
    pub fn is_associated(&self) -> bool {
        matches!(self.state, State::Polling { .. })
    }

    /// A message from the monitor. Acted on at the next [`Session::poll`].
    pub fn on_pdu(&mut self, pdu: &Pdu) {
        let arrived = match pdu {
            Pdu::AssociationAccepted => Arrived::Accepted,
            Pdu::AssociationRefused => Arrived::Refused,
            Pdu::ReleaseRequest => Arrived::Released,
            Pdu::Abort => Arrived::Aborted,
            Pdu::MdsCreate { invoke_id, .. } => Arrived::MdsCreate(*invoke_id),
            Pdu::Poll(_) | Pdu::Error { .. } | Pdu::Other => Arrived::Result,
            Pdu::ReleaseResponse | Pdu::AssociationRequest | Pdu::ConnectIndication => return,
        };
        if self.arrived.len() < 64 {
            self.arrived.push_back(arrived);
        }
    }

    /// Advances the session to `now` (ms): handles what arrived, times out, queues requests.
    pub fn poll(&mut self, now: u64) {
        while let Some(a) = self.arrived.pop_front() {
            self.handle(a, now);
        }
        match self.state {
            State::Idle { at } if now >= at => {
                self.queue(association_request());
                self.state = State::Associating { since: now };
            }
            State::Associating { since } | State::AwaitingMds { since } if now >= since + ANSWER_TIMEOUT_MS => {
                let what = if matches!(self.state, State::Associating { .. }) {
                    "the monitor does not answer the association request (Data Export off, wrong port or cable?)"
                } else {
                    "the monitor accepted the association but sent no MDS Create event"
                };
                self.down(what.into());
                self.queue(association_request());
                self.state = State::Associating { since: now };
            }
            State::Polling { heard } if now >= heard + RESULT_TIMEOUT_MS => {
                self.down(format!(
                    "no poll result for {} s (monitor restarted or link lost)",
                    RESULT_TIMEOUT_MS / 1000
                ));
                self.queue(association_request());
                self.state = State::Associating { since: now };
            }
            State::Polling { .. } => {
                if now >= self.next_numerics {
                    let (id, n) = self.ids();
                    self.queue(poll_request(id, n, nom::MOC_VMO_METRIC_NU, nom::ATTR_GRP_METRIC_VAL_OBS));
                    self.next_numerics = now + POLL_PERIOD_MS;
                }
                if now >= self.next_alerts {
                    let (id, n) = self.ids();
                    self.queue(poll_request(id, n, nom::MOC_VMO_AL_MON, nom::ATTR_GRP_AL_MON));
                    self.next_alerts = now + POLL_PERIOD_MS;
                }
                if now >= self.next_keep_alive {
                    let (id, n) = self.ids();
                    self.queue(keep_alive(id, n));
                    self.next_keep_alive = now + KEEP_ALIVE_MS;
                }
            }
            _ => {}
        }
    }

    fn handle(&mut self, a: Arrived, now: u64) {
        match a {
            Arrived::Accepted => {
                if matches!(self.state, State::Associating { .. }) {
                    self.state = State::AwaitingMds { since: now };
                }
            }
            Arrived::MdsCreate(invoke_id) => {
                self.queue(mds_create_result(invoke_id));
                if !self.is_associated() {
                    self.associations += 1;
                    self.state = State::Polling { heard: now };
                    self.next_numerics = now;
                    // Half a period apart, so the two results do not arrive together.
                    self.next_alerts = now + POLL_PERIOD_MS / 2;
                    self.next_keep_alive = now + KEEP_ALIVE_MS;
                    if self.told_up != Some(true) {
                        self.told_up = Some(true);
                        self.change = Some(LinkChange::Up);
                    }
                }
            }
            Arrived::Result => {
                if let State::Polling { heard } = &mut self.state {
                    *heard = now;
                }
            }
            Arrived::Refused => {
                self.down("the monitor refused the association (another client on this interface?)".into());
                self.state = State::Idle { at: now + RETRY_MS };
            }
            Arrived::Aborted => {
                self.down("the monitor aborted the association".into());
                self.outbox.clear();
                self.state = State::Idle { at: now + RETRY_MS };
            }
            Arrived::Released => {
                self.down("the monitor released the association".into());
                self.outbox.clear();
                self.queue(release_response());
                self.state = State::Idle { at: now + RETRY_MS };
            }
        }
    }

    fn ids(&mut self) -> (u16, u16) {
        self.invoke_id = self.invoke_id.wrapping_add(1);
        self.poll_number = self.poll_number.wrapping_add(1);
        (self.invoke_id, self.poll_number)
    }

    fn down(&mut self, reason: String) {
        if self.told_up != Some(false) {
            self.told_up = Some(false);
            self.change = Some(LinkChange::Down(reason));
        }
    }

    fn queue(&mut self, payload: Vec<u8>) {
        if self.outbox.len() >= MAX_OUTBOX {
            self.outbox.pop_front();
        }
        self.outbox.push_back(payload);
    }

    fn wire(&self, payload: &[u8]) -> Vec<u8> {
        match self.link {
            Link::Serial => frame(payload),
            Link::Lan => payload.to_vec(),
        }
    }

    /// The next message to send now, as bytes for the link, if pacing allows.
    pub fn take_outgoing(&mut self, now: u64) -> Option<Vec<u8>> {
        if self.outbox.is_empty() {
            return None;
        }
        if self.link == Link::Serial {
            while self.sent.front().is_some_and(|t| now >= t + PACE_WINDOW_MS) {
                self.sent.pop_front();
            }
            if self.sent.len() >= PACE_FRAMES {
                return None;
            }
            self.sent.push_back(now);
        }
        let payload = self.outbox.pop_front()?;
        Some(self.wire(&payload))
    }

    /// What the bed should hear, once.
    pub fn take_link_change(&mut self) -> Option<LinkChange> {
        self.change.take()
    }

    /// When [`Session::poll`] and [`Session::take_outgoing`] next have something to do (ms).
    pub fn next_due(&self, now: u64) -> u64 {
        if !self.arrived.is_empty() {
            return now;
        }
        if !self.outbox.is_empty() {
            return match (self.link, self.sent.front()) {
                (Link::Serial, Some(t)) if self.sent.len() >= PACE_FRAMES => t + PACE_WINDOW_MS,
                _ => now,
            };
        }
        match self.state {
            State::Idle { at } => at,
            State::Associating { since } | State::AwaitingMds { since } => since + ANSWER_TIMEOUT_MS,
            State::Polling { heard } => {
                (heard + RESULT_TIMEOUT_MS).min(self.next_numerics).min(self.next_alerts).min(self.next_keep_alive)
            }
        }
    }

    /// The release request to send at shutdown, if associated (a clean end: the monitor frees the interface at
    /// once instead of after its own timeout).
    pub fn release(&mut self) -> Option<Vec<u8>> {
        if matches!(self.state, State::Polling { .. } | State::AwaitingMds { .. }) {
            self.state = State::Idle { at: u64::MAX };
            Some(self.wire(&release_request()))
        } else {
            None
        }
    }
}

impl super::super::Talker for Session {
    fn poll(&mut self, now: u64) {
        Session::poll(self, now);
    }
    fn take_outgoing(&mut self, now: u64) -> Option<Vec<u8>> {
        Session::take_outgoing(self, now)
    }
    fn next_due(&self, now: u64) -> u64 {
        Session::next_due(self, now)
    }
    fn take_link_change(&mut self) -> Option<LinkChange> {
        Session::take_link_change(self)
    }
    fn release(&mut self) -> Option<Vec<u8>> {
        Session::release(self)
    }
}
