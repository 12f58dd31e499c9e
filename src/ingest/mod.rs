//! Transports: bytes from serial ports, the MLLP listener and the in-process simulator become [`SourceEvent`]s
//! for a bed's inbox. Decoding lives in [`protocol`].
//!
//! The serial and simulated transports end in the same [`pump`]: read, decode, check plausibility, count, log
//! rate-limited, emit. The MLLP listener has its own loop per connection ([`mllp_listener`]: it routes each
//! message to a bed by device id and answers ACKs), under the same rules.
//! Nothing a device sends can end a pump except the end of its byte stream: malformed frames and impossible
//! values are counted and skipped, buffers are bounded by each decoder's maximum, and counters reach the bed at
//! most about once a second, so a garbage flood on one port cannot flood that bed's inbox or slow other beds.

pub mod mllp_listener;
pub mod protocol;
pub mod serial;
pub mod sim;

use std::fmt;
use std::time::Duration;

use bytes::BytesMut;
use chrono::Utc;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::sync::CancellationToken;

pub use mllp_listener::MllpListener;

use crate::config::DeviceKind;
use crate::event::LinkState;
use crate::vitals::{BedId, Timestamp};
use protocol::hl7::{Hl7Decoder, PendingAck};
use protocol::masimo::MasimoDecoder;
use protocol::nonin::{HandshakeReply, NoninDecoder};
use protocol::{mllp, plausibility, DecodeError, Frame};

/// Which source of which bed: `chair-1/0` is the first source configured for `chair-1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceId {
    /// The bed.
    pub bed: BedId,
    /// Index of the source in the bed's `sources` list.
    pub index: usize,
}

impl SourceId {
    /// A source id.
    pub fn new(bed: impl Into<BedId>, index: usize) -> Self {
        SourceId { bed: bed.into(), index }
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.bed, self.index)
    }
}

/// What a source tells its bed.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceEvent {
    /// The link changed state. `Disconnected` is a technical alarm condition for the bed.
    Link {
        /// The source.
        source: SourceId,
        /// The new state.
        state: LinkState,
        /// Why, in words a technician can act on (`cannot open /dev/ttyUSB0: No such file or directory`).
        reason: Option<String>,
        /// When.
        at: Timestamp,
    },
    /// A decoded, plausibility-checked frame.
    Frame {
        /// The source.
        source: SourceId,
        /// The frame (impossible values already removed).
        frame: Frame,
        /// When Vigil received it: the time alarm logic uses.
        received: Timestamp,
    },
    /// Error counters, sent when they change, at most about once a second per source.
    Counters {
        /// The source.
        source: SourceId,
        /// Frames decoded.
        frames_ok: u64,
        /// Frames that could not be decoded (including over-long ones).
        frames_bad: u64,
        /// Values removed as impossible.
        values_rejected: u64,
        /// The last decode error or rejection.
        last_error: Option<String>,
        /// When.
        at: Timestamp,
    },
}

impl SourceEvent {
    /// The source the event is about.
    pub fn source(&self) -> &SourceId {
        match self {
            SourceEvent::Link { source, .. }
            | SourceEvent::Frame { source, .. }
            | SourceEvent::Counters { source, .. } => source,
        }
    }
}

/// Errors of the transports (the decoders report [`DecodeError`] items instead).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// `mllp.listen` is not an address.
    #[error("mllp.listen / mllp.allow: '{0}' is not an address like 127.0.0.1:2575 or a block like 10.1.2.0/24")]
    BadListenAddress(String),
    /// The MLLP port could not be bound (in use, no permission).
    #[error("mllp.listen: cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the config.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A serial source without a path.
    #[error("source {0}: a serial source needs a path")]
    NoSerialPath(SourceId),
}

/// Why a [`pump`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PumpEnd {
    /// The cancellation token fired.
    Cancelled,
    /// The byte stream ended (EOF, a 0-byte read): for a serial port, a disconnect.
    Eof,
    /// Reading failed (for a serial port, a disconnect), with the error text.
    ReadError(String),
    /// Writing an HL7 ACK back failed (for a serial port, a disconnect), with the error text.
    WriteError(String),
    /// The bed's inbox is gone: the bed task ended, so nobody listens.
    ReceiverClosed,
}

impl PumpEnd {
    /// Words for a Link event's reason.
    pub fn reason(&self) -> String {
        match self {
            PumpEnd::Cancelled => "shutting down".into(),
            PumpEnd::Eof => "end of stream (device closed or unplugged)".into(),
            PumpEnd::ReadError(e) => format!("read error: {e}"),
            PumpEnd::WriteError(e) => format!("write error: {e}"),
            PumpEnd::ReceiverClosed => "bed inbox closed".into(),
        }
    }
}

/// A source's counters, kept across reconnects by the transport that owns them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames decoded.
    pub frames_ok: u64,
    /// Frames that could not be decoded.
    pub frames_bad: u64,
    /// Values removed as impossible.
    pub values_rejected: u64,
    /// The last decode error or rejection.
    pub last_error: Option<String>,
}

impl Counters {
    fn event(&self, source: &SourceId) -> SourceEvent {
        SourceEvent::Counters {
            source: source.clone(),
            frames_ok: self.frames_ok,
            frames_bad: self.frames_bad,
            values_rejected: self.values_rejected,
            last_error: self.last_error.clone(),
            at: Utc::now(),
        }
    }
}

/// How often counters may reach the bed.
pub const COUNTERS_INTERVAL: Duration = Duration::from_secs(1);

/// Counters plus the bookkeeping that limits how often they are sent.
#[derive(Debug, Default)]
pub struct CounterState {
    /// The counts.
    pub counters: Counters,
    dirty: bool,
    last_sent: Option<Instant>,
}

impl CounterState {
    /// When the pending change may be sent, if there is one.
    fn due(&self) -> Option<Instant> {
        self.dirty.then(|| self.last_sent.map_or_else(Instant::now, |t| t + COUNTERS_INTERVAL))
    }

    /// Sends the counters if they changed and the interval has passed. Never waits: a full inbox keeps them
    /// pending, so a bed that is busy is not made busier by a noisy source.
    fn flush(&mut self, source: &SourceId, tx: &mpsc::Sender<SourceEvent>, force: bool) {
        let now = Instant::now();
        let too_soon = self.last_sent.is_some_and(|t| now < t + COUNTERS_INTERVAL);
        if !self.dirty || (!force && too_soon) {
            return;
        }
        // A full inbox counts as an attempt: the counters stay pending and are retried an interval later.
        self.last_sent = Some(now);
        if tx.try_send(self.counters.event(source)).is_ok() {
            self.dirty = false;
        }
    }
}

/// Logs at most a few messages per window and then a count of what it held back: a garbage flood must not turn
/// into a log flood.
#[derive(Debug)]
pub struct RateLimitedLog {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Default for RateLimitedLog {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimitedLog {
    const WINDOW: Duration = Duration::from_secs(10);
    const PER_WINDOW: u32 = 5;

    /// A fresh limiter.
    pub const fn new() -> Self {
        RateLimitedLog { window_start: None, logged: 0, suppressed: 0 }
    }

    /// Returns whether to log now, and how many messages were suppressed before this one.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.window_start.is_none_or(|s| now.duration_since(s) >= Self::WINDOW) {
            self.window_start = Some(now);
            self.logged = 0;
        }
        if self.logged < Self::PER_WINDOW {
            self.logged += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// State a transport keeps across the pumps of one source (one per connection or open of the port).
#[derive(Debug, Default)]
pub struct PumpState {
    /// Counters and their send bookkeeping.
    pub counters: CounterState,
    log: RateLimitedLog,
}

/// One decoder for any device kind, so every transport can carry every protocol.
#[derive(Debug)]
pub enum AnyDecoder {
    /// Masimo ASCII lines.
    Masimo(MasimoDecoder),
    /// Nonin format #8.
    Nonin(NoninDecoder),
    /// HL7 in MLLP framing.
    Hl7(Hl7Decoder),
}

impl AnyDecoder {
    /// The decoder for a device kind, with default limits (HL7: 1 MiB, the `[mllp]` default).
    pub fn for_device(device: DeviceKind) -> Self {
        match device {
            DeviceKind::Masimo => AnyDecoder::Masimo(MasimoDecoder::new()),
            DeviceKind::Nonin => AnyDecoder::Nonin(NoninDecoder::new()),
            DeviceKind::Hl7 => AnyDecoder::Hl7(Hl7Decoder::new(mllp::DEFAULT_MAX)),
        }
    }

    /// The decoder for a device kind that also prepares HL7 ACKs (for links where the device waits for them).
    pub fn for_device_with_acks(device: DeviceKind) -> Self {
        match device {
            DeviceKind::Hl7 => AnyDecoder::Hl7(Hl7Decoder::with_acks(mllp::DEFAULT_MAX)),
            other => Self::for_device(other),
        }
    }

    fn take_handshake_reply(&mut self) -> Option<HandshakeReply> {
        match self {
            AnyDecoder::Nonin(d) => d.take_handshake_reply(),
            _ => None,
        }
    }

    fn take_ack(&mut self) -> Option<PendingAck> {
        match self {
            AnyDecoder::Hl7(d) => d.take_ack(),
            _ => None,
        }
    }
}

impl Decoder for AnyDecoder {
    type Item = Result<Frame, DecodeError>;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        match self {
            AnyDecoder::Masimo(d) => d.decode(buf),
            AnyDecoder::Nonin(d) => d.decode(buf),
            AnyDecoder::Hl7(d) => d.decode(buf),
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        match self {
            AnyDecoder::Masimo(d) => d.decode_eof(buf),
            AnyDecoder::Nonin(d) => d.decode_eof(buf),
            AnyDecoder::Hl7(d) => d.decode_eof(buf),
        }
    }
}

/// Read size: a second of Masimo or Nonin output is far smaller, and an HL7 message usually fits.
const READ_CAPACITY: usize = 4096;

/// Reads `reader` until it ends or `cancel` fires: decodes with the decoder for `device`, removes impossible
/// values, counts, logs errors rate-limited and emits [`SourceEvent::Frame`] and [`SourceEvent::Counters`]. Link
/// events are the transport's business. Counters start at zero; transports that reconnect use [`pump_with`].
pub async fn pump<R: AsyncRead + Unpin>(
    reader: R,
    device: DeviceKind,
    source: &SourceId,
    tx: &mpsc::Sender<SourceEvent>,
    cancel: &CancellationToken,
) -> PumpEnd {
    pump_with(reader, AnyDecoder::for_device(device), source, tx, cancel, &mut PumpState::default(), None).await
}

/// Where a pump writes HL7 ACKs back to the device (MLLP over serial).
pub type AckWriter<'a> = &'a mut (dyn AsyncWrite + Unpin + Send);

/// How long writing one ACK may take (a serial line with hardware flow control can stall).
const ACK_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// [`pump`] with a chosen decoder, counters that outlive this stream (serial reconnects), and optionally a
/// writer for the ACKs an [`AnyDecoder::for_device_with_acks`] HL7 decoder prepares: AA only after the frame is
/// in the bed's inbox, AE/AR at once.
pub async fn pump_with<R: AsyncRead + Unpin>(
    reader: R,
    decoder: AnyDecoder,
    source: &SourceId,
    tx: &mpsc::Sender<SourceEvent>,
    cancel: &CancellationToken,
    state: &mut PumpState,
    mut acks: Option<AckWriter<'_>>,
) -> PumpEnd {
    let mut framed = FramedRead::with_capacity(reader, decoder, READ_CAPACITY);
    let end = loop {
        let due = state.counters.due();
        let item = tokio::select! {
            biased;
            _ = cancel.cancelled() => break PumpEnd::Cancelled,
            _ = sleep_until_opt(due) => {
                state.counters.flush(source, tx, false);
                continue;
            }
            item = framed.next() => item,
        };
        match item {
            None => break PumpEnd::Eof,
            Some(Err(e)) => break PumpEnd::ReadError(e.to_string()),
            Some(Ok(Err(e))) => {
                state.counters.counters.frames_bad += 1;
                note_error(state, source, e.to_string());
            }
            Some(Ok(Ok(mut frame))) => {
                state.counters.counters.frames_ok += 1;
                state.counters.dirty = true;
                for r in plausibility::check(&mut frame) {
                    state.counters.counters.values_rejected += 1;
                    note_error(state, source, r.to_string());
                }
                let event = SourceEvent::Frame { source: source.clone(), frame, received: Utc::now() };
                // Frames wait for room in the inbox (backpressure on this source only); cancellation still wins.
                let sent = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break PumpEnd::Cancelled,
                    r = tx.send(event) => r,
                };
                if sent.is_err() {
                    break PumpEnd::ReceiverClosed;
                }
            }
        }
        if let (Some(ack), Some(w)) = (framed.decoder_mut().take_ack(), acks.as_deref_mut()) {
            let bytes = mllp::frame(&ack.build(Utc::now()));
            match tokio::time::timeout(ACK_WRITE_TIMEOUT, w.write_all(&bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break PumpEnd::WriteError(format!("cannot write ACK: {e}")),
                Err(_) => note_error(state, source, "ACK not written within 5 s (line stalled)".into()),
            }
        }
        if let Some(reply) = framed.decoder_mut().take_handshake_reply() {
            match reply {
                HandshakeReply::Ack => tracing::info!(source = %source, "nonin accepted data format #8"),
                HandshakeReply::Nak => {
                    tracing::warn!(source = %source, "nonin refused data format #8 (NAK)");
                    state.counters.counters.last_error = Some("nonin refused data format #8 (NAK)".into());
                    state.counters.dirty = true;
                }
            }
        }
        state.counters.flush(source, tx, false);
    };
    // The final counts of this stream are worth one extra event even inside the interval.
    state.counters.flush(source, tx, true);
    end
}

/// Longest error text kept for a device (`last_error` on the dashboard and MQTT), bytes.
pub const MAX_ERROR_BYTES: usize = 256;

/// `text` cut to at most `max` bytes on a character boundary, with `…` when cut: device input reaches payloads
/// and logs only this long, so one huge field cannot make an MQTT packet too large to send.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn note_error(state: &mut PumpState, source: &SourceId, error: String) {
    let error = bounded(&error, MAX_ERROR_BYTES);
    if let Some(suppressed) = state.log.allow() {
        if suppressed > 0 {
            tracing::warn!(source = %source, suppressed, "bad input: {error} ({suppressed} similar messages suppressed)");
        } else {
            tracing::warn!(source = %source, "bad input: {error}");
        }
    }
    state.counters.counters.last_error = Some(error);
    state.counters.dirty = true;
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_error_log_allows_a_few_lines_per_window_then_holds_back() {
        let mut log = RateLimitedLog::new();
        let allowed = (0..100).filter(|_| log.allow().is_some()).count();
        assert_eq!(allowed, RateLimitedLog::PER_WINDOW as usize);
        assert_eq!(log.suppressed, 100 - u64::from(RateLimitedLog::PER_WINDOW));
    }

    #[tokio::test]
    async fn counters_go_out_at_once_then_not_again_inside_the_interval_and_stay_pending_when_the_inbox_is_full() {
        let source = SourceId::new("chair-1", 0);
        let (tx, mut rx) = mpsc::channel(1);
        let mut state = CounterState::default();
        state.counters.frames_bad = 1;
        state.dirty = true;
        state.flush(&source, &tx, false);
        assert!(matches!(rx.try_recv(), Ok(SourceEvent::Counters { frames_bad: 1, .. })));
        state.counters.frames_bad = 2;
        state.dirty = true;
        state.flush(&source, &tx, false);
        assert!(rx.try_recv().is_err(), "inside the interval nothing is sent");
        assert!(state.due().is_some(), "but a send is scheduled");
        // Fill the inbox: even a forced flush (end of stream) must not wait, and keeps the counters pending.
        tx.try_send(state.counters.event(&source)).unwrap();
        state.flush(&source, &tx, true);
        assert!(state.dirty);
        rx.try_recv().unwrap();
        state.flush(&source, &tx, true);
        assert!(matches!(rx.try_recv(), Ok(SourceEvent::Counters { frames_bad: 2, .. })));
        assert!(!state.dirty);
    }
}
