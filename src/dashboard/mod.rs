//! The ward dashboard: an axum app serving embedded pages, a live SSE stream from the hub, sign-in, bed
//! commands, chair history and session export. It depends on the hub only, never on the MQTT broker, so the ward
//! keeps its alarms when the broker is down. See `docs/dashboard.md`.

pub mod auth;
pub mod client;
mod export;
pub mod history;
mod https;
mod notify;
pub mod ops;
mod profile_limits;
pub mod sse;
mod store_history;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Role};
use crate::event::{Command, CommandRequest, Priority};
use crate::hub::{CommandError, Hub};
use crate::vitals::Parameter;

use auth::{Principal, Sessions};
pub use history::{ActionRecord, History, HistoryError, MemoryHistory, SessionSummary};

/// Everything that can go wrong in the dashboard, from binding the socket to a refused request.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// `dashboard.listen` is not an address.
    #[error("dashboard.listen: '{0}' is not an address like 127.0.0.1:8080")]
    BadListen(String),
    /// Demo actions without sign-in were asked for on an address other people can reach.
    #[error("dashboard.demo_actions_without_sign_in is only allowed on a loopback address, not {0}")]
    DemoActionsOffLoopback(String),
    /// The listener failed.
    #[error("dashboard server: {0}")]
    Io(#[from] std::io::Error),
    /// The request needs a signed-in user.
    #[error("sign in first")]
    Unauthorized,
    /// The user's role does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// Missing or wrong CSRF token, or a cross-site request.
    #[error("missing or wrong CSRF token")]
    Csrf,
    /// Too many failed sign-ins for this name from this address, or from this address.
    #[error("too many failed sign-ins; wait a minute")]
    LockedOut,
    /// The `Host` header names another site (DNS rebinding, or a proxy that does not pass the host through).
    #[error("this dashboard does not answer for host '{0}' (dashboard.allowed_hosts)")]
    MisdirectedHost(String),
    /// The metrics file (`metrics.token_file`) could not be read.
    #[error("metrics.token_file: {0}")]
    MetricsToken(String),
    /// The peer may not read `/metrics` (not in `metrics.allow`, no valid bearer token).
    #[error("metrics are for peers in metrics.allow or with the bearer token from metrics.token_file")]
    MetricsRefused,
    /// Too many sign-ins at once.
    #[error("the server is busy checking other sign-ins; try again")]
    Busy,
    /// No such bed or page.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request makes no sense.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The bed did not carry out the command.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The store could not answer.
    #[error(transparent)]
    History(#[from] HistoryError),
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let status = match &self {
            DashboardError::Unauthorized => StatusCode::UNAUTHORIZED,
            DashboardError::Forbidden(_) | DashboardError::Csrf | DashboardError::MetricsRefused => {
                StatusCode::FORBIDDEN
            }
            DashboardError::LockedOut => StatusCode::TOO_MANY_REQUESTS,
            DashboardError::MisdirectedHost(_) => StatusCode::MISDIRECTED_REQUEST,
            DashboardError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            DashboardError::NotFound(_) | DashboardError::Command(CommandError::UnknownBed(_)) => StatusCode::NOT_FOUND,
            DashboardError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DashboardError::Command(CommandError::Refused(_)) => StatusCode::CONFLICT,
            DashboardError::Command(CommandError::Unavailable(_)) | DashboardError::History(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            DashboardError::BadListen(_)
            | DashboardError::DemoActionsOffLoopback(_)
            | DashboardError::Io(_)
            | DashboardError::MetricsToken(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// One limit of a profile as the chair view draws it: alarm when below `low` or above `high`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitBand {
    /// The parameter.
    pub parameter: Parameter,
    /// The priority this limit raises.
    pub priority: Priority,
    /// Alarm below this.
    pub low: Option<f64>,
    /// Alarm above this.
    pub high: Option<f64>,
}

/// The limits of a bed's profile, for the chair view. Published by whoever owns the profiles (the alarm engine);
/// optional, because the dashboard works without them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChairLimits {
    /// Profile name.
    pub profile: String,
    /// Threshold limits.
    pub bands: Vec<LimitBand>,
    /// Rise from baseline that alarms, systolic mmHg.
    pub rise_sys: Option<f64>,
    /// Rise from baseline that alarms, diastolic mmHg.
    pub rise_dia: Option<f64>,
}

/// What the dashboard needs: the hub, the config (users, dashboard settings), the store's history, optional
/// profile limits per bed, and its own sign-in sessions.
#[derive(Clone)]
pub struct DashboardState {
    /// The in-process hub.
    pub hub: Arc<Hub>,
    /// The configuration (users, `[dashboard]`).
    pub config: Arc<Config>,
    /// Stored history for chair views and exports.
    pub history: Arc<dyn History>,
    limits: Arc<HashMap<String, ChairLimits>>,
    sessions: Arc<Sessions>,
    demo_actions: bool,
    demo_csrf: Arc<str>,
    epoch: Arc<str>,
    streams: CancellationToken,
    mqtt_link: Option<watch::Receiver<crate::mqtt::LinkStatus>>,
    health: Option<crate::health::Health>,
    mllp_refused: Option<Arc<std::sync::atomic::AtomicU64>>,
    mllp_failed_handshakes: Option<Arc<std::sync::atomic::AtomicU64>>,
    listen: SocketAddr,
    /// `dashboard.tls`, read at start-up; `None` serves plain HTTP.
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// `dashboard.trusted_proxies`.
    proxies: Arc<Vec<ipnet::IpNet>>,
    sse_clients: Arc<std::sync::atomic::AtomicUsize>,
    metrics: Option<Arc<crate::metrics::Exporter>>,
    probes: Option<crate::service::Probes>,
    metrics_access: Arc<ops::MetricsAccess>,
    selftest: Option<crate::selftest::SelfTest>,
    /// Notification targets (acknowledge links, chains); `None` without `[[notify.targets]]`.
    notify: Option<crate::notify::delivery::Handle>,
}

impl DashboardState {
    /// Builds the state. Refuses `demo_actions_without_sign_in` unless `dashboard.listen` is a loopback address.
    pub fn new(hub: Arc<Hub>, config: Arc<Config>, history: Arc<dyn History>) -> Result<Self, DashboardError> {
        let listen = &config.dashboard.listen;
        let addr: SocketAddr = listen.parse().map_err(|_| DashboardError::BadListen(listen.clone()))?;
        let demo_actions = config.dashboard.demo_actions_without_sign_in;
        if demo_actions && !addr.ip().is_loopback() {
            return Err(DashboardError::DemoActionsOffLoopback(listen.clone()));
        }
        // Each bed's profile limits for the chair view, read the way the daemon reads them; a profile that cannot
        // be read simply has no limits on the charts (the daemon itself refuses to start with one).
        let limits = config
            .beds
            .iter()
            .filter_map(|bed| {
                crate::alarm::Profile::resolve(&bed.profile, &config.base_dir)
                    .ok()
                    .map(|p| (bed.id.clone(), ChairLimits::from_profile(&p)))
            })
            .collect();
        let d = &config.dashboard;
        let sessions = Sessions::new(
            std::time::Duration::from_secs(d.session_idle_s),
            std::time::Duration::from_secs(d.session_max_s),
        );
        let proxies =
            config.dashboard.trusted_proxies.iter().filter_map(|p| crate::config::parse_peer_block(p).ok()).collect();
        let metrics_access = Arc::new(ops::MetricsAccess::from_config(&config)?);
        Ok(DashboardState {
            hub,
            config,
            history,
            limits: Arc::new(limits),
            sessions,
            demo_actions,
            demo_csrf: auth::random_token().into(),
            epoch: auth::random_token()[..8].into(),
            streams: CancellationToken::new(),
            mqtt_link: None,
            health: None,
            mllp_refused: None,
            mllp_failed_handshakes: None,
            listen: addr,
            tls: None,
            proxies: Arc::new(proxies),
            sse_clients: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            metrics: None,
            probes: None,
            metrics_access,
            selftest: None,
            notify: None,
        })
    }

    /// Shows the MQTT broker link on the page, so a lost integration link is visible at this end too
    /// (CLINICAL.md: a distributed alarm system makes a lost link visible at both ends).
    pub fn with_mqtt_link(mut self, link: watch::Receiver<crate::mqtt::LinkStatus>) -> Self {
        self.mqtt_link = Some(link);
        self
    }

    /// Shows the daemon's own parts (supervised tasks, the store) on `/api/status`.
    pub fn with_health(mut self, health: crate::health::Health) -> Self {
        self.health = Some(health);
        self
    }

    /// Shows how many MLLP connections were refused because their peer is not in `mllp.allow`.
    pub fn with_mllp_refused(mut self, refused: Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.mllp_refused = Some(refused);
        self
    }

    /// Serves HTTPS with this TLS configuration (`dashboard.tls`, read by [`crate::tls::load_server_config`]).
    pub fn with_tls(mut self, tls: Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The client of a request from `peer`, believing forwarded headers only from `dashboard.trusted_proxies`.
    fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> client::Client {
        client::client(peer, headers, &self.proxies, self.tls.is_some())
    }

    /// Shows how many MLLP TLS handshakes failed (`mllp.tls`: a monitor without a valid client certificate, plain
    /// MLLP to the TLS port), so a monitor that cannot get in is visible on the status page.
    pub fn with_mllp_failed_handshakes(mut self, failed: Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.mllp_failed_handshakes = Some(failed);
        self
    }

    /// Serves `GET /metrics` from this exporter.
    pub fn with_metrics(mut self, exporter: Arc<crate::metrics::Exporter>) -> Self {
        self.metrics = Some(exporter);
        self
    }

    /// Serves acknowledge links and the escalation chains of these notification targets.
    pub fn with_notify(mut self, notify: crate::notify::delivery::Handle) -> Self {
        self.notify = Some(notify);
        self
    }

    /// Answers `/readyz` with these probes.
    pub fn with_probes(mut self, probes: crate::service::Probes) -> Self {
        self.probes = Some(probes);
        self
    }

    /// Runs self-tests for admins (`POST /api/selftest`) and shows the last result (`GET /api/selftest`,
    /// `/readyz`).
    pub fn with_selftest(mut self, selftest: crate::selftest::SelfTest) -> Self {
        self.selftest = Some(selftest);
        self
    }

    /// The count of open event streams (for the metrics).
    pub fn sse_clients(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.sse_clients.clone()
    }

    /// Publishes a bed's limits to the chair view, replacing those read from its profile at construction.
    pub fn with_limits(mut self, bed: &str, limits: ChairLimits) -> Self {
        Arc::make_mut(&mut self.limits).insert(bed.to_owned(), limits);
        self
    }

    /// Whether actions are allowed without sign-in (loopback demo only).
    pub fn demo_actions(&self) -> bool {
        self.demo_actions
    }

    /// Ends every open event stream (each sends a final `shutdown` event). [`serve`] calls it on cancellation.
    pub fn shutdown_streams(&self) {
        self.streams.cancel();
    }

    fn principal(&self, headers: &HeaderMap) -> Option<Principal> {
        if let Some(p) = auth::session_cookie(headers).and_then(|id| self.sessions.get(&id)) {
            return Some(p);
        }
        self.demo_actions.then(|| Principal {
            name: String::from("demo"),
            role: Role::Nurse,
            csrf: self.demo_csrf.to_string(),
            signed_in: false,
        })
    }

    fn require_view(&self, headers: &HeaderMap) -> Result<Option<Principal>, DashboardError> {
        let p = self.principal(headers);
        if p.is_none() && !self.config.dashboard.read_only_without_sign_in {
            return Err(DashboardError::Unauthorized);
        }
        Ok(p)
    }

    fn require_action(&self, headers: &HeaderMap) -> Result<Principal, DashboardError> {
        if !auth::same_origin(headers) {
            return Err(DashboardError::Csrf);
        }
        let p = self.principal(headers).ok_or(DashboardError::Unauthorized)?;
        let sent = headers.get(auth::CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !auth::tokens_match(sent, &p.csrf) {
            return Err(DashboardError::Csrf);
        }
        if !p.may_act() {
            return Err(DashboardError::Forbidden(format!(
                "role '{}' may not act on beds",
                crate::auth::role_name(p.role)
            )));
        }
        Ok(p)
    }

    fn selftest(&self) -> Result<&crate::selftest::SelfTest, DashboardError> {
        self.selftest.as_ref().ok_or_else(|| DashboardError::NotFound("self-test".into()))
    }

    fn bed_exists(&self, bed: &str) -> Result<crate::hub::BedInfo, DashboardError> {
        self.hub.beds().into_iter().find(|b| &*b.id == bed).ok_or_else(|| DashboardError::NotFound(bed.to_owned()))
    }
}

/// The router. Tests call it with `oneshot`; [`serve`] runs it on a socket.
pub fn app(state: DashboardState) -> Router {
    Router::new()
        .route("/", get(|| async { page(WARD_HTML) }))
        .route("/chair/:bed", get(chair_page))
        .route("/chair/:bed/print", get(print_page))
        .route("/assets/:name", get(asset))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api/me", get(me))
        .route("/api/session", post(sign_in).delete(sign_out))
        .route("/api/snapshot", get(snapshot))
        .route("/api/status", get(status))
        .route("/api/events", get(events))
        .route("/api/selftest", get(selftest_info).post(selftest_run))
        .route("/api/beds/:bed/commands", post(command))
        .route("/api/beds/:bed/limits", get(limits))
        .route("/api/beds/:bed/history", get(export::history_json))
        .route("/api/beds/:bed/export.csv", get(export::history_csv))
        .route("/api/notify/chains", get(notify::chains))
        .route("/api/notify/attempts", get(notify::attempts))
        .route("/ack/:token", get(notify::show).post(notify::acknowledge))
        .layer(axum::middleware::from_fn_with_state(state.clone(), host_guard))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// 421 for any `Host` the dashboard does not answer to, before any route runs (DNS rebinding reads and does
/// nothing).
async fn host_guard(
    State(state): State<DashboardState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request.headers().get(header::HOST).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if !auth::host_allowed(host, &state.listen, &state.config.dashboard.allowed_hosts) {
        let shown: String = host.unwrap_or("").chars().take(64).collect();
        return DashboardError::MisdirectedHost(shown).into_response();
    }
    next.run(request).await
}

/// Serves the dashboard until `cancel` fires, then ends the event streams and drains open requests.
pub async fn serve(
    listener: TcpListener,
    state: DashboardState,
    cancel: CancellationToken,
) -> Result<(), DashboardError> {
    let addr = listener.local_addr()?;
    if state.demo_actions && !addr.ip().is_loopback() {
        return Err(DashboardError::DemoActionsOffLoopback(addr.to_string()));
    }
    if state.demo_actions {
        tracing::warn!(%addr, "dashboard: DEMO MODE: actions are allowed without sign-in (loopback only)");
    }
    let streams = state.streams.clone();
    if let Some(tls) = state.tls.clone() {
        tracing::info!(%addr, "dashboard listening on https://{addr}");
        let end_streams = async {
            cancel.cancelled().await;
            streams.cancel();
        };
        tokio::join!(https::serve(listener, tls, app(state), cancel.clone()), end_streams);
        return Ok(());
    }
    tracing::info!(%addr, "dashboard listening on http://{addr}");
    axum::serve(listener, app(state).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            cancel.cancelled().await;
            streams.cancel();
        })
        .await?;
    Ok(())
}

const WARD_HTML: &str = include_str!("assets/index.html");
const CHAIR_HTML: &str = include_str!("assets/chair.html");
const PRINT_HTML: &str = include_str!("assets/print.html");

fn page(html: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], html).into_response()
}

async fn chair_page(State(state): State<DashboardState>, Path(bed): Path<String>) -> Result<Response, DashboardError> {
    state.bed_exists(&bed)?;
    Ok(page(CHAIR_HTML))
}

async fn print_page(State(state): State<DashboardState>, Path(bed): Path<String>) -> Result<Response, DashboardError> {
    state.bed_exists(&bed)?;
    Ok(page(PRINT_HTML))
}

async fn asset(Path(name): Path<String>) -> Result<Response, DashboardError> {
    let (body, mime): (&'static [u8], &str) = match name.as_str() {
        "app.css" => (include_bytes!("assets/app.css"), "text/css; charset=utf-8"),
        "common.js" => (include_bytes!("assets/common.js"), "text/javascript; charset=utf-8"),
        "ward.js" => (include_bytes!("assets/ward.js"), "text/javascript; charset=utf-8"),
        "chair.js" => (include_bytes!("assets/chair.js"), "text/javascript; charset=utf-8"),
        "chart.js" => (include_bytes!("assets/chart.js"), "text/javascript; charset=utf-8"),
        "print.js" => (include_bytes!("assets/print.js"), "text/javascript; charset=utf-8"),
        "favicon.svg" => (include_bytes!("assets/favicon.svg"), "image/svg+xml"),
        _ => return Err(DashboardError::NotFound(name)),
    };
    Ok(([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "no-cache")], Body::from(body)).into_response())
}

/// A locked-down CSP (no inline script, no third-party origin) and the usual hardening headers.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

#[derive(Serialize)]
struct Me {
    user: Option<String>,
    role: Option<Role>,
    signed_in: bool,
    can_view: bool,
    can_act: bool,
    demo: bool,
    csrf: Option<String>,
    site: String,
    ward: String,
}

fn me_of(state: &DashboardState, p: Option<&Principal>) -> Me {
    Me {
        user: p.map(|p| p.name.clone()),
        role: p.map(|p| p.role),
        signed_in: p.is_some_and(|p| p.signed_in),
        can_view: p.is_some() || state.config.dashboard.read_only_without_sign_in,
        can_act: p.is_some_and(Principal::may_act),
        demo: state.demo_actions,
        csrf: p.map(|p| p.csrf.clone()),
        site: state.config.site.name.clone(),
        ward: state.config.site.ward.clone(),
    }
}

async fn me(State(state): State<DashboardState>, headers: HeaderMap) -> Json<Me> {
    let p = state.principal(&headers);
    Json(me_of(&state, p.as_ref()))
}

#[derive(Deserialize)]
struct SignIn {
    name: String,
    password: String,
}

async fn sign_in(
    State(state): State<DashboardState>,
    peer: Option<axum::extract::ConnectInfo<SocketAddr>>,
    headers: HeaderMap,
    Json(body): Json<SignIn>,
) -> Result<Response, DashboardError> {
    if !auth::same_origin(&headers) {
        return Err(DashboardError::Csrf);
    }
    if body.name.len() > 128 || body.password.len() > 1024 {
        return Err(DashboardError::BadRequest("name or password too long".into()));
    }
    let client = state.client(peer.map(|c| c.0), &headers);
    let ip = client.ip;
    // Sign-in names are attacker-chosen: logged escaped and shortened, so they cannot forge log lines.
    let shown: String = body.name.chars().take(64).flat_map(char::escape_debug).collect();
    // Counted before hashing, under one lock: parallel guesses cannot all get through.
    let attempt = state.sessions.lockout.begin(&body.name, ip).map_err(|_| {
        tracing::info!(user = %shown, %ip, "dashboard: sign-in refused, locked out");
        DashboardError::LockedOut
    })?;
    // argon2 is deliberately slow and memory-hard: it runs on the process's few hashing threads, off the async
    // workers; when their queue is full the answer is 503 at once.
    let config = state.config.clone();
    let (name, password) = (body.name.clone(), body.password);
    let checked = crate::auth::HashPool::shared()
        .run(move || crate::auth::authenticate(&config.users, &name, &password).map(|u| u.role))
        .await
        .ok_or(DashboardError::Busy)?;
    if let Err(crate::auth::AuthError::BadHash(why)) = &checked {
        tracing::error!(user = %shown, %why, "dashboard: the configured password hash is invalid");
    }
    let Ok(role) = checked else {
        tracing::info!(user = %shown, %ip, "dashboard: sign-in refused");
        return Err(DashboardError::Unauthorized);
    };
    attempt.succeeded();
    let (id, principal) = state.sessions.open(&body.name, role);
    tracing::info!(user = %shown, ?role, "dashboard: signed in");
    let cookie = HeaderValue::from_str(&auth::set_cookie(&id, state.sessions.max(), client.https))
        .map_err(|e| DashboardError::BadRequest(e.to_string()))?;
    Ok(([(header::SET_COOKIE, cookie)], Json(me_of(&state, Some(&principal)))).into_response())
}

async fn sign_out(
    State(state): State<DashboardState>,
    peer: Option<axum::extract::ConnectInfo<SocketAddr>>,
    headers: HeaderMap,
) -> Result<Response, DashboardError> {
    let id = auth::session_cookie(&headers).ok_or(DashboardError::Unauthorized)?;
    let p = state.sessions.get(&id).ok_or(DashboardError::Unauthorized)?;
    let sent = headers.get(auth::CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !auth::same_origin(&headers) || !auth::tokens_match(sent, &p.csrf) {
        return Err(DashboardError::Csrf);
    }
    state.sessions.close(&id);
    let after = state.principal(&HeaderMap::new());
    Ok((
        [(header::SET_COOKIE, auth::clear_cookie(state.client(peer.map(|c| c.0), &headers).https))],
        Json(me_of(&state, after.as_ref())),
    )
        .into_response())
}

async fn snapshot(State(state): State<DashboardState>, headers: HeaderMap) -> Result<Response, DashboardError> {
    let scrub = !state.require_view(&headers)?.is_some_and(|p| p.signed_in);
    let body = sse::json_text(&state.hub.snapshot(), scrub);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The server's own links: the MQTT broker (null when MQTT is disabled), the MLLP listener's refused peers
/// (null without an MLLP listener) and the notification targets' health (null without targets).
async fn status(State(state): State<DashboardState>, headers: HeaderMap) -> Result<Response, DashboardError> {
    state.require_view(&headers)?;
    let mqtt = state.mqtt_link.as_ref().map(|l| l.borrow().clone());
    let health = state.health.as_ref().map(|h| h.snapshot());
    let (tasks, store) = health.map(|h| (Some(h.tasks), h.store)).unwrap_or_default();
    let load = |c: &Arc<std::sync::atomic::AtomicU64>| c.load(std::sync::atomic::Ordering::Relaxed);
    let mllp = state.mllp_refused.as_ref().map(|r| {
        let mut m = json!({ "refused_peers": load(r) });
        if let Some(f) = &state.mllp_failed_handshakes {
            m["failed_tls_handshakes"] = json!(load(f));
        }
        m
    });
    // Each notification target's health (null without targets); a failing one is shown in the page header.
    let notify = state.notify.as_ref().map(|n| n.health(chrono::Utc::now()));
    Ok(Json(json!({ "mqtt": mqtt, "tasks": tasks, "store": store, "mllp": mllp, "notify": notify })).into_response())
}

#[derive(Deserialize)]
struct EventsQuery {
    /// For clients that reconnect by opening a new EventSource (which cannot set `Last-Event-ID`).
    last_id: Option<String>,
}

async fn events(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Response, DashboardError> {
    let scrub = !state.require_view(&headers)?.is_some_and(|p| p.signed_in);
    let header_id = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let last_id = header_id.or(q.last_id);
    let stream = sse::stream(state.hub.clone(), state.epoch.clone(), last_id.as_deref(), state.streams.clone(), scrub);
    let open = ops::StreamCount::open(state.sse_clients.clone());
    let stream = futures::StreamExt::map(stream, move |e| {
        let _counted = &open;
        e
    });
    let mut res = Sse::new(stream).into_response();
    // Tell reverse proxies not to buffer, or heartbeats arrive in bursts and the page flaps.
    res.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

async fn command(
    State(state): State<DashboardState>,
    Path(bed): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, DashboardError> {
    let actor = state.require_action(&headers)?;
    let info = state.bed_exists(&bed)?;
    let command: Command = serde_json::from_slice(&body).map_err(|e| DashboardError::BadRequest(e.to_string()))?;
    // The same validation and role rules as MQTT command intake (limit overrides are for admins).
    crate::mqtt::command::validate(&command).map_err(DashboardError::BadRequest)?;
    crate::auth::authorize(actor.role, &command).map_err(|e| DashboardError::Forbidden(e.to_string()))?;
    tracing::info!(bed = %bed, actor = %actor.name, command = crate::mqtt::auth::command_name(&command), "dashboard: command");
    let events = state.hub.command(CommandRequest { bed: info.id, command, actor: actor.name }).await?;
    Ok(Json(json!({ "events": events })).into_response())
}

/// `GET /api/selftest`: the hops a self-test confirms, the bed it tests by default, where an independent MQTT
/// subscriber sees the test alarm (`vigil self-test` subscribes there first), and the last result.
async fn selftest_info(State(state): State<DashboardState>, headers: HeaderMap) -> Result<Response, DashboardError> {
    state.require_view(&headers)?;
    let selftest = state.selftest()?;
    let c = &state.config;
    let mqtt = (c.mqtt.mode != crate::config::MqttMode::Disabled).then(|| {
        let topics = crate::mqtt::topics::Topics::new(&c.mqtt.topic_prefix, &c.site.name, &c.site.ward);
        json!({ "host": c.mqtt.host, "port": c.mqtt.port, "tls": c.mqtt.tls.is_some(), "alarm_topic": topics.alarm("+") })
    });
    let status = selftest.status().borrow().clone();
    Ok(Json(json!({
        "hops": selftest.hop_names(),
        "default_bed": selftest.default_bed().ok(),
        "mqtt": mqtt,
        "last": status.last,
        "passed": status.passed,
        "failed": status.failed,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SelfTestRequest {
    /// The bed; default the first one.
    #[serde(default)]
    bed: Option<String>,
}

/// `POST /api/selftest` (admins; the loopback demo without sign-in too): runs a self-test and answers with its
/// report, 200 whether it passed or not (`passed` says).
async fn selftest_run(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, DashboardError> {
    let actor = state.require_action(&headers)?;
    let demo = state.demo_actions && !actor.signed_in;
    if !demo {
        crate::auth::authorize(actor.role, &Command::SelfTest).map_err(|e| {
            DashboardError::Forbidden(format!("{e}: the self-test raises a test alarm on a bed, admins only"))
        })?;
    }
    let request: SelfTestRequest = if body.is_empty() {
        SelfTestRequest { bed: None }
    } else {
        serde_json::from_slice(&body).map_err(|e| DashboardError::BadRequest(e.to_string()))?
    };
    let selftest = state.selftest()?;
    let bed = match request.bed {
        Some(b) => b,
        None => selftest.default_bed().map_err(|e| DashboardError::NotFound(e.to_string()))?,
    };
    tracing::info!(bed = %bed, actor = %actor.name, "dashboard: self-test");
    let report = selftest.run(&bed, &actor.name, crate::selftest::Trigger::Manual).await.map_err(|e| match e {
        crate::selftest::SelfTestError::UnknownBed(b) => DashboardError::NotFound(b),
        crate::selftest::SelfTestError::NoBeds => DashboardError::NotFound(e.to_string()),
        crate::selftest::SelfTestError::Busy => DashboardError::Command(CommandError::Refused(e.to_string())),
    })?;
    Ok(Json(report).into_response())
}

async fn limits(
    State(state): State<DashboardState>,
    Path(bed): Path<String>,
    headers: HeaderMap,
) -> Result<Response, DashboardError> {
    state.require_view(&headers)?;
    let info = state.bed_exists(&bed)?;
    let limits = state.limits.get(&bed);
    Ok(Json(json!({ "bed": bed, "profile": info.profile, "limits": limits })).into_response())
}

#[cfg(test)]
mod tests;
