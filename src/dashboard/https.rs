//! The dashboard over HTTPS (`dashboard.tls`): an accept loop with a rustls handshake per connection, each
//! connection served by hyper's HTTP/1.1 server with the same axum app as plain HTTP.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections at once (more are closed at accept), a handshake must finish
//! within [`HANDSHAKE_TIMEOUT`] and request headers arrive within [`HEADER_TIMEOUT`], so a peer that connects and
//! says nothing (or speaks plain HTTP to the TLS port, which fails the handshake at once) ties up nothing. Failed
//! handshakes are counted and logged rate-limited. On cancellation the listener stops and open connections finish
//! their current request (event streams end on their own cancellation).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

/// HTTPS connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// A TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's headers must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections may take to finish after shutdown.
const DRAIN: Duration = Duration::from_secs(3);

/// Serves `app` over TLS on `listener` until `cancel` fires.
pub(super) async fn serve(listener: TcpListener, tls: Arc<ServerConfig>, app: Router, cancel: CancellationToken) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let failed = Arc::new(Failures::default());
    let tracker = TaskTracker::new();
    while let Some((stream, peer)) = crate::listen::accept_until(&listener, &cancel, "dashboard").await {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = MAX_CONNECTIONS, "dashboard: too many HTTPS connections, closing this one");
            continue;
        };
        let (acceptor, app, cancel, failed) = (acceptor.clone(), app.clone(), cancel.clone(), failed.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return handshake_failed(&failed, peer, &e.to_string()),
                Err(_) => return handshake_failed(&failed, peer, "no handshake within 10 s"),
            };
            serve_connection(tls, peer, app, cancel).await;
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(DRAIN, tracker.wait()).await;
}

async fn serve_connection<S>(io: S, peer: SocketAddr, app: Router, cancel: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        // What `into_make_service_with_connect_info` gives the plain listener: handlers see the peer address.
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().call(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "dashboard: HTTPS connection ended: {e}");
    }
}

#[derive(Default)]
struct Failures {
    count: AtomicU64,
    log: Mutex<crate::ingest::RateLimitedLog>,
}

/// Counts a failed handshake and logs it rate-limited, so a scanner cannot flood the log.
fn handshake_failed(failed: &Failures, peer: SocketAddr, why: &str) {
    let n = failed.count.fetch_add(1, Ordering::Relaxed) + 1;
    let allowed = failed.log.lock().unwrap_or_else(|e| e.into_inner()).allow();
    if let Some(suppressed) = allowed {
        let why: String = why.chars().take(200).flat_map(char::escape_debug).collect();
        tracing::info!(%peer, failed_total = n, suppressed, "dashboard: TLS handshake failed: {why}");
    }
}
