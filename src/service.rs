//! How the daemon looks to whatever runs it: readiness (`/readyz`), liveness (the systemd watchdog) and the
//! systemd notifications (`READY=1` once every listener is bound and the store is open, `WATCHDOG=1` only while
//! the bed tasks, the MQTT publisher and the store writer are alive, `STOPPING=1` at shutdown).
//!
//! Liveness is stricter than "the task has not ended": a task that is wedged (blocked in a call, stuck on an
//! await) still counts as running in [`Health`], so each of those parts proves it turns: the bed tasks and the
//! publisher beat a [`Heartbeat`] every second, and the store writer must answer a no-op job. When one stops,
//! the watchdog is no longer fed and systemd restarts the daemon (`WatchdogSec=` in `packaging/vigil.service`);
//! the bed state comes back from the store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::health::{Health, Heartbeat};
use crate::hub::Hub;
use crate::mqtt::{LinkState, LinkStatus};
use crate::store::Store;

/// A bed task or the publisher that has not beaten for this long is wedged (they beat every second).
pub const STALL: Duration = Duration::from_secs(10);
/// How long the store writer may take to answer a no-op job before it counts as wedged (a commit under a slow
/// disk can take seconds; SQLite's busy timeout is 5 s).
pub const STORE_PING_TIMEOUT: Duration = Duration::from_secs(8);

/// What the probes read: the daemon's parts.
#[derive(Clone)]
pub struct Probes {
    /// Bed heartbeats.
    pub hub: Arc<Hub>,
    /// Supervised tasks and the store's health.
    pub health: Health,
    /// The store (its writer is pinged).
    pub store: Store,
    /// The MQTT publisher's link and heartbeat; `None` when `mqtt.mode = "disabled"`.
    pub mqtt: Option<(watch::Receiver<LinkStatus>, Heartbeat)>,
    /// A heartbeat older than this is a wedged task ([`STALL`] in the daemon).
    pub stall: Duration,
}

/// One readiness check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Whether it passes.
    pub ok: bool,
    /// What was seen, in words.
    pub detail: String,
}

/// The answer of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// Every check passes.
    pub ready: bool,
    /// Each check by name: `store`, `mqtt`, `bed <id>`, `task <name>`.
    pub checks: BTreeMap<String, Check>,
}

fn check(ok: bool, detail: impl Into<String>) -> Check {
    Check { ok, detail: detail.into() }
}

impl Probes {
    /// Whether the daemon can do its job now: the store writes, the broker is connected (or MQTT is disabled on
    /// purpose), every bed task beats, every supervised task runs.
    pub fn readiness(&self) -> Readiness {
        let mut checks = BTreeMap::new();
        let health = self.health.snapshot();
        let store = match &health.store {
            Some(s) if s.ok => check(true, "writable"),
            Some(s) => check(false, format!("writes fail: {}", s.last_error.as_deref().unwrap_or("unknown error"))),
            None => check(false, "no store"),
        };
        checks.insert("store".to_owned(), store);
        let mqtt = match &self.mqtt {
            None => check(true, "disabled in the configuration"),
            Some((link, _)) => {
                let l = link.borrow();
                match l.state {
                    LinkState::Connected => check(true, format!("connected to {}", l.broker)),
                    LinkState::Disabled => check(true, "disabled in the configuration"),
                    state => check(
                        false,
                        format!(
                            "{} to {}{}",
                            serde_json::to_value(state)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default(),
                            l.broker,
                            l.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
                        ),
                    ),
                }
            }
        };
        checks.insert("mqtt".to_owned(), mqtt);
        for (bed, problem) in self.beds() {
            let c = match problem {
                None => check(true, "alive"),
                Some(why) => check(false, why),
            };
            checks.insert(format!("bed {bed}"), c);
        }
        for (name, t) in &health.tasks {
            let c = if t.running {
                check(true, "running")
            } else {
                check(false, format!("stopped: {}", t.last_error.as_deref().unwrap_or("ended")))
            };
            checks.insert(format!("task {name}"), c);
        }
        Readiness { ready: checks.values().all(|c| c.ok), checks }
    }

    /// Each bed and why it is not alive (`None`: it beat within `stall`).
    fn beds(&self) -> Vec<(String, Option<String>)> {
        self.hub
            .tallies()
            .into_iter()
            .map(|(bed, t)| {
                let problem = match t.last_beat {
                    None => Some("its task has not started".to_owned()),
                    Some(at) if at.elapsed() >= self.stall => {
                        Some(format!("its task is wedged: no heartbeat for {} s", at.elapsed().as_secs()))
                    }
                    Some(_) => None,
                };
                (bed.to_string(), problem)
            })
            .collect()
    }

    /// What is wedged or dead among the parts the watchdog guards (bed tasks, the publisher, the store writer);
    /// empty when all are alive. A failing disk is not wedged (readiness reports it; a restart would not help).
    pub async fn liveness(&self) -> Vec<String> {
        let mut problems: Vec<String> =
            self.beds().into_iter().filter_map(|(bed, p)| p.map(|p| format!("bed {bed}: {p}"))).collect();
        if let Some((_, beat)) = &self.mqtt {
            if beat.age() >= self.stall {
                problems.push(format!("mqtt publisher: no heartbeat for {} s", beat.age().as_secs()));
            }
        }
        let health = self.health.snapshot();
        if let Some(t) = health.tasks.get("mqtt-publisher").filter(|t| !t.running) {
            problems.push(format!("mqtt publisher: stopped: {}", t.last_error.as_deref().unwrap_or("ended")));
        }
        match tokio::time::timeout(STORE_PING_TIMEOUT, self.store.ping()).await {
            Ok(Ok(())) => {}
            // A refused commit still proves the thread turns; only a dead thread is reported.
            Ok(Err(e)) if health.store.as_ref().is_some_and(|s| s.ok) => {
                problems.push(format!("store writer: {e}"));
            }
            Ok(Err(_)) => {}
            Err(_) => problems.push(format!("store writer: no answer within {} s", STORE_PING_TIMEOUT.as_secs())),
        }
        problems
    }
}

/// Sends one notification to the service manager's `NOTIFY_SOCKET` (a no-op without it), never blocking: these
/// are called on the async runtime, and a manager that stops reading fills the socket's queue, after which a
/// blocking send (the `sd-notify` crate's) would hold a runtime worker until it reads again. A full queue is
/// `WouldBlock`: the message is dropped and the caller logs it; a watchdog that cannot be fed restarts Vigil,
/// which is what a hung manager should see.
fn notify(state: &str) -> std::io::Result<()> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => notify_to(&path, state),
        None => Ok(()),
    }
}

/// [`notify`] to the socket at `path` (`@name`: Linux's abstract namespace, as systemd may pass).
fn notify_to(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    let sent = match path.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            socket.send_to_addr(state.as_bytes(), &std::os::unix::net::SocketAddr::from_abstract_name(name)?)?
        }
        None => socket.send_to(state.as_bytes(), std::path::Path::new(path))?,
    };
    if sent == state.len() {
        Ok(())
    } else {
        Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "incomplete notification"))
    }
}

/// Tells systemd the daemon is ready (a no-op without `NOTIFY_SOCKET`).
pub fn notify_ready(status: &str) {
    let status: String = status.chars().filter(|c| *c != '\n').collect();
    if let Err(e) = notify(&format!("READY=1\nSTATUS={status}\n")) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET) of readiness");
    }
}

/// Runs `work` (blocking: opening the store) while telling systemd every 10 s to wait 30 s more for readiness
/// (`EXTEND_TIMEOUT_USEC`): a schema migration of a big store can outlast the unit's `TimeoutStartSec` (60 s), and
/// a kill mid-way would roll it back at every restart, so the daemon would never start.
pub fn extending_start_timeout<T>(work: impl FnOnce() -> T) -> T {
    repeating_while(
        Duration::from_secs(10),
        || {
            let _ = notify(
                "EXTEND_TIMEOUT_USEC=30000000\nSTATUS=opening the store (a schema migration can take minutes)\n",
            );
        },
        work,
    )
}

/// Runs `work`, calling `tick` on another thread every `every` until it returns.
fn repeating_while<T>(every: Duration, tick: impl Fn() + Send, work: impl FnOnce() -> T) -> T {
    let (done, until) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = until.recv_timeout(every) {
                tick();
            }
        });
        let out = work();
        drop(done);
        out
    })
}

/// Tells systemd the daemon is stopping.
pub fn notify_stopping() {
    let _ = notify("STOPPING=1\n");
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Feeds the systemd watchdog every `interval / 2` while [`Probes::liveness`] finds nothing wrong; when it does,
/// logs the problems (once per change) and stops feeding, so systemd restarts the daemon after `interval`.
/// `feed` sends one `WATCHDOG=1` (the daemon passes [`feed_systemd`]; tests count).
pub async fn run_watchdog(probes: Probes, interval: Duration, feed: impl Fn(), cancel: CancellationToken) {
    let mut tick = tokio::time::interval(interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_problems: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let problems = probes.liveness().await;
        if problems.is_empty() {
            if !last_problems.is_empty() {
                tracing::warn!("watchdog: every guarded part is alive again; feeding the watchdog");
            }
            feed();
        } else if problems != last_problems {
            tracing::error!(problems = %problems.join("; "), "watchdog: not fed; systemd will restart Vigil");
        }
        last_problems = problems;
    }
}

/// Sends `WATCHDOG=1` to systemd. A failure is logged when it starts and when it ends, not on every tick.
pub fn feed_systemd() {
    static FAILING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let result = notify("WATCHDOG=1\n");
    let was_failing = FAILING.swap(result.is_err(), std::sync::atomic::Ordering::Relaxed);
    match result {
        Err(e) if !was_failing => {
            tracing::warn!(error = %e, "cannot feed the systemd watchdog (NOTIFY_SOCKET); logged again when it works")
        }
        Ok(()) if was_failing => tracing::warn!("feeding the systemd watchdog works again"),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn a_long_blocking_step_keeps_ticking_until_it_returns_and_not_after() {
        let ticks = AtomicU64::new(0);
        let got = repeating_while(
            Duration::from_millis(20),
            || {
                ticks.fetch_add(1, Ordering::SeqCst);
            },
            || {
                // Waits for three ticks (no fixed sleep, so a busy machine only makes it slower).
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while ticks.load(Ordering::SeqCst) < 3 && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                7
            },
        );
        assert_eq!(got, 7);
        let after = ticks.load(Ordering::SeqCst);
        assert!(after >= 3, "ticked while the work ran: {after}");
        // The ticking thread is joined before `repeating_while` returns, so nothing can tick now.
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(ticks.load(Ordering::SeqCst), after, "no tick after it returned");
    }

    #[test]
    fn a_notification_socket_nobody_reads_makes_sends_fail_at_once_instead_of_blocking_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let manager = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let (done_tx, done) = std::sync::mpsc::channel();
        let target = path.clone().into_os_string();
        std::thread::spawn(move || {
            let outcomes: Vec<_> =
                (0..1000).map(|_| notify_to(&target, "WATCHDOG=1\n").map_err(|e| e.kind())).collect();
            let _ = done_tx.send(outcomes);
        });
        let outcomes = done.recv_timeout(Duration::from_secs(10)).expect("1000 sends returned, none blocked");
        assert!(outcomes[0].is_ok(), "the first ones are queued");
        assert_eq!(outcomes.last(), Some(&Err(std::io::ErrorKind::WouldBlock)), "the queue filled up");
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");
    }
    use crate::hub::BedInfo;

    fn bed(id: &str) -> BedInfo {
        BedInfo { id: id.into(), label: id.into(), profile: "ketamine-chair".into() }
    }

    #[tokio::test]
    async fn the_watchdog_is_fed_while_every_bed_beats_and_starves_once_one_bed_task_is_wedged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("v.db")).unwrap();
        let hub = Hub::new("s", "w", vec![bed("chair-1"), bed("chair-2")]);
        let probes = Probes {
            hub: hub.clone(),
            health: Health::new(Some(store.health())),
            store,
            mqtt: None,
            stall: Duration::from_millis(400),
        };
        let fed = Arc::new(AtomicU64::new(0));
        let cancel = CancellationToken::new();
        let counter = fed.clone();
        let dog = tokio::spawn(run_watchdog(
            probes.clone(),
            Duration::from_millis(100),
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
            },
            cancel.clone(),
        ));
        // Both bed "tasks" beat, as a running bed task does on every clock tick.
        let beat_until = |hub: Arc<Hub>, bed: &'static str, d: Duration| {
            tokio::spawn(async move {
                let end = tokio::time::Instant::now() + d;
                while tokio::time::Instant::now() < end {
                    hub.beat(bed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let one = beat_until(hub.clone(), "chair-1", Duration::from_secs(3));
        let two = beat_until(hub.clone(), "chair-2", Duration::from_millis(1000));
        tokio::time::sleep(Duration::from_millis(900)).await;
        let while_alive = fed.load(Ordering::SeqCst);
        assert!(while_alive >= 5, "fed only {while_alive} times while every bed beat");
        assert!(probes.liveness().await.is_empty());
        // chair-2 stops beating (its task is wedged); after `stall` the watchdog is no longer fed.
        two.await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let starved_from = fed.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(fed.load(Ordering::SeqCst), starved_from, "fed although chair-2 is wedged");
        let problems = probes.liveness().await;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("bed chair-2: its task is wedged"), "{problems:?}");
        assert!(!probes.readiness().ready);
        assert!(!probes.readiness().checks["bed chair-2"].ok);
        assert!(probes.readiness().checks["bed chair-1"].ok);
        cancel.cancel();
        dog.await.unwrap();
        one.abort();
    }

    #[tokio::test]
    async fn a_publisher_that_stops_beating_starves_the_watchdog_and_mqtt_not_connected_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("v.db")).unwrap();
        let hub = Hub::new("s", "w", vec![]);
        let (_tx, link) = watch::channel(LinkStatus {
            state: LinkState::Connecting,
            broker: "127.0.0.1:1".into(),
            since: chrono::Utc::now(),
            last_error: Some("connection refused".into()),
            birth_seq: 0,
            delivery: Default::default(),
        });
        let beat = Heartbeat::default();
        let probes = Probes {
            hub,
            health: Health::new(Some(store.health())),
            store,
            mqtt: Some((link, beat.clone())),
            stall: Duration::from_millis(200),
        };
        assert!(probes.liveness().await.is_empty());
        let ready = probes.readiness();
        assert!(!ready.ready);
        assert_eq!(ready.checks["mqtt"].detail, "connecting to 127.0.0.1:1: connection refused");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let problems = probes.liveness().await;
        assert!(problems.iter().any(|p| p.starts_with("mqtt publisher: no heartbeat")), "{problems:?}");
        beat.beat();
        assert!(probes.liveness().await.is_empty());
    }
}
