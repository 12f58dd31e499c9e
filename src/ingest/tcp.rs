//! Serial device servers (Moxa NPort, Lantronix, Digi) in "TCP server" mode: Vigil connects to `address` and
//! reads the device's serial bytes from the socket, with the same decoders, requests and ACKs as a serial port
//! (every decoder works on every transport). The socket is reopened with backoff like a serial port
//! ([`link`](super::link)); a refused or dropped connection is `Link Disconnected` at once, and a connection
//! that stays silent for `silence_alarm_s` is closed and reopened (a device server that lost power leaves a
//! half-open socket that never errors), after the bed has already raised `monitor_disconnected` for the silence.
//! TCP keepalive is on, so a dead peer also ends the connection at the kernel's pace. RFC 2217 (Telnet COM port
//! control) is not spoken: set the device server's serial side (baud, parity, flow) in its own configuration.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{link, IngestError, SourceId, SourceSender};
use crate::config::SourceConfig;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one tcp source until `cancel` fires. Returns early only for a config without an address or when the
/// bed's inbox is closed.
pub async fn run(
    source: SourceId,
    cfg: SourceConfig,
    tx: SourceSender,
    cancel: CancellationToken,
) -> Result<(), IngestError> {
    let address = cfg.address.clone().ok_or_else(|| IngestError::NoTcpAddress(source.clone()))?;
    let target = address.clone();
    let open = move || {
        let target = target.clone();
        async move {
            let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
            };
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    };
    link::run(source, cfg, address, tx, cancel, true, open).await;
    Ok(())
}
