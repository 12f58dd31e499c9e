//! Serial ports (RS-232, USB adapters, ptys) via tokio-serial.
//!
//! A missing device at start is not fatal: the port is retried. A 0-byte read, EOF or a read error is a
//! disconnect (a USB adapter unplug can look like endless 0-byte reads: ARCHITECTURE.md, "Known pitfalls"); the
//! bed gets `Link Disconnected`, a technical alarm, and the port is reopened with exponential backoff capped at
//! [`MAX_BACKOFF`]. Counters survive reconnects.

use std::time::Duration;

use chrono::Utc;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_serial::{SerialPortBuilderExt, SerialStream};

use tokio_util::sync::CancellationToken;

use super::{pump_with, AnyDecoder, DeviceWriter, IngestError, PumpEnd, PumpState, SourceEvent, SourceId};
use crate::config::{DeviceKind, FlowControl, Parity, SourceConfig};
use crate::event::LinkState;
use crate::ingest::protocol::nonin::SELECT_FORMAT_8;

/// First retry delay after a failed open or a disconnect.
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest retry delay: a replugged monitor is back within seconds.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs one serial source until `cancel` fires. Returns early only for a config without a path or when the
/// bed's inbox is closed.
pub async fn run(
    source: SourceId,
    cfg: SourceConfig,
    tx: mpsc::Sender<SourceEvent>,
    cancel: CancellationToken,
) -> Result<(), IngestError> {
    let path = cfg.path.clone().ok_or_else(|| IngestError::NoSerialPath(source.clone()))?;
    let mut state = PumpState::default();
    let mut backoff = MIN_BACKOFF;
    // The last reason reported, so a port that stays missing is reported once, not on every retry.
    let mut reported: Option<(LinkState, String)> = None;
    if !link(&tx, &source, LinkState::Connecting, None, &mut reported).await {
        return Ok(());
    }
    loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        match open(&path, &cfg) {
            Ok(stream) => {
                tracing::info!(source = %source, path, "serial port open");
                if !link(&tx, &source, LinkState::Connected, None, &mut reported).await {
                    return Ok(());
                }
                backoff = MIN_BACKOFF;
                let (reader, mut writer) = tokio::io::split(stream);
                if cfg.device == DeviceKind::Nonin && cfg.nonin_select_format == Some(true) {
                    // The reply (ACK/NAK) arrives in the data stream; the Nonin decoder picks it out.
                    if let Err(e) = writer.write_all(&SELECT_FORMAT_8).await {
                        tracing::warn!(source = %source, "cannot send nonin format selection: {e}");
                    }
                }
                // HL7 over RS-232 is MLLP too: the monitor waits for an ACK per message; an IntelliVue waits to
                // be asked (association, polls).
                let decoder = AnyDecoder::for_device_talking(cfg.device);
                let back: Option<DeviceWriter<'_>> = decoder.talks().then_some(&mut writer);
                let end = pump_with(reader, decoder, &source, &tx, &cancel, &mut state, back).await;
                match end {
                    PumpEnd::Cancelled => {
                        let _ = tx.try_send(link_event(&source, LinkState::Disconnected, Some(end.reason())));
                        return Ok(());
                    }
                    PumpEnd::ReceiverClosed => return Ok(()),
                    PumpEnd::Eof | PumpEnd::ReadError(_) | PumpEnd::WriteError(_) => {
                        tracing::warn!(source = %source, path, "serial link lost: {}", end.reason());
                        let reason = Some(format!("{path}: {}", end.reason()));
                        if !link(&tx, &source, LinkState::Disconnected, reason, &mut reported).await {
                            return Ok(());
                        }
                    }
                }
            }
            Err(e) => {
                let reason = format!("cannot open {path}: {e}");
                if reported.as_ref().is_none_or(|(_, r)| *r != reason) {
                    tracing::warn!(source = %source, "{reason}; retrying");
                }
                if !link(&tx, &source, LinkState::Disconnected, Some(reason), &mut reported).await {
                    return Ok(());
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
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
    let parity = match cfg.parity.unwrap_or_default() {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let flow = match cfg.flow_control.unwrap_or_default() {
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

fn link_event(source: &SourceId, state: LinkState, reason: Option<String>) -> SourceEvent {
    SourceEvent::Link { source: source.clone(), state, reason, at: Utc::now() }
}

/// Sends a link event unless it repeats the last one. False when the inbox is closed.
async fn link(
    tx: &mpsc::Sender<SourceEvent>,
    source: &SourceId,
    state: LinkState,
    reason: Option<String>,
    reported: &mut Option<(LinkState, String)>,
) -> bool {
    let key = (state, reason.clone().unwrap_or_default());
    if reported.as_ref() == Some(&key) {
        return true;
    }
    *reported = Some(key);
    tx.send(link_event(source, state, reason)).await.is_ok()
}
