//! The Philips IntelliVue LAN interface: Data Export over UDP to the monitor's port 24105 (`address`). One
//! socket per source, connected to the monitor, so only its datagrams are read; the IntelliVue session runs over
//! it exactly as on the MIB/RS-232 port, unframed ([`session::Link::Lan`](super::protocol::intellivue::session)).
//! UDP has no connection to lose: the session tells when the monitor stops answering (`monitor_disconnected` with
//! the reason) and associates again. A socket error (the monitor's host unreachable) reopens the socket with
//! backoff ([`link`](super::link)).
//!
//! Without an `address` the source discovers its monitor: it listens on `discover_listen` (default
//! `0.0.0.0:24005`) for the connect indication every IntelliVue on the LAN broadcasts, takes the first one whose
//! address is `monitor_ip` (any, if unset), and associates with the address and Data Export port it names (the
//! sender's address and 24105 where it names none). Each reconnect discovers again (a restarted monitor may
//! have a new address). No connect indication within `silence_alarm_s` is an open that failed: the source
//! reports `disconnected` with the reason, and listens again after the backoff.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::protocol::intellivue;
use super::{link, IngestError, SourceId, SourceSender};
use crate::config::SourceConfig;

/// Largest datagram read (Data Export messages stay far below it).
const MAX_DATAGRAM: usize = 64 * 1024;

/// A connected UDP socket as a byte stream: each datagram read is appended whole (never cut by the reader's
/// buffer), each write is sent as one datagram.
#[derive(Debug)]
pub struct DatagramStream {
    socket: UdpSocket,
    pending: Vec<u8>,
    at: usize,
}

impl DatagramStream {
    /// Binds an ephemeral port of the address family of `address` and connects it there.
    pub async fn connect(address: &str) -> io::Result<DatagramStream> {
        let target = tokio::net::lookup_host(address)
            .await?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{address} resolves to nothing")))?;
        let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let socket = UdpSocket::bind(bind).await?;
        socket.connect(target).await?;
        Ok(DatagramStream { socket, pending: Vec::new(), at: 0 })
    }
}

impl AsyncRead for DatagramStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at >= this.pending.len() {
            this.pending.resize(MAX_DATAGRAM, 0);
            let mut datagram = ReadBuf::new(&mut this.pending);
            match this.socket.poll_recv(cx, &mut datagram) {
                Poll::Pending => {
                    this.pending.clear();
                    this.at = 0;
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = datagram.filled().len();
                    this.pending.truncate(n);
                    this.at = 0;
                }
            }
        }
        let n = (this.pending.len() - this.at).min(buf.remaining());
        buf.put_slice(&this.pending[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for DatagramStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.socket.poll_send(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Where discovery listens by default: the monitors' connect-indication broadcast port, every interface.
pub const DEFAULT_DISCOVER_LISTEN: &str = "0.0.0.0:24005";

/// Binds `listen` for connect indications, shared with other sources listening there (`SO_REUSEADDR` and
/// `SO_REUSEPORT`, so each receives every broadcast).
fn discovery_socket(listen: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(listen), socket2::Type::DGRAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&listen.into())?;
    UdpSocket::from_std(socket.into())
}

/// Waits on `socket` for a connect indication from `monitor_ip` (any, if `None`) and returns the monitor's
/// Data Export address. Datagrams that are not connect indications, or are another monitor's, are skipped.
pub async fn discover(socket: &UdpSocket, monitor_ip: Option<Ipv4Addr>) -> io::Result<SocketAddr> {
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        let Ok(ci) = intellivue::parse_connect_indication(&buf[..n]) else {
            tracing::debug!(%from, "udp discovery: a datagram that is not a connect indication");
            continue;
        };
        let ip = match (ci.ip, from.ip()) {
            (Some(ip), _) => ip,
            (None, IpAddr::V4(ip)) => ip,
            (None, IpAddr::V6(_)) => continue,
        };
        if monitor_ip.is_some_and(|want| want != ip) {
            continue;
        }
        return Ok(SocketAddr::new(IpAddr::V4(ip), ci.data_port.unwrap_or(intellivue::LAN_DATA_PORT)));
    }
}

/// Runs one udp source until `cancel` fires. Returns early only for a bad `discover_listen` or when the bed's
/// inbox is closed.
pub async fn run(
    source: SourceId,
    cfg: SourceConfig,
    tx: SourceSender,
    cancel: CancellationToken,
) -> Result<(), IngestError> {
    if let Some(address) = cfg.address.clone() {
        let target = address.clone();
        let open = move || {
            let target = target.clone();
            async move { DatagramStream::connect(&target).await.map_err(|e| e.to_string()) }
        };
        link::run(source, cfg, address, tx, cancel, false, open).await;
        return Ok(());
    }
    let listen_text = cfg.discover_listen.clone().unwrap_or_else(|| DEFAULT_DISCOVER_LISTEN.to_owned());
    let listen: SocketAddr =
        listen_text.parse().map_err(|_| IngestError::BadDiscoverListen(source.clone(), listen_text.clone()))?;
    let (monitor_ip, wait) = (cfg.monitor_ip, Duration::from_secs(cfg.silence_alarm_s()));
    let what = match monitor_ip {
        Some(ip) => format!("the IntelliVue {ip} (connect indications on {listen})"),
        None => format!("the first IntelliVue heard (connect indications on {listen})"),
    };
    let open = move || async move {
        let socket = discovery_socket(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let found = tokio::time::timeout(wait, discover(&socket, monitor_ip))
            .await
            .map_err(|_| format!("no connect indication on {listen} within {} s", wait.as_secs()))?
            .map_err(|e| e.to_string())?;
        tracing::info!(monitor = %found, "udp discovery: connect indication");
        DatagramStream::connect(&found.to_string()).await.map_err(|e| e.to_string())
    };
    link::run(source, cfg, what, tx, cancel, false, open).await;
    Ok(())
}
