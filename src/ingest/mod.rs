//! Transports: bytes from serial ports, the MLLP listener and the in-process simulator become [`SourceEvent`]s
//! for a bed's inbox. Decoding lives in [`protocol`].
//!
//! The serial and simulated transports end in the same [`pump`]: read, decode, check plausibility, count, log
//! rate-limited, emit. The MLLP listener has its own loop per connection ([`mllp_listener`]: it routes each
//! message to a bed by device id and answers ACKs), under the same rules.
//! Nothing a device sends can end a pump except the end of its byte stream: malformed frames and impossible
//! values are counted and skipped, buffers are bounded by each decoder's maximum, and counters reach the bed at
//! most about once a second, so a garbage flood on one port cannot flood that bed's inbox or slow other beds.

pub mod link;
pub mod mllp_listener;
pub mod protocol;
pub mod serial;
pub mod sim;
pub mod tcp;
pub mod udp;

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
use protocol::intellivue::session::Link as IntelliVueLink;
use protocol::intellivue::IntelliVueDecoder;
use protocol::masimo::MasimoDecoder;
use protocol::nonin::{HandshakeReply, NoninDecoder};
use protocol::s5::S5Decoder;
use protocol::{mllp, plausibility, DecodeError, Frame, LinkChange, Talker};

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

/// Where a source sends its events: its bed's inbox. The events are boxed because tokio allocates a channel in
/// blocks of 32 slots and keeps about two per inbox: 16-byte slots instead of 88-byte ones are about 4.5 KB less
/// per bed (`docs/performance.md`).
pub type SourceSender = mpsc::Sender<Box<SourceEvent>>;
/// A bed's inbox, as [`SourceSender`] fills it.
pub type SourceReceiver = mpsc::Receiver<Box<SourceEvent>>;

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
    /// A tcp source without an address.
    #[error("source {0}: a tcp source needs an address")]
    NoTcpAddress(SourceId),
    /// A udp source's `discover_listen` is not ip:port.
    #[error("source {0}: discover_listen '{1}' is not ip:port")]
    BadDiscoverListen(SourceId, String),
}

/// Runs a `serial`, `tcp` or `udp` source until `cancel` fires (other kinds return at once: the MLLP listener and the
/// simulator run them).
pub async fn run_source(
    source: SourceId,
    cfg: crate::config::SourceConfig,
    tx: SourceSender,
    cancel: CancellationToken,
) -> Result<(), IngestError> {
    use crate::config::SourceKind;
    match cfg.kind {
        SourceKind::Serial => serial::run(source, cfg, tx, cancel).await,
        SourceKind::Tcp => tcp::run(source, cfg, tx, cancel).await,
        SourceKind::Udp => udp::run(source, cfg, tx, cancel).await,
        SourceKind::Mllp | SourceKind::Simulated => Ok(()),
    }
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
    /// Writing back to the device (an HL7 ACK, an IntelliVue or S/5 request) failed (for a serial port, a
    /// disconnect), with the error text.
    WriteError(String),
    /// Nothing was decoded for this long: the pump gave up on the connection (a device server's socket that went
    /// silent may be half-open).
    Silent(Duration),
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
            PumpEnd::Silent(d) => format!("no frame for {} s (reconnecting)", d.as_secs()),
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
    fn flush(&mut self, source: &SourceId, tx: &SourceSender, force: bool) {
        let now = Instant::now();
        let too_soon = self.last_sent.is_some_and(|t| now < t + COUNTERS_INTERVAL);
        if !self.dirty || (!force && too_soon) {
            return;
        }
        // A full inbox counts as an attempt: the counters stay pending and are retried an interval later.
        self.last_sent = Some(now);
        if tx.try_send(self.counters.event(source).into()).is_ok() {
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
    /// End a pump that has decoded no frame for this long ([`PumpEnd::Silent`]): the tcp transport reconnects
    /// then, since a device server that lost power leaves a socket that never errors. `None`: wait forever (a
    /// serial port; the bed raises `monitor_disconnected` for the silence either way).
    pub give_up_after: Option<Duration>,
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
    /// GE Datex-Ohmeda S/5 DRI records.
    S5(S5Decoder),
    /// Philips IntelliVue Data Export.
    Intellivue(Box<IntelliVueDecoder>),
}

impl AnyDecoder {
    /// The decoder for a device kind that only listens (captures, replay, `vigil decode`), with default limits
    /// (HL7: 1 MiB, the `[mllp]` default).
    pub fn for_device(device: DeviceKind) -> Self {
        match device {
            DeviceKind::Masimo => AnyDecoder::Masimo(MasimoDecoder::new()),
            DeviceKind::Nonin => AnyDecoder::Nonin(NoninDecoder::new()),
            DeviceKind::Hl7 => AnyDecoder::Hl7(Hl7Decoder::new(mllp::DEFAULT_MAX)),
            DeviceKind::S5 => AnyDecoder::S5(S5Decoder::new()),
            DeviceKind::Intellivue => AnyDecoder::Intellivue(Box::new(IntelliVueDecoder::new())),
        }
    }

    /// The decoder for a device on a two-way serial link: HL7 prepares the ACKs the device waits for, IntelliVue
    /// runs its session (association, polls), the S/5 asks for its records at the start and again after
    /// [`protocol::s5::DEFAULT_REPEAT_MS`] without one. Give [`pump_with`] a writer for what it has to send.
    pub fn for_device_talking(device: DeviceKind) -> Self {
        match device {
            DeviceKind::Hl7 => AnyDecoder::Hl7(Hl7Decoder::with_acks(mllp::DEFAULT_MAX)),
            DeviceKind::Intellivue => {
                AnyDecoder::Intellivue(Box::new(IntelliVueDecoder::with_session(IntelliVueLink::Serial)))
            }
            DeviceKind::S5 => AnyDecoder::S5(S5Decoder::talking(protocol::s5::DEFAULT_REPEAT_MS, Default::default())),
            other => Self::for_device(other),
        }
    }

    /// [`AnyDecoder::for_device_talking`] for a configured source: an S/5 asks for the records its `s5_interval`
    /// names, and again after the source's `silence_alarm_s` without a record (the bed has raised
    /// `monitor_disconnected` by then).
    pub fn for_source(cfg: &crate::config::SourceConfig) -> Self {
        if cfg.kind == crate::config::SourceKind::Udp {
            return AnyDecoder::Intellivue(Box::new(IntelliVueDecoder::with_session(IntelliVueLink::Lan)));
        }
        match cfg.device {
            DeviceKind::S5 => {
                let request = match cfg.s5_interval() {
                    crate::config::S5Interval::Display => protocol::s5::PhdbRequest::DISPLAYED,
                    crate::config::S5Interval::Trend10s => protocol::s5::PhdbRequest::TREND_10S,
                    crate::config::S5Interval::Trend60s => protocol::s5::PhdbRequest::TREND_60S,
                };
                AnyDecoder::S5(S5Decoder::talking(cfg.silence_alarm_s().saturating_mul(1000), request))
            }
            other => Self::for_device_talking(other),
        }
    }

    /// Whether the device needs to hear from Vigil on this link (an ACK, a request): the transport passes a
    /// writer only then.
    pub fn talks(&self) -> bool {
        match self {
            AnyDecoder::Hl7(d) => d.prepares_acks(),
            AnyDecoder::Intellivue(d) => d.has_session(),
            AnyDecoder::S5(d) => d.talks(),
            AnyDecoder::Masimo(_) | AnyDecoder::Nonin(_) => false,
        }
    }

    fn session(&mut self) -> Option<&mut dyn Talker> {
        match self {
            AnyDecoder::Intellivue(d) => d.session_mut().map(|s| s as &mut dyn Talker),
            AnyDecoder::S5(d) => d.talker_mut().map(|t| t as &mut dyn Talker),
            _ => None,
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
            AnyDecoder::S5(d) => d.decode(buf),
            AnyDecoder::Intellivue(d) => d.decode(buf),
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        match self {
            AnyDecoder::Masimo(d) => d.decode_eof(buf),
            AnyDecoder::Nonin(d) => d.decode_eof(buf),
            AnyDecoder::Hl7(d) => d.decode_eof(buf),
            AnyDecoder::S5(d) => d.decode_eof(buf),
            AnyDecoder::Intellivue(d) => d.decode_eof(buf),
        }
    }
}

/// Initial read buffer per source: a second of Masimo or Nonin output is far smaller; it grows for larger frames
/// (HL7), and kept small it is a real share of a chair's memory at ward scale.
const READ_CAPACITY: usize = 1024;

/// Reads `reader` until it ends or `cancel` fires: decodes with the decoder for `device`, removes impossible
/// values, counts, logs errors rate-limited and emits [`SourceEvent::Frame`] and [`SourceEvent::Counters`]. Link
/// events are the transport's business. Counters start at zero; transports that reconnect use [`pump_with`].
pub async fn pump<R: AsyncRead + Unpin>(
    reader: R,
    device: DeviceKind,
    source: &SourceId,
    tx: &SourceSender,
    cancel: &CancellationToken,
) -> PumpEnd {
    let decoder = AnyDecoder::for_device(device);
    pump_with(reader, decoder, source, tx, cancel, &mut PumpState::default(), None).await
}

/// Where a pump writes back to the device: HL7 ACKs (MLLP over serial), IntelliVue session and S/5 requests.
pub type DeviceWriter<'a> = &'a mut (dyn AsyncWrite + Unpin + Send);

/// How long writing one ACK or request may take (a serial line with hardware flow control can stall).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a session message waits in the decoder before the session acts on it, ms.
const SESSION_LOOK_MS: u64 = 20;
/// How long the release at shutdown may take.
const RELEASE_TIMEOUT: Duration = Duration::from_millis(500);

/// [`pump`] with a chosen decoder, counters that outlive this stream (serial reconnects), and optionally a
/// writer for what an [`AnyDecoder::for_device_talking`] decoder has to send: HL7 ACKs (AA only after the frame
/// is in the bed's inbox, AE/AR at once), or what its [`protocol::Talker`] says: the IntelliVue session's
/// requests, paced by the session, whose association state reaches the bed as [`SourceEvent::Link`] (a lost
/// association is `monitor_disconnected`) and which is released when `cancel` fires; the S/5 record requests.
/// With [`PumpState::give_up_after`] set, a stream without a frame for that long ends as [`PumpEnd::Silent`].
pub async fn pump_with<R: AsyncRead + Unpin>(
    reader: R,
    decoder: AnyDecoder,
    source: &SourceId,
    tx: &SourceSender,
    cancel: &CancellationToken,
    state: &mut PumpState,
    mut writer: Option<DeviceWriter<'_>>,
) -> PumpEnd {
    let mut framed = FramedRead::with_capacity(reader, decoder, READ_CAPACITY);
    let origin = Instant::now();
    let mut last_frame = Instant::now();
    let end = loop {
        let due = state.counters.due();
        // A talker hears the device inside the decoder, where no frame comes out for a session message (the
        // IntelliVue accept, its MDS Create event), so it is looked at again within SESSION_LOOK_MS even when it
        // expects nothing sooner.
        let talk_due = framed.decoder_mut().session().map(|s| {
            let now = ms_since(origin);
            origin + Duration::from_millis(s.next_due(now).min(now + SESSION_LOOK_MS))
        });
        let give_up_at = state.give_up_after.map(|d| last_frame + d);
        let item = tokio::select! {
            biased;
            _ = cancel.cancelled() => break PumpEnd::Cancelled,
            _ = sleep_until_opt(give_up_at) => break PumpEnd::Silent(state.give_up_after.unwrap_or_default()),
            _ = sleep_until_opt(due) => {
                state.counters.flush(source, tx, false);
                continue;
            }
            _ = sleep_until_opt(talk_due) => None,
            item = framed.next() => Some(item),
        };
        let Some(item) = item else {
            if let Err(end) = talk(&mut framed, writer.as_deref_mut(), origin, source, tx).await {
                break end;
            }
            continue;
        };
        if matches!(item, Some(Ok(Ok(_)))) {
            last_frame = Instant::now();
        }
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
                    r = tx.send(event.into()) => r,
                };
                if sent.is_err() {
                    break PumpEnd::ReceiverClosed;
                }
            }
        }
        if let Err(end) = talk(&mut framed, writer.as_deref_mut(), origin, source, tx).await {
            break end;
        }
        if let (Some(ack), Some(w)) = (framed.decoder_mut().take_ack(), writer.as_deref_mut()) {
            let bytes = mllp::frame(&ack.build(Utc::now()));
            match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(&bytes)).await {
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
    if let (Some(release), Some(w)) = (framed.decoder_mut().session().and_then(|s| s.release()), writer) {
        // A clean end frees the monitor's interface at once; a stalled line must not hold up the shutdown.
        let _ = tokio::time::timeout(RELEASE_TIMEOUT, w.write_all(&release)).await;
    }
    // The final counts of this stream are worth one extra event even inside the interval.
    state.counters.flush(source, tx, true);
    end
}

fn ms_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Runs the decoder's session, if it has one, to now: writes what it may send and tells the bed when the
/// association came up or was lost.
async fn talk<R: AsyncRead + Unpin, W: AsyncWrite + Unpin + ?Sized>(
    framed: &mut FramedRead<R, AnyDecoder>,
    writer: Option<&mut W>,
    origin: Instant,
    source: &SourceId,
    tx: &SourceSender,
) -> Result<(), PumpEnd> {
    let Some(session) = framed.decoder_mut().session() else { return Ok(()) };
    let now = ms_since(origin);
    session.poll(now);
    if let Some(w) = writer {
        while let Some(bytes) = session.take_outgoing(now) {
            match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(&bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(PumpEnd::WriteError(format!("cannot write to the monitor: {e}"))),
                Err(_) => {
                    return Err(PumpEnd::WriteError("monitor request not written within 5 s (line stalled)".into()))
                }
            }
        }
    }
    if let Some(change) = session.take_link_change() {
        let (state, reason) = match change {
            LinkChange::Up => {
                tracing::info!(source = %source, "monitor link up (association)");
                (LinkState::Connected, None)
            }
            LinkChange::Down(reason) => {
                tracing::warn!(source = %source, "monitor link lost (association): {reason}");
                (LinkState::Disconnected, Some(reason))
            }
        };
        let event = SourceEvent::Link { source: source.clone(), state, reason, at: Utc::now() };
        if tx.send(event.into()).await.is_err() {
            return Err(PumpEnd::ReceiverClosed);
        }
    }
    Ok(())
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

    #[test]
    fn an_s5_source_with_s5_interval_asks_for_that_trend_and_waits_longer_before_calling_it_silent() {
        use protocol::s5::{start_requests, PhdbRequest};
        for (interval, request, silence) in [
            (None, PhdbRequest::DISPLAYED, 15),
            (Some("display"), PhdbRequest::DISPLAYED, 15),
            (Some("10s"), PhdbRequest::TREND_10S, 30),
            (Some("60s"), PhdbRequest::TREND_60S, 180),
        ] {
            let key = interval.map(|i| format!("s5_interval = \"{i}\"\n")).unwrap_or_default();
            let cfg: crate::config::SourceConfig =
                toml::from_str(&format!("kind = \"tcp\"\ndevice = \"s5\"\naddress = \"127.0.0.1:4001\"\n{key}"))
                    .unwrap();
            assert_eq!(cfg.silence_alarm_s(), silence, "{interval:?}");
            let AnyDecoder::S5(mut d) = AnyDecoder::for_source(&cfg) else { panic!("an S/5 decoder") };
            let t = d.talker_mut().expect("a live S/5 source asks for records");
            t.poll(0);
            let sent: Vec<Vec<u8>> = std::iter::from_fn(|| t.take_outgoing(0)).collect();
            assert_eq!(sent, start_requests(request), "{interval:?}");
        }
    }

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
        assert!(matches!(rx.try_recv().as_deref(), Ok(SourceEvent::Counters { frames_bad: 1, .. })));
        state.counters.frames_bad = 2;
        state.dirty = true;
        state.flush(&source, &tx, false);
        assert!(rx.try_recv().is_err(), "inside the interval nothing is sent");
        assert!(state.due().is_some(), "but a send is scheduled");
        // Fill the inbox: even a forced flush (end of stream) must not wait, and keeps the counters pending.
        tx.try_send(state.counters.event(&source).into()).unwrap();
        state.flush(&source, &tx, true);
        assert!(state.dirty);
        rx.try_recv().unwrap();
        state.flush(&source, &tx, true);
        assert!(matches!(rx.try_recv().as_deref(), Ok(SourceEvent::Counters { frames_bad: 2, .. })));
        assert!(!state.dirty);
    }
}
