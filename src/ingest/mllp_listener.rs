//! The HL7 MLLP listener (`[mllp] listen`, default TCP 2575): monitors and gateways push ORU^R01 and get an ACK
//! for each message (docs/sources.md, "Devices and data").
//!
//! One task per connection, so a slow or hostile peer never blocks the others; a connection silent for
//! `idle_timeout_s` is closed; a message over `max_message_bytes` is dropped and answered AE. Messages are
//! routed to a bed by their device id (MSH-3, see [`crate::ingest::protocol::hl7::MessageHeader::device_id`]),
//! compared in upper case. ACKs: AA once the frame is in the bed's inbox; AE for an unparseable message or a bed
//! that cannot take it; AR for an unsupported message type or an unknown device id, naming the id.
//!
//! Peers: only addresses in `mllp.allow` (default: loopback) may connect; others are closed at accept, counted
//! ([`MllpListener::refused_peers`]) and logged (rate-limited). A device with a pinned `peer` address is accepted
//! only from that address: its messages from elsewhere are answered AR and counted against the device.
//!
//! TLS (`mllp.tls`): the handshake runs in the connection's own task after the peer check, within
//! [`HANDSHAKE_TIMEOUT`]; with `client_ca_file` a monitor without a certificate from that CA fails it. A failed
//! handshake (including plain MLLP sent to a TLS listener) closes that connection only, and is counted
//! ([`MllpListener::failed_handshakes`]) and logged rate-limited.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    bounded, Counters, IngestError, RateLimitedLog, SourceEvent, SourceId, SourceSender, COUNTERS_INTERVAL,
    MAX_ERROR_BYTES,
};
use crate::config::MllpConfig;
use crate::event::LinkState;
use crate::ingest::protocol::hl7::{self, AckCode, ErrorCode, MessageHeader};
use crate::ingest::protocol::mllp::MllpCodec;
use crate::ingest::protocol::{plausibility, DecodeError};

/// Routes: device id (upper case) → the source it feeds and that bed's inbox.
pub type Routes = HashMap<String, (SourceId, SourceSender)>;

/// How long a bed's inbox may stay full before the message is answered AE ("try again") instead.
const INBOX_WAIT: Duration = Duration::from_secs(5);
/// How long writing an ACK may take before the peer is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound, not yet running, MLLP listener.
#[derive(Debug)]
pub struct MllpListener {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    max_message_bytes: usize,
    idle_timeout: Duration,
    max_connections: usize,
    allow: Vec<ipnet::IpNet>,
    pins: HashMap<String, IpAddr>,
    refused: Arc<AtomicU64>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    failed_handshakes: Arc<AtomicU64>,
}

/// Whether `peer` is in `allow` (empty: loopback only). IPv4-mapped IPv6 peers count as their IPv4 address.
pub fn peer_allowed(allow: &[ipnet::IpNet], peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    if allow.is_empty() {
        peer.is_loopback()
    } else {
        allow.iter().any(|net| net.contains(&peer))
    }
}

impl MllpListener {
    /// Binds `cfg.listen`. Synchronous so that a port in use is reported at start-up with the key to fix.
    pub fn bind(cfg: &MllpConfig) -> Result<Self, IngestError> {
        let addr: SocketAddr = cfg.listen.parse().map_err(|_| IngestError::BadListenAddress(cfg.listen.clone()))?;
        let bind = |e| IngestError::Bind { addr: cfg.listen.clone(), source: e };
        let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let allow = cfg
            .allow
            .iter()
            .map(|a| crate::config::parse_peer_block(a).map_err(|_| IngestError::BadListenAddress(a.clone())))
            .collect::<Result<_, _>>()?;
        Ok(MllpListener {
            listener,
            addr,
            max_message_bytes: cfg.max_message_bytes,
            idle_timeout: Duration::from_secs(cfg.idle_timeout_s.max(1)),
            max_connections: cfg.max_connections.max(1),
            allow,
            pins: HashMap::new(),
            refused: Arc::new(AtomicU64::new(0)),
            tls: None,
            failed_handshakes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Pins device ids (any case) to the only peer address their messages are accepted from.
    pub fn with_pins(mut self, pins: HashMap<String, IpAddr>) -> Self {
        self.pins = pins.into_iter().map(|(id, ip)| (id.trim().to_ascii_uppercase(), ip.to_canonical())).collect();
        self
    }

    /// Speaks MLLP over TLS with this configuration (`mllp.tls`, read by [`crate::tls::load_server_config`]).
    pub fn with_tls(mut self, tls: Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How many TLS handshakes failed (no or a wrong client certificate, plain MLLP to the TLS port, timeouts).
    pub fn failed_handshakes(&self) -> Arc<AtomicU64> {
        self.failed_handshakes.clone()
    }

    /// How many connections were refused because their peer is not in `mllp.allow`.
    pub fn refused_peers(&self) -> Arc<AtomicU64> {
        self.refused.clone()
    }

    /// The address actually bound (port 0 in tests becomes a real port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts connections until `cancel` fires, then closes them and returns.
    pub async fn run(self, routes: Routes, cancel: CancellationToken) {
        let listener = match TcpListener::from_std(self.listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(addr = %self.addr, "mllp listener unusable: {e}");
                return;
            }
        };
        let pins = self.pins;
        let routes: Arc<HashMap<String, Route>> = Arc::new(
            routes
                .into_iter()
                .map(|(id, (source, tx))| {
                    let id = id.trim().to_ascii_uppercase();
                    let pin = pins.get(&id).copied();
                    (id, Route::new(source, tx, pin))
                })
                .collect(),
        );
        let mut refusals = RateLimitedLog::new();
        let handshake_log = Arc::new(Mutex::new(RateLimitedLog::new()));
        let acceptor = self.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let tracker = TaskTracker::new();
        tracker.spawn(flush_counters(routes.clone(), cancel.clone()));
        // `mllp.max_connections`: more are closed at once, so a connection storm cannot exhaust file descriptors.
        let slots = Arc::new(Semaphore::new(self.max_connections));
        tracing::info!(addr = %self.addr, "mllp listener ready");
        while let Some((stream, peer)) = crate::listen::accept_until(&listener, &cancel, "mllp").await {
            if !peer_allowed(&self.allow, peer.ip()) {
                let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(suppressed) = refusals.allow() {
                    tracing::warn!(%peer, refused_total = n, suppressed, "mllp: peer not in mllp.allow, connection refused");
                }
                drop(stream);
                continue;
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "mllp: too many connections, closing this one");
                continue;
            };
            let conn = Connection {
                routes: routes.clone(),
                max: self.max_message_bytes,
                idle: self.idle_timeout,
                peer,
                seen: Vec::new(),
                log: RateLimitedLog::new(),
            };
            let cancel = cancel.clone();
            let tls = acceptor.clone();
            let (failed, log) = (self.failed_handshakes.clone(), handshake_log.clone());
            tracker.spawn(async move {
                let _ = stream.set_nodelay(true);
                match tls {
                    None => conn.serve(stream, cancel).await,
                    Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => conn.serve(tls, cancel).await,
                        Ok(Err(e)) => handshake_failed(&failed, &log, peer, &e.to_string()),
                        Err(_) => handshake_failed(&failed, &log, peer, "no TLS handshake within 10 s"),
                    },
                }
                drop(permit);
            });
        }
        tracker.close();
        tracker.wait().await;
    }
}

/// One route's shared state: several connections may carry the same device (a gateway reconnecting).
#[derive(Debug)]
struct Route {
    source: SourceId,
    tx: SourceSender,
    /// The only peer this device is accepted from, if pinned.
    pin: Option<IpAddr>,
    state: Mutex<RouteState>,
}

#[derive(Debug, Default)]
struct RouteState {
    connections: usize,
    counters: Counters,
    dirty: bool,
}

impl Route {
    fn new(source: SourceId, tx: SourceSender, pin: Option<IpAddr>) -> Self {
        Route { source, tx, pin, state: Mutex::new(RouteState::default()) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut RouteState) -> T) -> T {
        // A poisoned lock only means another connection task panicked mid-update; the counts are still usable.
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Link events wait for room in the inbox (bounded): a lost `Disconnected` would hide a technical alarm.
    async fn link(&self, state: LinkState, reason: Option<String>) {
        let event = SourceEvent::Link { source: self.source.clone(), state, reason, at: Utc::now() };
        if !matches!(tokio::time::timeout(INBOX_WAIT, self.tx.send(event.into())).await, Ok(Ok(()))) {
            tracing::warn!(source = %self.source, "bed inbox full or closed: link event {state:?} not delivered");
        }
    }
}

/// Sends each route's changed counters at most once per [`COUNTERS_INTERVAL`].
async fn flush_counters(routes: Arc<HashMap<String, Route>>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(COUNTERS_INTERVAL);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        for route in routes.values() {
            let event = route.with(|s| {
                s.dirty.then(|| SourceEvent::Counters {
                    source: route.source.clone(),
                    frames_ok: s.counters.frames_ok,
                    frames_bad: s.counters.frames_bad,
                    values_rejected: s.counters.values_rejected,
                    last_error: s.counters.last_error.clone(),
                    at: Utc::now(),
                })
            });
            if let Some(event) = event {
                if route.tx.try_send(event.into()).is_ok() {
                    route.with(|s| s.dirty = false);
                }
            }
        }
    }
}

struct Connection {
    routes: Arc<HashMap<String, Route>>,
    max: usize,
    idle: Duration,
    peer: SocketAddr,
    /// Routes this connection has carried: they get `Disconnected` when it closes (if no other connection
    /// carries them).
    seen: Vec<String>,
    log: RateLimitedLog,
}

/// Counts a failed TLS handshake and logs it rate-limited.
fn handshake_failed(failed: &AtomicU64, log: &Mutex<RateLimitedLog>, peer: SocketAddr, why: &str) {
    let n = failed.fetch_add(1, Ordering::Relaxed) + 1;
    let allowed = log.lock().unwrap_or_else(|e| e.into_inner()).allow();
    if let Some(suppressed) = allowed {
        let why = bounded(why, MAX_ERROR_BYTES);
        tracing::warn!(%peer, failed_total = n, suppressed, "mllp: TLS handshake failed: {why}");
    }
}

impl Connection {
    async fn serve<S>(mut self, stream: S, cancel: CancellationToken)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        let mut reader = FramedRead::new(read, MllpCodec::new(self.max));
        let mut writer = FramedWrite::new(write, MllpCodec::new(self.max));
        tracing::debug!(peer = %self.peer, "mllp connection");
        let reason = loop {
            let deadline = Instant::now() + self.idle;
            let item = tokio::select! {
                _ = cancel.cancelled() => break "listener shutting down".to_owned(),
                _ = tokio::time::sleep_until(deadline) => break format!("idle for {} s", self.idle.as_secs()),
                item = reader.next() => item,
            };
            let ack = match item {
                None => break "connection closed by the device".to_owned(),
                Some(Err(e)) => break format!("read error: {e}"),
                Some(Ok(Err(e))) => self.framing_error(e),
                Some(Ok(Ok(msg))) => self.message(msg, &cancel).await,
            };
            let Some(ack) = ack else { continue };
            match tokio::time::timeout(WRITE_TIMEOUT, writer.send(ack.as_slice())).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break format!("write error: {e}"),
                Err(_) => break "peer does not read its ACKs".to_owned(),
            }
        };
        tracing::debug!(peer = %self.peer, "mllp connection ends: {reason}");
        for id in &self.seen {
            if let Some(route) = self.routes.get(id) {
                let last = route.with(|s| {
                    s.connections -= 1;
                    s.connections == 0
                });
                if last {
                    route.link(LinkState::Disconnected, Some(format!("mllp {}: {reason}", self.peer))).await;
                }
            }
        }
    }

    /// Framing errors: an over-long message gets AE (its sender waits for an answer); bytes between frames get
    /// none (there is no message to answer).
    fn framing_error(&mut self, e: DecodeError) -> Option<Vec<u8>> {
        self.warn(&e.to_string());
        match e {
            DecodeError::TooLong(_) => Some(hl7::build_ack(
                None,
                AckCode::Error,
                Some((ErrorCode::ApplicationInternal, &e.to_string())),
                Utc::now(),
            )),
            DecodeError::Malformed(_) => None,
        }
    }

    async fn message(&mut self, msg: Bytes, cancel: &CancellationToken) -> Option<Vec<u8>> {
        let now = Utc::now();
        let routes = Arc::clone(&self.routes);
        let oru = match hl7::parse_oru(&msg) {
            Ok(oru) => oru,
            Err(e) => {
                self.warn(&e.to_string());
                let header = hl7::parse_header(&msg).ok();
                // A broken message from a known device still counts against that device.
                if let Some(route) = header.as_ref().and_then(|h| route_of(&routes, h)) {
                    route.with(|s| {
                        s.counters.frames_bad += 1;
                        s.counters.last_error = Some(bounded(&e.to_string(), MAX_ERROR_BYTES));
                        s.dirty = true;
                    });
                }
                return Some(hl7::build_ack(
                    header.as_ref(),
                    e.ack_code(),
                    Some((e.error_code(), &e.to_string())),
                    now,
                ));
            }
        };
        let Some(route) = route_of(&routes, &oru.header) else {
            let id = oru.header.device_id.clone().unwrap_or_default();
            let reason = if id.is_empty() {
                "no device id in MSH-3".to_owned()
            } else {
                format!("unknown device id '{id}' (no source has this device_id)")
            };
            self.warn(&reason);
            return Some(hl7::build_ack(
                Some(&oru.header),
                AckCode::Reject,
                Some((ErrorCode::UnknownKey, &reason)),
                now,
            ));
        };
        if let Some(pin) = route.pin.filter(|pin| *pin != self.peer.ip().to_canonical()) {
            let id = oru.header.device_id.clone().unwrap_or_default();
            let reason = format!("device '{id}' is accepted only from {pin}, not from {}", self.peer.ip());
            route.with(|s| {
                s.counters.frames_bad += 1;
                s.counters.last_error = Some(bounded(&reason, MAX_ERROR_BYTES));
                s.dirty = true;
            });
            self.warn(&reason);
            return Some(hl7::build_ack(
                Some(&oru.header),
                AckCode::Reject,
                Some((ErrorCode::UnknownKey, &reason)),
                now,
            ));
        }
        let key = oru.header.device_id.as_deref().unwrap_or_default().to_ascii_uppercase();
        if !self.seen.contains(&key) {
            self.seen.push(key);
            let first = route.with(|s| {
                s.connections += 1;
                s.connections == 1
            });
            if first {
                route.link(LinkState::Connected, Some(format!("mllp {}", self.peer))).await;
            }
        }
        let mut frame = oru.frame;
        let rejected = plausibility::check(&mut frame);
        route.with(|s| {
            s.counters.frames_ok += 1;
            s.counters.values_rejected += rejected.len() as u64;
            if let Some(r) = rejected.last() {
                s.counters.last_error = Some(bounded(&r.to_string(), MAX_ERROR_BYTES));
            }
            s.dirty = true;
        });
        for r in &rejected {
            self.warn(&r.to_string());
        }
        let event = SourceEvent::Frame { source: route.source.clone(), frame, received: now };
        let sent = tokio::select! {
            _ = cancel.cancelled() => Err("Vigil is shutting down"),
            r = tokio::time::timeout(INBOX_WAIT, route.tx.send(event.into())) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err("the bed for this device is not running"),
                Err(_) => Err("the bed for this device is busy; send again"),
            },
        };
        Some(match sent {
            Ok(()) => hl7::build_ack(Some(&oru.header), AckCode::Accept, None, now),
            Err(reason) => {
                hl7::build_ack(Some(&oru.header), AckCode::Error, Some((ErrorCode::ApplicationInternal, reason)), now)
            }
        })
    }

    fn warn(&mut self, what: &str) {
        if let Some(suppressed) = self.log.allow() {
            let what = bounded(what, MAX_ERROR_BYTES);
            tracing::warn!(peer = %self.peer, suppressed, "mllp: {what}");
        }
    }
}

fn route_of<'a>(routes: &'a HashMap<String, Route>, header: &MessageHeader) -> Option<&'a Route> {
    let id = header.device_id.as_deref()?.to_ascii_uppercase();
    routes.get(&id)
}
