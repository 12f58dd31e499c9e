//! A reconnecting byte-stream link, shared by serial ports and TCP device servers: open, report `Connected`, pump
//! with the decoder for the source ([`AnyDecoder::for_source`]: HL7 ACKs, the IntelliVue session, the S/5
//! requests; the Nonin format selection when configured), report `Disconnected` with the reason, wait with
//! exponential backoff capped at [`MAX_BACKOFF`], open again. A device that stays missing is reported once, not on
//! every retry. Counters survive reconnects.

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{pump_with, AnyDecoder, DeviceWriter, PumpEnd, PumpState, SourceEvent, SourceId, SourceSender};
use crate::config::{DeviceKind, SourceConfig};
use crate::event::LinkState;
use crate::ingest::protocol::nonin::SELECT_FORMAT_8;

/// First retry delay after a failed open or a disconnect.
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest retry delay: a replugged monitor is back within seconds.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs one link until `cancel` fires or the bed's inbox closes. `open` opens the stream (the error is the
/// reason shown to the technician); `what` names the endpoint in logs and reasons (`/dev/ttyUSB0`,
/// `10.1.2.40:4001`); `give_up_when_silent` ends a connection that stays silent for `silence_alarm_s` (tcp).
pub async fn run<S, F, Fut>(
    source: SourceId,
    cfg: SourceConfig,
    what: String,
    tx: SourceSender,
    cancel: CancellationToken,
    give_up_when_silent: bool,
    mut open: F,
) where
    S: AsyncRead + AsyncWrite + Send,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<S, String>>,
{
    let mut state = PumpState {
        give_up_after: give_up_when_silent.then(|| Duration::from_secs(cfg.silence_alarm_s())),
        ..PumpState::default()
    };
    let mut backoff = MIN_BACKOFF;
    // The last state and reason reported, so a device that stays missing is reported once.
    let mut reported: Option<(LinkState, String)> = None;
    if !link(&tx, &source, LinkState::Connecting, None, &mut reported).await {
        return;
    }
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            r = open() => r,
        };
        match opened {
            Ok(stream) => {
                tracing::info!(source = %source, what, "link open");
                if !link(&tx, &source, LinkState::Connected, None, &mut reported).await {
                    return;
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
                // be associated and polled, an S/5 to be asked for its records.
                let decoder = AnyDecoder::for_source(&cfg);
                let back: Option<DeviceWriter<'_>> = decoder.talks().then_some(&mut writer);
                let end = pump_with(reader, decoder, &source, &tx, &cancel, &mut state, back).await;
                match end {
                    PumpEnd::Cancelled => {
                        let _ = tx.try_send(link_event(&source, LinkState::Disconnected, Some(end.reason())).into());
                        return;
                    }
                    PumpEnd::ReceiverClosed => return,
                    PumpEnd::Eof | PumpEnd::ReadError(_) | PumpEnd::WriteError(_) | PumpEnd::Silent(_) => {
                        tracing::warn!(source = %source, what, "link lost: {}", end.reason());
                        let reason = Some(format!("{what}: {}", end.reason()));
                        if !link(&tx, &source, LinkState::Disconnected, reason, &mut reported).await {
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                let reason = format!("cannot open {what}: {e}");
                if reported.as_ref().is_none_or(|(_, r)| *r != reason) {
                    tracing::warn!(source = %source, "{reason}; retrying");
                }
                if !link(&tx, &source, LinkState::Disconnected, Some(reason), &mut reported).await {
                    return;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn link_event(source: &SourceId, state: LinkState, reason: Option<String>) -> SourceEvent {
    SourceEvent::Link { source: source.clone(), state, reason, at: Utc::now() }
}

/// Sends a link event unless it repeats the last one. False when the inbox is closed.
async fn link(
    tx: &SourceSender,
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
    tx.send(link_event(source, state, reason).into()).await.is_ok()
}
