//! Helpers shared by the transport tests (serial ptys, TCP device servers): waiting for a source's events.

use std::time::Duration;

use vigil::event::LinkState;
use vigil::ingest::{SourceEvent, SourceReceiver};
use vigil::vitals::Parameter;

/// The next event that matches, skipping others (counters, repeated link states). The timeout only guards
/// against a hung test; nothing here measures speed.
pub async fn next(rx: &mut SourceReceiver, what: &str, pred: impl Fn(&SourceEvent) -> bool) -> SourceEvent {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let e = *rx.recv().await.expect("the source keeps its inbox open");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within 30 s"))
}

/// Matches a link event with this state.
pub fn is_link(state: LinkState) -> impl Fn(&SourceEvent) -> bool {
    move |e| matches!(e, SourceEvent::Link { state: s, .. } if *s == state)
}

/// The SpO2 value of a frame event, if it has one.
pub fn spo2_of(e: &SourceEvent) -> Option<f64> {
    match e {
        SourceEvent::Frame { frame, .. } => {
            frame.measurements.iter().find(|m| m.parameter == Parameter::Spo2).and_then(|m| m.value)
        }
        _ => None,
    }
}
