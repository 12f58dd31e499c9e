//! Serial ports (RS-232, USB adapters, ptys) via tokio-serial, on the reconnecting [`link`](super::link).
//!
//! A missing device at start is not fatal: the port is retried. A 0-byte read, EOF or a read error is a
//! disconnect (a USB adapter unplug can look like endless 0-byte reads: ARCHITECTURE.md, "Known pitfalls"); the
//! bed gets `Link Disconnected`, a technical alarm, and the port is reopened with backoff. The port's settings
//! come from the source with the device's defaults ([`SourceConfig::baud`], [`SourceConfig::parity`],
//! [`SourceConfig::flow_control`]: 19200 8E1 RTS/CTS for an S/5, 9600 8N1 otherwise).

use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tokio_util::sync::CancellationToken;

use super::{link, IngestError, SourceId, SourceSender};
use crate::config::{FlowControl, Parity, SourceConfig};

pub use super::link::{MAX_BACKOFF, MIN_BACKOFF};

/// Runs one serial source until `cancel` fires. Returns early only for a config without a path or when the
/// bed's inbox is closed.
pub async fn run(
    source: SourceId,
    cfg: SourceConfig,
    tx: SourceSender,
    cancel: CancellationToken,
) -> Result<(), IngestError> {
    let path = cfg.path.clone().ok_or_else(|| IngestError::NoSerialPath(source.clone()))?;
    let settings = cfg.clone();
    let open = || {
        let result = open(&path, &settings).map_err(|e| e.to_string());
        std::future::ready(result)
    };
    link::run(source, cfg.clone(), cfg.path.clone().unwrap_or_default(), tx, cancel, false, open).await;
    Ok(())
}

fn open(path: &str, cfg: &SourceConfig) -> Result<SerialStream, tokio_serial::Error> {
    let data_bits = match cfg.data_bits.unwrap_or(8) {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let stop_bits = match cfg.stop_bits.unwrap_or(1) {
        2 => tokio_serial::StopBits::Two,
        _ => tokio_serial::StopBits::One,
    };
    let parity = match cfg.parity() {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let flow = match cfg.flow_control() {
        FlowControl::None => tokio_serial::FlowControl::None,
        FlowControl::Software => tokio_serial::FlowControl::Software,
        FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
    };
    tokio_serial::new(path, cfg.baud())
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .parity(parity)
        .flow_control(flow)
        .open_native_async()
}
