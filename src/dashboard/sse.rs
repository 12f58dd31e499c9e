//! The live stream: a snapshot on connect (or the missed events after `Last-Event-ID`), then every hub event,
//! with a heartbeat every [`HEARTBEAT`] so the page can tell a quiet ward from a dead link. The stream ends
//! with a `shutdown` event when the server stops, so open streams cannot hang a graceful shutdown.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::Event as SseEvent;
use futures::Stream;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, HubEvent, Snapshot};

/// How often the server proves it is alive. The page declares the link lost after two missed beats (4 s), so a
/// dropped stream shows within 5 s.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// SSE event name of a full ward state.
pub const SNAPSHOT: &str = "snapshot";
/// SSE event name of one hub event (its JSON carries `type`).
pub const HUB: &str = "hub";
/// SSE event name of a heartbeat.
pub const HEARTBEAT_EVENT: &str = "heartbeat";
/// SSE event name of the last message before a deliberate shutdown (IHE ACM's final "inactive").
pub const SHUTDOWN: &str = "shutdown";

/// The SSE id of hub event `seq`: prefixed with the server run's epoch, because hub numbers restart at 1 with
/// every daemon run and a page that resumes across a restart must get a fresh snapshot, not a gap.
pub fn event_id(epoch: &str, seq: u64) -> String {
    format!("{epoch}-{seq}")
}

/// The hub number in a client's `Last-Event-ID`, if it belongs to this run.
pub fn parse_event_id(epoch: &str, id: &str) -> Option<u64> {
    let (e, seq) = id.trim().rsplit_once('-')?;
    if e == epoch {
        seq.parse().ok()
    } else {
        None
    }
}

/// JSON text of `v`; with `scrub`, every `patient` field (at any depth) is null: pseudonyms are for signed-in
/// staff only.
pub fn json_text<T: serde::Serialize>(v: &T, scrub: bool) -> String {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if k == "patient" {
                        *v = serde_json::Value::Null;
                    } else {
                        strip(v);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    if !scrub {
        return serde_json::to_string(v).unwrap_or_else(|_| String::from("{}"));
    }
    let mut value = serde_json::to_value(v).unwrap_or_default();
    strip(&mut value);
    value.to_string()
}

fn snapshot_event(epoch: &str, snap: &Snapshot, scrub: bool) -> SseEvent {
    SseEvent::default().event(SNAPSHOT).id(event_id(epoch, snap.last_id)).data(json_text(snap, scrub))
}

fn hub_event(epoch: &str, ev: &HubEvent, scrub: bool) -> SseEvent {
    SseEvent::default().event(HUB).id(event_id(epoch, ev.id)).data(json_text(ev, scrub))
}

fn heartbeat_event() -> SseEvent {
    SseEvent::default().event(HEARTBEAT_EVENT).data(json!({ "time": chrono::Utc::now() }).to_string())
}

struct StreamState {
    hub: Arc<Hub>,
    epoch: Arc<str>,
    pending: VecDeque<SseEvent>,
    rx: broadcast::Receiver<Arc<HubEvent>>,
    heartbeat: Interval,
    cancel: CancellationToken,
    done: bool,
    scrub: bool,
}

/// The event stream for one client. `last_id` is the client's `Last-Event-ID` (or `?last_id=`), if it sent one;
/// an id from another run of the server, or one the hub no longer holds, gets a fresh snapshot. With `scrub`
/// (a viewer who is not signed in) patient pseudonyms are sent as null.
pub fn stream(
    hub: Arc<Hub>,
    epoch: Arc<str>,
    last_id: Option<&str>,
    cancel: CancellationToken,
    scrub: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    let mut pending = VecDeque::new();
    let resumed = last_id.and_then(|id| parse_event_id(&epoch, id)).and_then(|id| hub.resume(id));
    let rx = match resumed {
        Some((missed, rx)) => {
            pending.extend(missed.iter().map(|e| hub_event(&epoch, e, scrub)));
            rx
        }
        None => {
            let (snap, rx) = hub.subscribe();
            pending.push_back(snapshot_event(&epoch, &snap, scrub));
            rx
        }
    };
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = StreamState { hub, epoch, pending, rx, heartbeat, cancel, done: false, scrub };
    futures::stream::unfold(state, |mut st| async move {
        if let Some(ev) = st.pending.pop_front() {
            return Some((Ok(ev), st));
        }
        if st.done {
            return None;
        }
        let ev = tokio::select! {
            biased;
            _ = st.cancel.cancelled() => {
                st.done = true;
                SseEvent::default().event(SHUTDOWN).data(json!({ "time": chrono::Utc::now() }).to_string())
            }
            got = st.rx.recv() => match got {
                Ok(ev) => hub_event(&st.epoch, &ev, st.scrub),
                // Too slow to keep up: start over from a fresh snapshot rather than show a gap.
                Err(RecvError::Lagged(_)) => {
                    let (snap, rx) = st.hub.subscribe();
                    st.rx = rx;
                    snapshot_event(&st.epoch, &snap, st.scrub)
                }
                Err(RecvError::Closed) => return None,
            },
            _ = st.heartbeat.tick() => heartbeat_event(),
        };
        Some((Ok(ev), st))
    })
}
