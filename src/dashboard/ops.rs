//! The operator's endpoints: `/healthz` (the process answers), `/readyz` (it can do its job, with JSON details)
//! and `/metrics` (Prometheus). They are served on the dashboard listener and, with `metrics.listen`, on a
//! listener of their own ([`serve`]).
//!
//! Who may read what: `/healthz` and `/readyz` are open (they name parts of the daemon, never a patient or a
//! vital sign), so a load balancer or a service monitor needs no account. `/metrics` tells an outsider how
//! busy the ward is and which alarms run, so it is answered only to peers in `metrics.allow` (default loopback)
//! or to a scraper sending the bearer token of `metrics.token_file`; everyone else gets 403.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{auth, DashboardError, DashboardState};
use crate::config::Config;

/// Who may read `/metrics`.
#[derive(Debug, Default)]
pub struct MetricsAccess {
    allow: Vec<ipnet::IpNet>,
    token: Option<String>,
}

impl MetricsAccess {
    /// From `[metrics]`: the allow-list, and the token read from `token_file` (trimmed; it must not be empty).
    pub fn from_config(config: &Config) -> Result<MetricsAccess, DashboardError> {
        let allow = config
            .metrics
            .allow
            .iter()
            .map(|a| crate::config::parse_peer_block(a).map_err(DashboardError::BadRequest))
            .collect::<Result<_, _>>()?;
        let token = match &config.metrics.token_file {
            None => None,
            Some(path) => {
                let path = config.resolve(path);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| DashboardError::MetricsToken(format!("cannot read {}: {e}", path.display())))?;
                let token = text.trim().to_owned();
                if token.len() < 16 {
                    return Err(DashboardError::MetricsToken(format!(
                        "{}: the token must be at least 16 characters",
                        path.display()
                    )));
                }
                Some(token)
            }
        };
        Ok(MetricsAccess { allow, token })
    }

    /// Whether a request from `peer` with these headers may read the metrics.
    pub fn allows(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> bool {
        if peer.is_some_and(|p| crate::ingest::mllp_listener::peer_allowed(&self.allow, p.ip())) {
            return true;
        }
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        matches!((&self.token, sent), (Some(token), Some(sent)) if auth::tokens_match(sent, token))
    }
}

/// Counts an open event stream while it lives.
pub struct StreamCount(Arc<AtomicUsize>);

impl StreamCount {
    /// One more open stream, until the returned value is dropped.
    pub fn open(count: Arc<AtomicUsize>) -> StreamCount {
        count.fetch_add(1, Ordering::Relaxed);
        StreamCount(count)
    }
}

impl Drop for StreamCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `GET /healthz`: 200 while the process serves HTTP.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// `GET /readyz`: 200 when every check passes, else 503; the body lists each check.
pub async fn readyz(State(state): State<DashboardState>) -> Response {
    let Some(probes) = &state.probes else {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "checks": {} }))).into_response();
    };
    let readiness = probes.readiness();
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = serde_json::to_value(&readiness).unwrap_or_default();
    // The last self-test, for the record: it does not make the daemon unready (its failure is a technical alarm
    // on the bed, and the checks above already name a broken part).
    if let Some(selftest) = &state.selftest {
        body["selftest"] = selftest_summary(&selftest.status().borrow());
    }
    // The notification targets, for the same reason not a readiness check: the ward's alarms do not depend on
    // them, and a failing one is on the dashboard's header and `vigil_notify_target_failing`.
    if let Some(notify) = &state.notify {
        let health = notify.health(chrono::Utc::now());
        let failing: Vec<&str> = health.iter().filter(|h| h.failing).map(|h| h.target.as_str()).collect();
        body["notify"] = json!({ "targets": health, "failing": failing });
    }
    (status, Json(body)).into_response()
}

/// The last self-test in `/readyz`: `{"ran":false}` before the first, else when, on which bed, whether it passed
/// and each hop's result.
fn selftest_summary(status: &crate::selftest::Status) -> serde_json::Value {
    match &status.last {
        None => json!({ "ran": false }),
        Some(r) => json!({
            "ran": true,
            "passed": r.passed,
            "started": r.started,
            "bed": r.bed,
            "trigger": r.trigger,
            "hops": r.hops.iter().map(|h| json!({ "hop": h.hop, "ok": h.ok, "ms": h.ms, "detail": h.detail })).collect::<Vec<_>>(),
        }),
    }
}

/// `GET /metrics`: the Prometheus text format, or OpenMetrics when `Accept` asks for it.
pub async fn metrics(
    State(state): State<DashboardState>,
    peer: Option<ConnectInfo<SocketAddr>>,
    headers: HeaderMap,
) -> Result<Response, DashboardError> {
    if !state.metrics_access.allows(peer.map(|c| c.0), &headers) {
        return Err(DashboardError::MetricsRefused);
    }
    let Some(exporter) = state.metrics.clone() else {
        return Err(DashboardError::NotFound("metrics".into()));
    };
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    // The outbox figures come from SQLite: off the async workers.
    let text = tokio::task::spawn_blocking(move || exporter.encode(openmetrics))
        .await
        .map_err(|e| DashboardError::BadRequest(format!("metrics: {e}")))?
        .map_err(|e| DashboardError::BadRequest(format!("metrics: {e}")))?;
    let mime = if openmetrics { crate::metrics::OPENMETRICS_CONTENT_TYPE } else { crate::metrics::TEXT_CONTENT_TYPE };
    Ok(([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "no-store")], text).into_response())
}

/// The router of the operator's own listener (`metrics.listen`): the three endpoints only, no pages.
pub fn app(state: DashboardState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves [`app`] on `listener` until `cancel` fires.
pub async fn serve(listener: TcpListener, state: DashboardState, cancel: CancellationToken) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "metrics listening on http://{addr}/metrics");
    axum::serve(listener, app(state).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}
