//! What leaves a bed: the events the store writes, the MQTT publisher announces and the dashboard shows,
//! and the commands that reach a bed. One struct per observable thing, with stable field names: these field
//! names are the wire format of the MQTT API (`docs/mqtt-api.md`).

use serde::{Deserialize, Serialize};

use crate::vitals::{BedId, Parameter, Timestamp, ValueStatus};

/// Everything a bed task announces, in the order it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The bed's latest numerics.
    Vitals(VitalsUpdate),
    /// One alarm lifecycle event.
    Alarm(AlarmEvent),
    /// The bed's alarms that are active (or latched) now, after a change.
    Alarms(BedAlarms),
    /// A session lifecycle event.
    Session(SessionEvent),
    /// A source's link state and error counters.
    Device(DeviceStatus),
}

impl Event {
    /// The bed this event belongs to.
    pub fn bed(&self) -> &BedId {
        match self {
            Event::Vitals(e) => &e.bed,
            Event::Alarm(e) => &e.bed,
            Event::Alarms(e) => &e.bed,
            Event::Session(e) => &e.bed,
            Event::Device(e) => &e.bed,
        }
    }
}

/// Priority of an alarm condition (IEC 60601-1-8; CLINICAL.md "Alarm semantics").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Awareness.
    Low,
    /// Prompt response.
    Medium,
    /// Immediate response.
    High,
}

/// What kind of rule raised an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// A value outside a limit.
    Threshold,
    /// A change over time (rise from baseline, slope, drift).
    Trend,
    /// Equipment, sensor, link or data failure.
    Technical,
    /// Advisory only (NEWS2): low priority, never escalates.
    Advisory,
    /// Raised by the monitor itself (an IntelliVue alert, an S/5 alarm record), mirrored with the monitor's
    /// priority and text: `source` is `monitor`. Vigil's own rules on the same numerics stay separate alarms.
    Device,
}

/// Who decided an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AlarmSource {
    /// Vigil's own engine.
    #[default]
    Vigil,
    /// The bedside monitor (kind `device`): Vigil only shows and announces it.
    Monitor,
}

/// Where in its life an alarm event sits (IHE ACM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlarmPhase {
    /// The condition was detected.
    Start,
    /// Something changed: value, state (acknowledged, paused), evidence.
    Update,
    /// Priority went up (a new band, or unanswered too long).
    Escalate,
    /// Priority went down (back to a lower band).
    DeEscalate,
    /// The alarm is over: condition gone and nothing latched, or acknowledged after it cleared.
    End,
}

/// The alarm's state after the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlarmState {
    /// Condition present, signalling.
    Active,
    /// Condition gone but the alarm keeps signalling until acknowledged (latching profile).
    Latched,
    /// Seen by a person; stays visible while the condition lasts.
    Acknowledged,
    /// Audio paused for a limited time.
    AudioPaused,
    /// Over.
    Cleared,
}

/// One alarm lifecycle event. `(alarm_id, seq)` identifies it; `bed_seq` numbers every alarm event of a bed
/// without gaps, across restarts, so a consumer can tell when it lost one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmEvent {
    /// When the engine decided (receive-time clock).
    pub time: Timestamp,
    /// The bed.
    pub bed: BedId,
    /// Stable for the alarm's whole life; never reused.
    pub alarm_id: String,
    /// 1 for `start`, then +1 per event of this alarm.
    pub seq: u32,
    /// Per-bed alarm event number: contiguous, never repeats.
    pub bed_seq: u64,
    /// The rule family.
    pub kind: AlarmKind,
    /// Who decided it: `vigil` (its engine) or `monitor` (the device's own alarm, kind `device`).
    #[serde(default)]
    pub source: AlarmSource,
    /// Stable machine name of the condition, e.g. `spo2_low`, `nibp_sys_high`, `nibp_rise`, `monitor_disconnected`,
    /// `monitor_alarm` (a monitor's own alarm).
    pub condition: String,
    /// The parameter concerned, if any.
    pub parameter: Option<Parameter>,
    /// Priority after this event.
    pub priority: Priority,
    /// Lifecycle phase of this event.
    pub phase: AlarmPhase,
    /// State after this event.
    pub state: AlarmState,
    /// The value that triggered or updated it.
    pub value: Option<f64>,
    /// The limit it was compared with.
    pub limit: Option<f64>,
    /// What the rule saw (baseline, delta, slope, window, SatSeconds integral, source …).
    #[serde(default)]
    pub evidence: serde_json::Map<String, serde_json::Value>,
    /// One line a nurse can read: `SpO2 85 < 88`.
    pub message: String,
    /// Who caused this event by a command (acknowledge, pause), if a person did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When audio pause ends, while audio-paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_paused_until: Option<Timestamp>,
    /// `true` only on the events of a self-test's alarm (condition `self_test`, `vigil self-test` or the
    /// dashboard's button): it proves the alarm path and is not about the patient. Absent on every other event.
    /// Test alarms never count in statistics (`/metrics`, reports).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
}

/// A bed's present alarms: what a late subscriber or a fresh dashboard needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BedAlarms {
    /// The bed.
    pub bed: BedId,
    /// When this snapshot was taken.
    pub time: Timestamp,
    /// The `bed_seq` of the last alarm event included.
    pub bed_seq: u64,
    /// The latest event of each alarm that has not ended.
    pub alarms: Vec<AlarmEvent>,
}

/// Latest value of one parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitalValue {
    /// The parameter.
    pub parameter: Parameter,
    /// Its value, if any.
    pub value: Option<f64>,
    /// How far it can be trusted.
    pub status: ValueStatus,
    /// When it was received.
    pub time: Timestamp,
}

/// Latest value of a numeric that is none of Vigil's parameters (issue 13: "whatever else is there, kept but
/// unalarmed"), named by its MDC code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtherVitalValue {
    /// IEEE 11073-10101 MDC code of what was measured.
    pub mdc_code: u32,
    /// MDC code of its unit.
    pub unit_code: u32,
    /// Its value in that unit, if any.
    pub value: Option<f64>,
    /// How far it can be trusted, as the device says.
    pub status: ValueStatus,
    /// When it was received.
    pub time: Timestamp,
}

/// The bed's latest numerics, sent when they change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitalsUpdate {
    /// The bed.
    pub bed: BedId,
    /// When this update was made.
    pub time: Timestamp,
    /// One entry per parameter seen so far.
    pub values: Vec<VitalValue>,
    /// One entry per other numeric seen so far (MDC code order), never alarmed on; left out when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other: Vec<OtherVitalValue>,
}

/// Phase of an infusion session (CLINICAL.md "The setting").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SessionPhase {
    /// No session: the chair is empty or not yet started.
    #[default]
    Idle,
    /// Session started, baseline readings being taken.
    PreInfusion,
    /// Ketamine running.
    Infusion,
    /// Infusion stopped, patient observed.
    Observation,
    /// Session ended.
    Ended,
}

/// Systolic and diastolic baseline for the rise-from-baseline rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Systolic, mmHg.
    pub sys: f64,
    /// Diastolic, mmHg.
    pub dia: f64,
    /// `median_of_pre_infusion` or `entered`.
    pub source: BaselineSource,
}

/// Where a baseline came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineSource {
    /// Median of the NIBP readings before infusion start.
    MedianOfPreInfusion,
    /// Entered by a nurse.
    Entered,
}

/// A session lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEvent {
    /// When.
    pub time: Timestamp,
    /// The bed.
    pub bed: BedId,
    /// Stable id of the session.
    pub session_id: String,
    /// Per-bed session event number: 1, 2, … without gaps, across restarts (like an alarm event's `bed_seq`).
    /// A consumer drops a duplicate delivery by (`bed`, `session_seq`) and sees a loss as a gap. 0 only on an
    /// event not yet numbered by its bed task.
    #[serde(default)]
    pub session_seq: u64,
    /// What happened: `session_start`, `infusion_start`, `infusion_stop`, `session_end`, `baseline_set`,
    /// `limit_set`.
    pub action: String,
    /// Phase after the event.
    pub phase: SessionPhase,
    /// When the session started.
    pub started: Option<Timestamp>,
    /// When the infusion started, if it has.
    pub infusion_started: Option<Timestamp>,
    /// Patient pseudonym, if given (never a name).
    pub patient: Option<String>,
    /// Baseline in force, if any.
    pub baseline: Option<Baseline>,
    /// Who did it.
    pub by: Option<String>,
    /// What changed, for actions that need more than the phase (`limit_set`: key, old and new value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Link state of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Trying to open or waiting for the device.
    Connecting,
    /// Open and receiving.
    Connected,
    /// Lost; reconnecting with backoff.
    Disconnected,
}

/// A source's link state and counters, for the status topic and the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// The bed.
    pub bed: BedId,
    /// `chair-1/0`: bed id and index of the source in the config.
    pub source: String,
    /// `serial`, `mllp` or `simulated`.
    pub kind: String,
    /// `masimo`, `nonin` or `hl7`.
    pub device: String,
    /// Link state.
    pub link: LinkState,
    /// Frames decoded.
    pub frames_ok: u64,
    /// Frames that could not be decoded.
    pub frames_bad: u64,
    /// Values rejected as impossible.
    pub values_rejected: u64,
    /// Last error, if any.
    pub last_error: Option<String>,
    /// When the last valid frame arrived.
    pub last_frame: Option<Timestamp>,
    /// When this status was made.
    pub time: Timestamp,
}

/// A command for one bed, with who sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// The bed.
    pub bed: BedId,
    /// What to do.
    pub command: Command,
    /// Who: a user name from the config, or `demo` on an unauthenticated loopback demo.
    pub actor: String,
}

/// What a person can ask a bed to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Acknowledge one alarm, or every alarm of the bed when `alarm_id` is absent.
    Acknowledge {
        /// The alarm, or all.
        #[serde(default)]
        alarm_id: Option<String>,
    },
    /// Pause audio for this many seconds (bounded by the profile).
    PauseAudio {
        /// Seconds.
        seconds: u32,
    },
    /// End an audio pause early.
    ResumeAudio,
    /// Start a session.
    SessionStart {
        /// Optional pseudonym.
        #[serde(default)]
        patient: Option<String>,
        /// Optional baseline systolic, mmHg.
        #[serde(default)]
        baseline_sys: Option<f64>,
        /// Optional baseline diastolic, mmHg.
        #[serde(default)]
        baseline_dia: Option<f64>,
    },
    /// Infusion started.
    InfusionStart,
    /// Infusion stopped; observation begins.
    InfusionStop,
    /// End the session.
    SessionEnd,
    /// Set the baseline by hand.
    SetBaseline {
        /// Systolic, mmHg.
        sys: f64,
        /// Diastolic, mmHg.
        dia: f64,
    },
    /// Override one profile number for this bed at runtime, logged with who and when (a `limit_set` session
    /// event). `key` is the profile key path, e.g. `limits.spo2.low.medium`; `value` absent restores the
    /// profile's value.
    SetLimit {
        /// Profile key path.
        key: String,
        /// New value, or none to restore the profile's.
        #[serde(default)]
        value: Option<f64>,
    },
    /// Raise the self-test's marked test alarm (condition `self_test`, `test: true`), which the bed ends by
    /// itself moments later. Only Vigil's own self-test sends it (`src/selftest.rs`): it is never read from
    /// MQTT or the dashboard's command endpoint.
    #[serde(skip_deserializing)]
    SelfTest,
    /// The outcome of a self-test of this bed: `failed` names the hops that failed (raises or keeps the
    /// technical alarm `selftest_failed`), `None` ends that alarm. Only Vigil's own self-test sends it.
    #[serde(skip_deserializing)]
    SelfTestResult {
        /// What failed, for the alarm's message; `None` when every hop passed.
        failed: Option<String>,
    },
}
