//! The daemon's clock for the alarm engines: a monotonic count for every duration, the wall clock only for
//! labels (issue 10 item 8). A step of the wall clock (NTP, a manual change) is logged and changes no timer: no
//! audio pause grows, no no-data or escalation timer freezes or fires early.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

use chrono::Utc;
use tokio::time::Instant;

use crate::alarm::Now;

/// Wall clock minus monotonic clock beyond which a change counts as a step, milliseconds.
const STEP_MS: i64 = 1000;

struct Origin {
    at: Instant,
    wall_ms: i64,
    offset_ms: AtomicI64,
}

fn origin() -> &'static Origin {
    static ORIGIN: OnceLock<Origin> = OnceLock::new();
    ORIGIN.get_or_init(|| Origin { at: Instant::now(), wall_ms: Utc::now().timestamp_millis(), offset_ms: 0.into() })
}

/// Now, for an engine: monotonic milliseconds that start at the wall clock of the first call, and the wall
/// clock itself.
pub fn now() -> Now {
    let o = origin();
    let mono_ms = o.wall_ms + o.at.elapsed().as_millis() as i64;
    let wall = Utc::now();
    let offset = wall.timestamp_millis() - mono_ms;
    let previous = o.offset_ms.swap(offset, Ordering::Relaxed);
    if (offset - previous).abs() > STEP_MS {
        tracing::warn!(
            step_ms = offset - previous,
            "the wall clock stepped; alarm timers run on the monotonic clock and are unaffected, event times follow the wall clock"
        );
    }
    Now { mono_ms, wall }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_monotonic_part_advances_with_time_and_never_goes_back() {
        let a = now();
        tokio::time::advance(std::time::Duration::from_secs(30)).await;
        let b = now();
        assert!(b.mono_ms - a.mono_ms >= 30_000, "{a:?} {b:?}");
        assert!(now().mono_ms >= b.mono_ms);
    }
}
