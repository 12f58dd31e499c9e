//! The `acm` target: the notification queue's side of an IHE PCD ACM Alert Manager. Each queued alarm event
//! (start, escalation or acknowledge as phase `update`, end) goes out as one ORU^R40 through the target's
//! [`AcmClient`] and counts as delivered on the manager's `AA`/`CA`; a refusal (`AE`/`AR`) or no answer within the
//! attempt's time is a failure the queue retries with its backoff, like a webhook's 5xx. The client's heartbeat
//! runs for as long as the target exists, and its link state feeds the target's health (`TargetStats`).
//!
//! An ORA^R41 in which the manager says a person took an alarm ([`AcmClient::statuses`]) acknowledges the alarm
//! in its bed through [`super::acknowledge_from_target`] (actor `notify:<target>:<who>`), which stops the
//! escalation chain. Only an alarm this target was sent can be acknowledged this way.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::acm_client::{AcmClient, AcmError, AcmOutcome};
use super::config::TargetConfig;
use super::{Notification, NotifyError, Receipt, Stats};
use crate::hub::Hub;
use crate::store::Store;

/// A configured Alert Manager target.
pub struct AcmTarget {
    client: AcmClient,
    timeout: Duration,
}

impl std::fmt::Debug for AcmTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmTarget").field("address", &self.client.address()).finish_non_exhaustive()
    }
}

impl AcmTarget {
    /// Builds target `key` and starts its link and heartbeat on `runtime` (reads a TLS CA file: call it on a
    /// blocking thread).
    pub fn new(
        key: &str,
        t: &TargetConfig,
        base_dir: &Path,
        runtime: &tokio::runtime::Handle,
    ) -> Result<AcmTarget, NotifyError> {
        let at = format!("{key}.acm");
        let config = t
            .acm
            .clone()
            .ok_or_else(|| NotifyError::Setup { key: at.clone(), reason: "an acm target needs its table".into() })?;
        let client = AcmClient::start(config, &at, base_dir, runtime).map_err(|e| match e {
            AcmError::Config { key, reason } => NotifyError::Setup { key, reason },
            other => NotifyError::Setup { key: at.clone(), reason: other.to_string() },
        })?;
        Ok(AcmTarget { client, timeout: Duration::from_secs(t.timeout_s) })
    }

    /// The client (link state, statuses).
    pub fn client(&self) -> &AcmClient {
        &self.client
    }

    /// Sends one notification's alarm event as an ORU^R40: `Ok` on the manager's `AA`/`CA`.
    pub async fn deliver(&self, n: &Notification) -> Result<Receipt, NotifyError> {
        let sent = tokio::time::timeout(self.timeout, self.client.send_alert(&n.event)).await;
        let reply = match sent {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(NotifyError::Unreachable(e.to_string())),
            Err(_) => {
                let last = self.client.link().borrow().last_error.clone();
                return Err(NotifyError::Unreachable(format!(
                    "no ACK from the Alert Manager at {} within {} s{}",
                    self.client.address(),
                    self.timeout.as_secs(),
                    last.map(|e| format!(": {e}")).unwrap_or_default()
                )));
            }
        };
        match reply.outcome {
            AcmOutcome::Accepted { code } => {
                let attempts =
                    if reply.attempts > 1 { format!(" (sent {} times)", reply.attempts) } else { String::new() };
                // An ORA^R41 that came before the ACK is acted on by the status watcher, like every later one.
                Ok(Receipt { detail: format!("ACK {code}{attempts}"), acknowledged_by: None })
            }
            AcmOutcome::Rejected { code, reason } => Err(NotifyError::Refused(format!(
                "ACK {code}: {}",
                reason.unwrap_or_else(|| "refused without a reason".into())
            ))),
        }
    }

    /// Stops the link after the last heartbeat (phase `end`), at most `within`.
    pub async fn shutdown(&self, within: Duration) {
        if tokio::time::timeout(within, self.client.shutdown()).await.is_err() {
            tracing::debug!(address = %self.client.address(), "the last ACM heartbeat did not finish in time");
        }
    }
}

/// Acts on the manager's ORA^R41 statuses for target `name`: an acknowledgement of an alarm this target was sent
/// acknowledges it in its bed; anything else is logged (by the client).
pub async fn watch_statuses(
    name: String,
    target: Arc<super::Target>,
    store: Store,
    hub: Arc<Hub>,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) {
    let super::Target::Acm(acm) = target.as_ref() else { return };
    let mut statuses = acm.client.statuses();
    loop {
        let status = tokio::select! {
            _ = cancel.cancelled() => return,
            s = statuses.recv() => s,
        };
        let status = match status {
            Ok(s) => s,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(target = %name, missed = n, "notify: ORA^R41 statuses were missed (too many at once)");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !status.is_acknowledgement() {
            continue;
        }
        let (s, t, a) = (store.clone(), name.clone(), status.alert_id.clone());
        let bed = match tokio::task::spawn_blocking(move || s.notify_alarm_bed(&t, &a)).await {
            Ok(Ok(bed)) => bed,
            Ok(Err(e)) => {
                tracing::error!(target = %name, error = %e, "notify: cannot look up an acknowledged alarm");
                None
            }
            Err(e) => {
                tracing::error!(target = %name, error = %e, "notify: the alarm look-up failed");
                None
            }
        };
        let Some(bed) = bed else {
            tracing::warn!(
                target = %name, alert_id = %status.alert_id,
                "notify: the Alert Manager acknowledged an alarm it was never sent; ignored"
            );
            continue;
        };
        let who = status.by.clone().unwrap_or_else(|| status.status.clone());
        // Refusals (already acknowledged, ended) are logged inside.
        let _ =
            super::acknowledge_from_target(&hub, &stats, &bed, &status.alert_id, &name, Some(&who), "ora_r41").await;
    }
}
