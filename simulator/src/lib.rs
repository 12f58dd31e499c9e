//! vigil-sim: a bedside-monitor simulator with ketamine-session physiology and scripted scenarios.
//!
//! Like a real monitor it only emits bytes in real device formats (Masimo ASCII 1, Nonin format #8, HL7 v2
//! ORU^R01 over MLLP), with its own encoders; it does not depend on the daemon. The daemon's demo mode uses
//! [`feed`]; tests use [`timeline`] or iterate a [`Simulation`] to compare bytes with the model's values.

#![warn(missing_docs)]

pub mod alert_manager;
pub mod devices;
pub mod output;
pub mod physiology;
pub mod scenario;
pub mod sim;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

pub use physiology::Vitals;
pub use scenario::ScenarioError;
pub use sim::{NibpReading, NibpValues, Sample, SensorState, Shown, Simulation, Tick};

/// The simulator's random generator: 32 bytes of state where a ChaCha generator keeps over 300, which counts at
/// four streams per chair and thousands of chairs in one process. Not for secrets; reproducible per seed.
pub type SimRng = rand_xoshiro::Xoshiro256PlusPlus;

/// Names of the bundled scenarios (from the files embedded with `include_str!`).
pub fn scenario_names() -> Vec<&'static str> {
    scenario::names()
}

/// Each bundled scenario with its one-line description, for `--list-scenarios`.
pub fn scenario_descriptions() -> Result<Vec<(&'static str, String)>, SimError> {
    scenario::names().into_iter().map(|n| Ok((n, scenario::load(n)?.description))).collect()
}

/// Which device personality to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// Masimo Rad-8 / Radical-7 serial ASCII 1 lines.
    Masimo,
    /// Nonin data format #8 frames.
    Nonin,
    /// HL7 v2 ORU^R01 (IHE PCD-01) in MLLP framing.
    Hl7,
    /// GE Datex-Ohmeda S/5 DRI records (displayed values and alarms).
    S5,
    /// Philips IntelliVue Data Export over the MIB/RS-232 port: answers association and polls.
    Intellivue,
}

impl std::str::FromStr for Device {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, SimError> {
        match s.to_ascii_lowercase().as_str() {
            "masimo" => Ok(Device::Masimo),
            "nonin" => Ok(Device::Nonin),
            "hl7" => Ok(Device::Hl7),
            "s5" => Ok(Device::S5),
            "intellivue" => Ok(Device::Intellivue),
            _ => Err(SimError::UnknownDevice(s.to_owned())),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Masimo => "masimo",
            Device::Nonin => "nonin",
            Device::Hl7 => "hl7",
            Device::S5 => "s5",
            Device::Intellivue => "intellivue",
        })
    }
}

/// How fast virtual time runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// Virtual seconds per real second (1.0 = real time, 60 = one minute per second).
    Factor(f64),
    /// As fast as the consumer reads; device timestamps still advance one second per frame.
    Max,
}

impl std::str::FromStr for Speed {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, SimError> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        let f: f64 = s.parse().map_err(|_| SimError::BadSpeed(s.to_owned()))?;
        Speed::Factor(f).validated()
    }
}

impl Speed {
    /// Largest accepted factor; beyond it use [`Speed::Max`].
    pub const MAX_FACTOR: f64 = 100_000.0;

    fn validated(self) -> Result<Speed, SimError> {
        match self {
            Speed::Factor(f) if !(f.is_finite() && f > 0.0 && f <= Self::MAX_FACTOR) => {
                Err(SimError::BadSpeed(f.to_string()))
            }
            s => Ok(s),
        }
    }
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Speed::Factor(x) => write!(f, "{x}x"),
            Speed::Max => f.write_str("max"),
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedOptions {
    /// A bundled scenario name (see [`scenario_names`]).
    pub scenario: String,
    /// Device personality.
    pub device: Device,
    /// Random seed: same seed, same values (and, for the same start time, the same bytes).
    pub seed: u64,
    /// Time scale.
    pub speed: Speed,
    /// Which patient of a multi-bed scenario (0-based; wraps around the scenario's patient list, each index keeps
    /// its own random stream).
    pub patient: usize,
    /// HL7 MSH-3 EUI-64 to send; `None` derives a stable one from seed and patient.
    pub device_id: Option<String>,
}

/// A scripted moment, sent when it passes so a demo can drive its session and link state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Marker {
    /// Seconds since the scenario start (virtual time).
    pub offset_s: f64,
    /// What happened.
    pub kind: MarkerKind,
}

/// Kinds of scripted moments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarkerKind {
    /// The nurse starts the session.
    SessionStart,
    /// The infusion starts.
    InfusionStart,
    /// The infusion stops.
    InfusionStop,
    /// The session ends.
    SessionEnd,
    /// The monitor's cable is unplugged: no bytes until [`MarkerKind::Reconnected`].
    Disconnected,
    /// The cable is back.
    Reconnected,
}

/// Simulator errors.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario is unknown or invalid.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// Unknown device name.
    #[error("unknown device '{0}' (known: masimo, nonin, hl7, intellivue)")]
    UnknownDevice(String),
    /// Speed is not a positive number or `max`.
    #[error("speed '{0}' must be a number above 0 and at most 100000, or 'max'")]
    BadSpeed(String),
    /// The device id cannot go into an HL7 field.
    #[error("device id '{0}' must be 1–64 letters, digits, '-' or '_' (an EUI-64 is 16 hex digits)")]
    BadDeviceId(String),
    /// [`feed`] was called outside a tokio runtime.
    #[error("feed() must be called from within a tokio runtime")]
    NoRuntime,
}

/// The HL7 MSH-3 EUI-64 a bed uses when [`FeedOptions::device_id`] is `None`: stable for a seed and bed, locally
/// administered so it cannot collide with a vendor's id.
pub fn derived_device_id(seed: u64, patient: usize) -> String {
    devices::hl7::eui64_from_seed(seed ^ (patient as u64).wrapping_mul(0xA24B_AED4_963E_E407))
}

/// The device clock [`timeline`] starts at, so timelines are reproducible.
pub fn fixed_epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 8, 0, 0).single().expect("a valid constant date")
}

/// Runs a scenario in virtual time and yields the model's values second by second (truth and what the device
/// showed); deterministic for a seed. The device clock starts at [`fixed_epoch`]. `opts.speed` is ignored.
pub fn timeline(opts: &FeedOptions) -> Result<impl Iterator<Item = Sample>, SimError> {
    Ok(Simulation::new(opts, fixed_epoch())?.map(|t| t.sample))
}

/// A live device: its byte stream and its scripted moments.
#[derive(Debug)]
pub struct Feed {
    /// The device's bytes in (scaled) real time; EOF when the scenario ends.
    pub reader: FeedReader,
    /// Scripted moments as they pass (as the reader is read: the simulation steps when it is).
    pub markers: mpsc::UnboundedReceiver<Marker>,
}

/// The byte stream of a [`Feed`]. It has no task of its own: the simulation steps when the consumer reads, and a
/// tick waits for its due time inside `poll_read`, so a simulated chair costs one task (the consumer's), not two.
/// Boxed, so the consumer's future (which may hold the reader in more than one state) stays small.
pub struct FeedReader(Box<FeedState>);

struct FeedState {
    sim: Simulation,
    speed: Speed,
    origin: tokio::time::Instant,
    markers: mpsc::UnboundedSender<Marker>,
    /// Bytes of the current tick not yet read, from `at`.
    bytes: Vec<u8>,
    at: usize,
    /// A tick waiting for its due time, and the timer it waits on (created on first use, then reset).
    held: Option<Tick>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for FeedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = &self.0;
        f.debug_struct("FeedReader")
            .field("speed", &state.speed)
            .field("unread", &(state.bytes.len() - state.at))
            .finish()
    }
}

impl FeedState {
    /// Announces a tick's markers and makes its bytes the next to read.
    fn release(&mut self, tick: Tick) {
        for kind in &tick.sample.markers {
            // A consumer that stopped listening for markers may still want the bytes.
            let _ = self.markers.send(Marker { offset_s: f64::from(tick.sample.offset_s), kind: *kind });
        }
        self.bytes = tick.bytes;
        self.at = 0;
    }
}

impl AsyncRead for FeedReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self.0;
        loop {
            if this.at < this.bytes.len() {
                let n = buf.remaining().min(this.bytes.len() - this.at);
                buf.put_slice(&this.bytes[this.at..this.at + n]);
                this.at += n;
                return Poll::Ready(Ok(()));
            }
            if let Some(tick) = this.held.take() {
                let Some(sleep) = this.sleep.as_mut() else {
                    this.release(tick);
                    continue;
                };
                if sleep.as_mut().poll(cx).is_pending() {
                    this.held = Some(tick);
                    return Poll::Pending;
                }
                this.release(tick);
                continue;
            }
            let Some(tick) = this.sim.next() else {
                return Poll::Ready(Ok(())); // the scenario ended: EOF
            };
            match this.speed {
                Speed::Max => this.release(tick),
                Speed::Factor(f) => {
                    let due = this.origin + std::time::Duration::from_secs_f64(f64::from(tick.sample.offset_s) / f);
                    match this.sleep.as_mut() {
                        Some(sleep) => sleep.as_mut().reset(due),
                        None => this.sleep = Some(Box::pin(tokio::time::sleep_until(due))),
                    }
                    this.held = Some(tick);
                }
            }
        }
    }
}

/// Starts a simulated device. The device clock starts now. The stream ends at the end of the scenario (EOF);
/// dropping the reader stops the simulation and closes the marker channel.
pub fn feed(opts: FeedOptions) -> Result<Feed, SimError> {
    // The reader's timers need a runtime; say so here rather than panic at the first read.
    tokio::runtime::Handle::try_current().map_err(|_| SimError::NoRuntime)?;
    let speed = opts.speed.validated()?;
    let sim = Simulation::new(&opts, Utc::now().trunc_subsecs(0))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let reader = FeedReader(Box::new(FeedState {
        sim,
        speed,
        origin: tokio::time::Instant::now(),
        markers: tx,
        bytes: Vec::new(),
        at: 0,
        held: None,
        sleep: None,
    }));
    Ok(Feed { reader, markers: rx })
}
