//! The running side of notifications: one delivery task per target, the chain task, and the wake-up from the
//! hub. Every alarm event reaches the hub only after the store has it (and its queued notifications), so a
//! wake-up from the hub always finds the rows committed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::ack_link::AckLinks;
use super::config::NotifyConfig;
use super::routing::Plan;
use super::{Notification, NotifyError, Stats, Target, TargetStats};
use crate::event::{AlarmPhase, AlarmState, Event};
use crate::health::Health;
use crate::hub::Hub;
use crate::store::notify::{AttemptRecord, ChainState, NotifyRouter, QueuedNotification};
use crate::store::Store;

/// Longest wait between two looks at a target's queue or the chains (a missed wake-up costs at most this).
const POLL: Duration = Duration::from_secs(1);
/// Longest wait between two attempts of one notification.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The wait after the `attempts`-th failed attempt: 1 s, 2 s, 4 s … up to [`MAX_BACKOFF`].
pub fn backoff(attempts: u32) -> Duration {
    let secs = 1u64.checked_shl(attempts.saturating_sub(1).min(16)).unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// The configured targets, built and ready to start.
#[derive(Debug)]
pub struct Notifier {
    targets: Vec<(String, Arc<Target>)>,
    plan: Arc<Plan>,
    stats: Arc<Stats>,
    labels: HashMap<String, String>,
    ward: String,
    public_url: Option<String>,
    ack_link_ttl_s: u64,
}

/// What the dashboard and the metrics need of a running notifier.
#[derive(Clone)]
pub struct Handle {
    /// The store (chains, backlog).
    pub store: Store,
    /// The hub (acknowledge commands).
    pub hub: Arc<Hub>,
    /// Acknowledge links.
    pub links: AckLinks,
    /// Per-target figures.
    pub stats: Arc<Stats>,
    /// Each target's kind and, for ACM, its link, in configuration order.
    pub targets: Arc<Vec<TargetLink>>,
}

/// A target's kind and link, for the status views.
#[derive(Debug, Clone)]
pub struct TargetLink {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: super::TargetKind,
    /// An ACM target's link state.
    pub acm: Option<watch::Receiver<super::acm_client::AcmLinkStatus>>,
}

/// One target's health, as `/api/status`, the dashboard and `/readyz` show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TargetHealth {
    /// Its name.
    pub target: String,
    /// `webhook`, `smtp` or `acm`.
    pub kind: &'static str,
    /// Failing: [`super::FAILING_AFTER_FAILURES`] failures in a row, or failures for
    /// [`super::FAILING_AFTER_S`] seconds (for ACM, unanswered heartbeats count too).
    pub failing: bool,
    /// The run of failures, when failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<super::Problem>,
    /// For ACM: whether the link to the manager is up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("targets", &self.stats.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl Handle {
    /// Every target's health at `now`, in configuration order.
    pub fn health(&self, now: chrono::DateTime<Utc>) -> Vec<TargetHealth> {
        self.targets
            .iter()
            .map(|t| {
                let problem = self.stats.get(&t.name).and_then(|s| s.failing_at(now));
                TargetHealth {
                    target: t.name.clone(),
                    kind: t.kind.name(),
                    failing: problem.is_some(),
                    problem,
                    connected: t.acm.as_ref().map(|l| l.borrow().connected),
                }
            })
            .collect()
    }

    /// Chains running now or changed in the last hour (blocking read: call it off the async runtime).
    pub fn chains(&self) -> Result<Vec<ChainState>, NotifyError> {
        Ok(self.store.notify_chains(Utc::now() - chrono::Duration::hours(1))?)
    }

    /// The notification log of `bed` with `from <= time < to` (every attempt, success or failure), oldest first;
    /// only `alarm_id`'s when given (blocking read: call it off the async runtime).
    pub fn attempts(
        &self,
        bed: &str,
        from: chrono::DateTime<Utc>,
        to: chrono::DateTime<Utc>,
        alarm_id: Option<&str>,
    ) -> Result<Vec<AttemptRecord>, NotifyError> {
        let mut log = self.store.notify_attempts(bed, from, to)?;
        if let Some(alarm) = alarm_id {
            log.retain(|a| a.alarm_id == alarm);
        }
        Ok(log)
    }

    /// Uses an acknowledge link: checks it, marks it used, acknowledges its alarm for the target that carried it.
    pub async fn use_link(&self, token: &str) -> Result<crate::store::notify::TokenRecord, NotifyError> {
        let record = self.links.redeem(token, Utc::now()).await?;
        super::acknowledge_from_target(
            &self.hub,
            &self.stats,
            &record.bed,
            &record.alarm_id,
            &record.target,
            None,
            "link",
        )
        .await?;
        Ok(record)
    }
}

impl Notifier {
    /// Builds every target of `config` (reads CA files and the system's roots: call it off the async runtime).
    /// `labels` maps bed ids to their labels; `ward` is `site/ward` for the messages. `None` without targets.
    pub fn build(
        config: &NotifyConfig,
        base_dir: &Path,
        labels: HashMap<String, String>,
        ward: String,
    ) -> Result<Option<Notifier>, NotifyError> {
        if config.targets.is_empty() {
            return Ok(None);
        }
        let mut targets = Vec::with_capacity(config.targets.len());
        let mut stats = Stats::new();
        for (i, t) in config.targets.iter().enumerate() {
            targets.push((t.name.clone(), Arc::new(Target::build(config, i, base_dir)?)));
            stats.insert(t.name.clone(), Arc::new(TargetStats::default()));
        }
        Ok(Some(Notifier {
            targets,
            plan: Arc::new(Plan::new(config)),
            stats: Arc::new(stats),
            labels,
            ward,
            public_url: config.public_url.clone(),
            ack_link_ttl_s: config.ack_link_ttl_s,
        }))
    }

    /// The routing policy, for [`Store::with_notify_router`].
    pub fn router(&self) -> Arc<dyn NotifyRouter> {
        self.plan.clone()
    }

    /// Starts the delivery tasks (one per target), the chain task and the hub watcher under supervision.
    pub fn spawn(
        self,
        tasks: &mut JoinSet<()>,
        health: &Health,
        hub: Arc<Hub>,
        store: Store,
        cancel: CancellationToken,
    ) -> Handle {
        let ack_links = AckLinks::new(store.clone(), self.public_url.as_deref(), self.ack_link_ttl_s);
        let (wake_tx, wake_rx) = watch::channel(0u64);
        let wake_tx = Arc::new(wake_tx);
        let context = Arc::new(Context {
            store: store.clone(),
            hub: hub.clone(),
            links: ack_links.clone(),
            stats: self.stats.clone(),
            labels: self.labels,
            ward: self.ward,
        });
        let mut links = Vec::with_capacity(self.targets.len());
        for (name, target) in self.targets {
            let acm = target.acm_link();
            links.push(TargetLink { name: name.clone(), kind: target.kind(), acm: acm.clone() });
            if let Some(link) = acm {
                let stats = self.stats.get(&name).cloned().unwrap_or_default();
                health.spawn(
                    tasks,
                    format!("notify {name} link"),
                    cancel.clone(),
                    watch_link(link, stats, cancel.clone()),
                );
                let statuses = super::acm_target::watch_statuses(
                    name.clone(),
                    target.clone(),
                    store.clone(),
                    hub.clone(),
                    self.stats.clone(),
                    cancel.clone(),
                );
                health.spawn(tasks, format!("notify {name} statuses"), cancel.clone(), statuses);
            }
            let run = run_target(name.clone(), target, context.clone(), wake_rx.clone(), cancel.clone());
            health.spawn(tasks, format!("notify {name}"), cancel.clone(), run);
        }
        let chains = run_chains(store.clone(), self.plan.clone(), wake_tx.clone(), cancel.clone());
        health.spawn(tasks, "notify-chains".into(), cancel.clone(), chains);
        let watcher = watch_hub(hub.clone(), wake_tx, cancel.clone());
        health.spawn(tasks, "notify-wake".into(), cancel, watcher);
        Handle { store, hub, links: ack_links, stats: self.stats, targets: Arc::new(links) }
    }
}

struct Context {
    store: Store,
    hub: Arc<Hub>,
    links: AckLinks,
    stats: Arc<Stats>,
    labels: HashMap<String, String>,
    ward: String,
}

impl Context {
    /// The notification of a queued row; live, unacknowledged alarms get an acknowledge link.
    async fn notification(&self, item: &QueuedNotification) -> Notification {
        let e = &item.event;
        // A self-test alarm ends by itself: nothing to acknowledge.
        let live =
            !e.test && e.phase != AlarmPhase::End && !matches!(e.state, AlarmState::Acknowledged | AlarmState::Cleared);
        let ack_url = if live {
            match self.links.issue(&item.target, e, Utc::now()).await {
                Ok(url) => url,
                Err(err) => {
                    // The notification still goes, without a link: better than not at all.
                    tracing::error!(target = %item.target, error = %err, "notify: could not issue an acknowledge link");
                    None
                }
            }
        } else {
            None
        };
        Notification {
            event: e.clone(),
            bed_label: self.labels.get(e.bed.as_ref()).cloned().unwrap_or_else(|| e.bed.to_string()),
            ward: self.ward.clone(),
            reason: item.reason.clone(),
            target: item.target.clone(),
            ack_url,
        }
    }
}

/// Waits for a wake-up, at most [`POLL`]; `false` when cancelled.
async fn idle(wake: &mut watch::Receiver<u64>, cancel: &CancellationToken, longest: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = wake.changed() => true,
        _ = tokio::time::sleep(longest) => true,
    }
}

/// Sleeps `d`; `false` when cancelled first.
async fn pause(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// One target's delivery task: its queue in order, each row until the target takes it.
async fn run_target(
    name: String,
    target: Arc<Target>,
    ctx: Arc<Context>,
    mut wake: watch::Receiver<u64>,
    cancel: CancellationToken,
) {
    let stats = ctx.stats.get(&name).cloned().unwrap_or_default();
    // The row being retried and its notification: one acknowledge link per row, not one per attempt.
    let mut current: Option<(i64, Notification)> = None;
    loop {
        if cancel.is_cancelled() {
            target.shutdown().await;
            return;
        }
        let (store, n) = (ctx.store.clone(), name.clone());
        let head = match tokio::task::spawn_blocking(move || store.notify_head(&n)).await {
            Ok(Ok(head)) => head,
            Ok(Err(e)) => {
                tracing::error!(target = %name, error = %e, "notify: cannot read the delivery queue");
                None
            }
            Err(e) => {
                tracing::error!(target = %name, error = %e, "notify: the queue read failed");
                None
            }
        };
        let Some(item) = head else {
            if !idle(&mut wake, &cancel, POLL).await {
                return;
            }
            continue;
        };
        let wait = (item.next_attempt - Utc::now()).to_std().unwrap_or_default();
        if !wait.is_zero() {
            if !pause(wait.min(MAX_BACKOFF), &cancel).await {
                return;
            }
            continue;
        }
        let notification = match current.take() {
            Some((id, n)) if id == item.id => n,
            _ => ctx.notification(&item).await,
        };
        stats.attempts.fetch_add(1, Ordering::Relaxed);
        let outcome = tokio::select! {
            _ = cancel.cancelled() => continue,
            r = target.deliver(&notification) => r,
        };
        let at = Utc::now();
        let recorded = match &outcome {
            Ok(receipt) => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                stats.failing.store(false, Ordering::Relaxed);
                stats.delivery.record_success();
                tracing::info!(
                    target = %name, bed = %item.event.bed, alarm_id = %item.event.alarm_id, reason = %item.reason,
                    attempt = item.attempts + 1, receipt = %receipt.detail, "notify: delivered"
                );
                ctx.store.notify_attempted(&item, Ok(receipt.detail.clone()), at, at).await
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                stats.failing.store(true, Ordering::Relaxed);
                stats.delivery.record_failure(&e.to_string(), at);
                let retry = backoff(item.attempts + 1);
                // At most one line per attempt, and attempts back off to one a minute.
                tracing::warn!(
                    target = %name, bed = %item.event.bed, alarm_id = %item.event.alarm_id, attempt = item.attempts + 1,
                    retry_in_s = retry.as_secs(), error = %e, "notify: delivery failed, will retry"
                );
                let retry_at = at + chrono::Duration::from_std(retry).unwrap_or_else(|_| chrono::Duration::seconds(60));
                current = Some((item.id, notification.clone()));
                ctx.store.notify_attempted(&item, Err(e.to_string()), at, retry_at).await
            }
        };
        if let Err(e) = recorded {
            // Not marked: the row is sent again (at least once), after a pause so a failing disk is not hammered.
            tracing::error!(target = %name, error = %e, "notify: cannot record a delivery attempt");
            if !pause(POLL, &cancel).await {
                return;
            }
        }
        if let Ok(receipt) = outcome {
            if let Some(by) = receipt.acknowledged_by.as_deref() {
                let e = &item.event;
                // Refusals (already acknowledged, ended) are logged inside; nothing else to do.
                let _ = super::acknowledge_from_target(
                    &ctx.hub,
                    &ctx.stats,
                    &e.bed,
                    &e.alarm_id,
                    &name,
                    Some(by),
                    "receipt",
                )
                .await;
            }
        }
    }
}

/// Feeds an ACM target's link state into its health: a lost link (an unanswered heartbeat or alarm, a refused
/// connection) is a failure, each new error one more; the link up again ends the run.
async fn watch_link(
    mut link: watch::Receiver<super::acm_client::AcmLinkStatus>,
    stats: Arc<TargetStats>,
    cancel: CancellationToken,
) {
    let mut last = (false, None::<String>, 0u64);
    loop {
        let now = {
            let l = link.borrow_and_update();
            (l.connected, l.last_error.clone(), l.heartbeats_missed)
        };
        if now != last {
            match (&now.1, now.0) {
                (_, true) => stats.link.record_success(),
                (Some(error), false) => stats.link.record_failure(error, Utc::now()),
                (None, false) => {}
            }
            last = now;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = link.changed() => if changed.is_err() { return },
        }
    }
}

/// The chain task: moves every chain on when its step's wait has passed, then sleeps until the next is due
/// (at most [`POLL`], so a chain started meanwhile is seen in time).
pub async fn run_chains(
    store: Store,
    router: Arc<dyn NotifyRouter>,
    wake: Arc<watch::Sender<u64>>,
    cancel: CancellationToken,
) {
    loop {
        let now = Utc::now();
        let next = match store.advance_chains(router.clone(), now).await {
            Ok((moved, next)) => {
                if moved > 0 {
                    tracing::info!(chains = moved, "notify: escalation chains moved on");
                    wake.send_modify(|n| *n = n.wrapping_add(1));
                }
                next
            }
            Err(e) => {
                tracing::error!(error = %e, "notify: cannot move the escalation chains on");
                None
            }
        };
        let sleep = next.and_then(|t| (t - Utc::now()).to_std().ok()).unwrap_or(POLL).min(POLL);
        if !pause(sleep, &cancel).await {
            return;
        }
    }
}

/// Wakes the delivery tasks whenever the hub announces an alarm event (stored, with its queue rows, by then).
async fn watch_hub(hub: Arc<Hub>, wake: Arc<watch::Sender<u64>>, cancel: CancellationToken) {
    let (_, mut events) = hub.subscribe();
    loop {
        let got = tokio::select! {
            _ = cancel.cancelled() => return,
            e = events.recv() => e,
        };
        match got {
            Ok(e) if matches!(e.event, Event::Alarm(_)) => wake.send_modify(|n| *n = n.wrapping_add(1)),
            Ok(_) => {}
            // Missed some: wake anyway (the tasks look at the store, not at the events).
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => wake.send_modify(|n| *n = n.wrapping_add(1)),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
