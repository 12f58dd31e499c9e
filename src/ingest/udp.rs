//! The Philips IntelliVue LAN interface: Data Export over UDP to the monitor's port 24105 (`address`). One
//! socket per source, connected to the monitor, so only its datagrams are read; the IntelliVue session runs over
//! it exactly as on the MIB/RS-232 port, unframed ([`session::Link::Lan`](super::protocol::intellivue::session)).
//! UDP has no connection to lose: the session tells when the monitor stops answering (`monitor_disconnected` with
//! the reason) and associates again. A socket error (the monitor's host unreachable) reopens the socket with
//! backoff ([`link`](super::link)). The connect indication the monitor broadcasts on port 24005 is not listened
//! for: the configured address is enough.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{link, IngestError, SourceEvent, SourceId};
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

/// Runs one udp source until `cancel` fires. Returns early only for a config without an address or when the
/// bed's inbox is closed.
pub async fn run(
    source: SourceId,
    cfg: SourceConfig,
    tx: mpsc::Sender<SourceEvent>,
    cancel: CancellationToken,
) -> Result<(), IngestError> {
    let address = cfg.address.clone().ok_or_else(|| IngestError::NoUdpAddress(source.clone()))?;
    let target = address.clone();
    let open = move || {
        let target = target.clone();
        async move { DatagramStream::connect(&target).await.map_err(|e| e.to_string()) }
    };
    link::run(source, cfg, address, tx, cancel, false, open).await;
    Ok(())
}
