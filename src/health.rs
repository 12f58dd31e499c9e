//! What the daemon knows about its own parts: whether each long-lived task runs and whether the store can
//! write. Shown on `/api/status` (and so on the dashboard), so that the death of the publisher, a listener or
//! the store writer is visible at the ward, not only in a log line.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use chrono::Utc;
use futures::FutureExt;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::store::StoreHealth;
use crate::vitals::Timestamp;

/// A task's proof of life: it beats on every turn of its loop; a reader sees how long ago it last did. A task
/// that is wedged (blocked in a call, stuck on an await) stops beating while it still counts as running.
/// Uses tokio's clock, so tests can pause time.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    last: Arc<std::sync::Mutex<tokio::time::Instant>>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat { last: Arc::new(std::sync::Mutex::new(tokio::time::Instant::now())) }
    }
}

impl Heartbeat {
    /// The task is alive now.
    pub fn beat(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
    }

    /// How long ago the last beat was (the creation counts as one).
    pub fn age(&self) -> std::time::Duration {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }
}

/// One supervised task's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskStatus {
    /// Whether it runs.
    pub running: bool,
    /// Since when it is in this state.
    pub since: Timestamp,
    /// Why it stopped (a panic's message, or `ended`), while it is down.
    pub last_error: Option<String>,
}

/// The daemon's parts, for `/api/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerHealth {
    /// Each supervised task by name (`mqtt-publisher`, `mllp-listener`, `source chair-1/0`, …).
    pub tasks: BTreeMap<String, TaskStatus>,
    /// Whether the store can write.
    pub store: Option<StoreHealth>,
}

/// Shared handle: tasks report here, the dashboard reads.
#[derive(Clone)]
pub struct Health {
    tasks: Arc<watch::Sender<BTreeMap<String, TaskStatus>>>,
    store: Option<watch::Receiver<StoreHealth>>,
}

impl Health {
    /// No tasks yet; `store` is the store's own health, when there is a store.
    pub fn new(store: Option<watch::Receiver<StoreHealth>>) -> Health {
        Health { tasks: Arc::new(watch::channel(BTreeMap::new()).0), store }
    }

    /// Records a task's state.
    pub fn set(&self, name: &str, running: bool, last_error: Option<String>) {
        self.tasks.send_modify(|m| {
            let since = match m.get(name) {
                Some(t) if t.running == running => t.since,
                _ => Utc::now(),
            };
            m.insert(name.to_owned(), TaskStatus { running, since, last_error });
        });
    }

    /// The present state.
    pub fn snapshot(&self) -> ServerHealth {
        ServerHealth { tasks: self.tasks.borrow().clone(), store: self.store.as_ref().map(|s| s.borrow().clone()) }
    }

    /// Spawns `task` on `set` under supervision: it is shown running, and if it ends or panics before `stop`
    /// fires, it is shown down with the reason and logged as an error.
    pub fn spawn(
        &self,
        set: &mut JoinSet<()>,
        name: String,
        stop: CancellationToken,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.set(&name, true, None);
        set.spawn(self.watched(name, stop, task));
    }

    /// `task`, reporting how it ended. A combinator, not an `async move` block awaiting `task`: the block would
    /// hold the future twice (its capture and the awaited copy), and a source's future is kilobytes.
    fn watched(
        &self,
        name: String,
        stop: CancellationToken,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let health = self.clone();
        std::panic::AssertUnwindSafe(task).catch_unwind().map(move |outcome| {
            if stop.is_cancelled() {
                health.set(&name, false, None);
                return;
            }
            let reason = match outcome {
                Ok(()) => "ended".to_owned(),
                Err(p) => p
                    .downcast_ref::<&str>()
                    .map(|s| format!("panicked: {s}"))
                    .or_else(|| p.downcast_ref::<String>().map(|s| format!("panicked: {s}")))
                    .unwrap_or_else(|| "panicked".into()),
            };
            tracing::error!(task = %name, %reason, "a long-lived task stopped");
            health.set(&name, false, Some(reason));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_before_shutdown_is_shown_down_with_the_reason_and_one_that_runs_is_shown_up() {
        let health = Health::new(None);
        let mut set = JoinSet::new();
        let stop = CancellationToken::new();
        health.spawn(&mut set, "listener".into(), stop.clone(), async { panic!("socket gone") });
        health.spawn(&mut set, "publisher".into(), stop.clone(), std::future::pending());
        set.join_next().await;
        let h = health.snapshot();
        assert!(!h.tasks["listener"].running);
        assert_eq!(h.tasks["listener"].last_error.as_deref(), Some("panicked: socket gone"));
        assert!(h.tasks["publisher"].running);
        set.abort_all();
    }

    #[test]
    fn a_watched_task_holds_its_future_once() {
        // A source's future is kilobytes and there is one per monitor: wrapped in an `async move` block that
        // awaits it, it was held twice.
        let big = [0u8; 4096];
        let task = async move {
            std::future::ready(()).await;
            std::hint::black_box(big);
        };
        let alone = std::mem::size_of_val(&task);
        let watched = Health::new(None).watched("source".into(), CancellationToken::new(), task);
        assert!(alone >= 4096);
        assert!(
            std::mem::size_of_val(&watched) < alone + 256,
            "{} bytes for a {alone}-byte task",
            std::mem::size_of_val(&watched)
        );
    }
}
