//! IHE PCD Alert Communication Management (ACM), the Alert Reporter's messages: an alarm event becomes one HL7
//! v2.6 ORU^R40 (Report Alert, PCD-04), the link's heartbeat is an ORU^R40 carrying `MDC_EVT_ACTIVE`, and the
//! Alert Manager's answers (ACK^R40, and ORA^R41 Report Alert Status, PCD-05) are read back. Pure: text in, text
//! out; the MLLP link is [`super::acm_client`].
//!
//! Codes, facet numbering and the choices where public samples disagree are in `docs/acm.md`; their sources in
//! `docs/sources.md` ("Alert communication (IHE PCD ACM)").
//!
//! One message carries one alarm in one OBR: OBR-29 (Parent) holds the stable alert id, Vigil's `alarm_id`, on
//! every message of the alarm; OBR-2 and OBR-3 identify this one indication (`<alarm_id>.<seq>`) (PCD TF-2
//! Rev. 9.0, B.7.1). The alarm's attributes are OBX "facets" whose OBX-4 sub-id is
//! `<MDS>.<VMD>.<CHAN>.<METRIC>.<facet>`, every OBX with result status `F` (B.8.6):
//!
//! | facet | OBX-3 | OBX-5 |
//! |---|---|---|
//! | 1 | a physiological alarm's own event code, e.g. `196670^MDC_EVT_LO^MDC`; else `196616^MDC_EVT_ALARM^MDC` | the alarm text; else the event id; OBX-8 `H`/`L` only (B.8.5, example E.3.1) |
//! | 2 | the parameter (`150456^MDC_PULS_OXIM_SAT_O2^MDC`), or `68480^MDC_ATTR_ALERT_SOURCE^MDC` | the triggering value with OBX-6 unit and OBX-7 limit, or the source |
//! | 3 | `68481^MDC_ATTR_EVENT_PHASE^MDC` | `start`, `update`, `end` |
//! | 4 | `68482^MDC_ATTR_ALARM_STATE^MDC` | `active`, `latched`, `inactive` |
//! | 5 | `68483^MDC_ATTR_ALARM_INACTIVATION_STATE^MDC` | `enabled`, `audio-paused`, `alert-acknowledged` |
//! | 6 | `68484^MDC_ATTR_ALARM_PRIORITY^MDC` | `PH`, `PM`, `PL` (`PN` on the heartbeat) |
//! | 7 | `68485^MDC_ATTR_ALERT_TYPE^MDC` | `SP`, `ST`, `SA` |
//! | 8 | `68546^MDC_ATTR_ALERT_TEXT^MDC` | the nurse's one line, HL7-escaped |

use std::fmt::Write;

use chrono::{Datelike, Timelike};

use crate::event::{AlarmEvent, AlarmKind, AlarmPhase, AlarmState, Priority};
use crate::ingest::protocol::hl7::{self, Separators};
use crate::vitals::{Parameter, Timestamp};

/// MSH-21: the IHE PCD ACM message profile. The OID follows the PCD profile tree the DEC samples Vigil reads
/// use (`IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO`; ACM is profile 4 of that tree): `docs/acm.md`.
pub const PROFILE: &str = "IHE_PCD_ACM_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.4.1^ISO";

/// MSH-11 of a real alarm and of the heartbeat: production (HL7 table 0103).
pub const PROCESSING_PRODUCTION: &str = "P";
/// MSH-11 of a self-test alarm (`test: true`): training/test (HL7 table 0103), so a manager can keep it away from
/// the nurses' devices or mark it.
pub const PROCESSING_TEST: &str = "T";

/// An IEEE 11073-10101 code with its reference id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mdc {
    /// Context-free numeric code (partition × 65536 + term).
    pub code: u32,
    /// Reference id, e.g. `MDC_EVT_LO`.
    pub ref_id: &'static str,
}

impl Mdc {
    const fn new(code: u32, ref_id: &'static str) -> Mdc {
        Mdc { code, ref_id }
    }
}

/// OBR-4, and facet 1's OBX-3 of a technical or advisory alert (or of an alarm with no specific code) (3:8).
pub const MDC_EVT_ALARM: Mdc = Mdc::new(196616, "MDC_EVT_ALARM");
/// The heartbeat's event id (3:6), as the public alert-manager implementations recognise it.
pub const MDC_EVT_ACTIVE: Mdc = Mdc::new(196614, "MDC_EVT_ACTIVE");
/// A value above its high limit (3:40).
pub const MDC_EVT_HI: Mdc = Mdc::new(196648, "MDC_EVT_HI");
/// A value below its low limit (3:62).
pub const MDC_EVT_LO: Mdc = Mdc::new(196670, "MDC_EVT_LO");
/// Apnoea (3:3072).
pub const MDC_EVT_APNEA: Mdc = Mdc::new(199680, "MDC_EVT_APNEA");
/// Battery low (3:194).
pub const MDC_EVT_BATT_LO: Mdc = Mdc::new(196802, "MDC_EVT_BATT_LO");
/// Facet 2 when no parameter value triggered the alarm (1:2944).
pub const MDC_ATTR_ALERT_SOURCE: Mdc = Mdc::new(68480, "MDC_ATTR_ALERT_SOURCE");
/// Facet 3 (1:2945).
pub const MDC_ATTR_EVENT_PHASE: Mdc = Mdc::new(68481, "MDC_ATTR_EVENT_PHASE");
/// Facet 4 (1:2946).
pub const MDC_ATTR_ALARM_STATE: Mdc = Mdc::new(68482, "MDC_ATTR_ALARM_STATE");
/// Facet 5 (1:2947).
pub const MDC_ATTR_ALARM_INACTIVATION_STATE: Mdc = Mdc::new(68483, "MDC_ATTR_ALARM_INACTIVATION_STATE");
/// Facet 6 (1:2948).
pub const MDC_ATTR_ALARM_PRIORITY: Mdc = Mdc::new(68484, "MDC_ATTR_ALARM_PRIORITY");
/// Facet 7 (1:2949).
pub const MDC_ATTR_ALERT_TYPE: Mdc = Mdc::new(68485, "MDC_ATTR_ALERT_TYPE");
/// Facet 8 (1:3010).
pub const MDC_ATTR_ALERT_TEXT: Mdc = Mdc::new(68546, "MDC_ATTR_ALERT_TEXT");
/// The heartbeat's facet 9: how long the reporter waits for the manager's ACK (1:2324).
pub const MDC_ATTR_CONFIRM_TIMEOUT: Mdc = Mdc::new(67860, "MDC_ATTR_CONFIRM_TIMEOUT");
/// The reporting device: a multi-parameter physiological monitor (the DEC hierarchy's MDS row).
pub const MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS: Mdc = Mdc::new(69965, "MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS");
/// Seconds, the unit of the confirm timeout.
pub const MDC_DIM_SEC: Mdc = Mdc::new(264320, "MDC_DIM_SEC");

/// Why an Alert Manager's message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcmCodecError {
    /// Not an HL7 v2 message (no usable MSH).
    #[error("not an HL7 v2 message: {0}")]
    NotHl7(String),
    /// An HL7 message of a type the reporter does not take.
    #[error("unexpected message type '{0}' (an Alert Reporter takes ACK^R40 and ORA^R41)")]
    Unexpected(String),
    /// The right type, but a segment or field it needs is missing.
    #[error("malformed {kind}: {reason}")]
    Malformed {
        /// `ACK` or `ORA^R41`.
        kind: &'static str,
        /// What is missing.
        reason: String,
    },
}

/// Who sends and who receives: MSH-3 to MSH-6 and the location in PV1-3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// MSH-3, e.g. `VIGIL`.
    pub sending_application: String,
    /// MSH-4, the facility; also PV1-3.4.
    pub sending_facility: String,
    /// MSH-5.
    pub receiving_application: String,
    /// MSH-6.
    pub receiving_facility: String,
    /// PV1-3.1, the point of care (a ward); PV1-3.3 is the bed.
    pub point_of_care: String,
}

/// The heartbeat's place in the link's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatPhase {
    /// The first heartbeat on a connection.
    Start,
    /// Every later one.
    Update,
    /// The last, on a deliberate shutdown: the manager may stop expecting more.
    End,
}

/// How an Alert Manager's ACK answered a message (HL7 table 0008, original and enhanced modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// `AA` or `CA`: taken.
    Accepted,
    /// `AE` or `CE`: an error in the message.
    Error,
    /// `AR` or `CR`: refused.
    Rejected,
}

/// An ACK^R40 (or any ACK) read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// MSA-1 as sent (`AA`, `CA`, `AE`, …).
    pub code: String,
    /// What MSA-1 means.
    pub outcome: AckOutcome,
    /// MSA-2: the control id of the message answered.
    pub control_id: String,
    /// MSA-3 or ERR-8, unescaped: the manager's reason, if it gave one.
    pub text: Option<String>,
}

/// An ORA^R41 read back: what became of an alert at the manager (delivered, read, accepted by a person, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertStatus {
    /// MSH-10 of the ORA^R41, for the ACK the reporter owes it.
    pub control_id: String,
    /// OBR-29 (Parent, the filler's id, else the placer's), else OBR-3.1, else OBR-2.1: the alert id the reporter
    /// sent. The OBR-3/OBR-2 fallbacks are for managers that follow older samples and send no OBR-29.
    pub alert_id: String,
    /// PRT-3.2 (Action Reason text, coding system `IHE_PCD_ACM`; else PRT-3.1), e.g. `Accepted`, `Delivered`;
    /// `Accepted` when the manager gave none. PRT-2 is the action code (`AD`/`UP`), never the status.
    pub status: String,
    /// PRT-5: who, as `given family` or the id.
    pub by: Option<String>,
    /// PRT-11, else MSH-7.
    pub at: Option<Timestamp>,
}

impl AlertStatus {
    /// Whether the status says a person took the alarm (`accepted`, `acknowledged`, `read`, `callback`), rather
    /// than only that it reached a device (`delivered`, `received`) or was refused (`rejected`, `cancelled`).
    pub fn is_acknowledgement(&self) -> bool {
        let s = self.status.to_ascii_lowercase();
        ["accept", "acknowledg", "read", "callback"].iter().any(|k| s.starts_with(k))
    }
}

/// A message from the Alert Manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagerMessage {
    /// An ACK of one of the reporter's messages.
    Ack(Ack),
    /// An ORA^R41 about one alert.
    Status(AlertStatus),
}

/// OBX-4 prefix of an alarm's facets: the parameter's metric in the DEC hierarchy, or the device itself.
fn facet_prefix(parameter: Option<Parameter>) -> String {
    match parameter {
        Some(p) => format!("1.1.1.{}", p.mdc_code()),
        None => "1.0.0.0".to_owned(),
    }
}

/// The 11073 event id for a condition (facet 1's OBX-3 or OBX-5, [`event_identification`]). Conditions without a
/// specific code are
/// `MDC_EVT_ALARM`, the generic alarm, with the text saying which.
pub fn event_id(condition: &str) -> Mdc {
    if condition == "apnoea" {
        MDC_EVT_APNEA
    } else if condition == "low_battery" {
        MDC_EVT_BATT_LO
    } else if condition.ends_with("_high") {
        MDC_EVT_HI
    } else if condition.ends_with("_low") || condition.ends_with("_low_poor_signal") {
        MDC_EVT_LO
    } else {
        MDC_EVT_ALARM
    }
}

/// Facet 1's OBX-3 and whether OBX-5 is the event id (else the alarm text). A physiological alarm with its own
/// event code names it in OBX-3 and says the text in OBX-5; technical and advisory alerts (and alarms with no
/// specific code) are `MDC_EVT_ALARM` with the event id in OBX-5 (PCD TF-2 Rev. 9.0, Table B.8.5-1 facet 1;
/// example E.3.1).
pub fn event_identification(event: &AlarmEvent) -> (Mdc, bool) {
    let code = event_id(&event.condition);
    if alert_type(event.kind) == "SP" && code != MDC_EVT_ALARM {
        (code, false)
    } else {
        (MDC_EVT_ALARM, true)
    }
}

/// OBR-2/OBR-3 of one indication of an alarm: the alarm id and the event's sequence number, unique per update
/// and the same on every re-send of it.
pub fn indication_id(alarm_id: &str, seq: impl std::fmt::Display) -> String {
    format!("{alarm_id}.{seq}")
}

/// The alert an [`indication_id`] belongs to (`chair-1-a7.2` → `chair-1-a7`); any other id unchanged. Alarm ids
/// (`{bed}-a{n}`) hold no `.`, so only the suffix Vigil added is taken off.
pub fn alert_of_indication(id: &str) -> &str {
    match id.rsplit_once('.') {
        Some((alert, seq)) if !alert.is_empty() && !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()) => alert,
        _ => id,
    }
}

/// `start`, `update` or `end`: escalation and de-escalation are updates of the same alarm (`escalate` and
/// `deescalate` are "future assignment" in PCD TF-2 Rev. 9.0, Table B.8.5-4, so a manager may not know them).
pub fn phase(phase: AlarmPhase) -> &'static str {
    match phase {
        AlarmPhase::Start => "start",
        AlarmPhase::Update | AlarmPhase::Escalate | AlarmPhase::DeEscalate => "update",
        AlarmPhase::End => "end",
    }
}

/// `MDC_ATTR_ALARM_STATE`: acknowledged and audio-paused alarms are still active (their inactivation state says
/// the rest); a cleared one is inactive.
pub fn alarm_state(state: AlarmState) -> &'static str {
    match state {
        AlarmState::Active | AlarmState::Acknowledged | AlarmState::AudioPaused => "active",
        AlarmState::Latched => "latched",
        AlarmState::Cleared => "inactive",
    }
}

/// `MDC_ATTR_ALARM_INACTIVATION_STATE`.
pub fn inactivation_state(state: AlarmState) -> &'static str {
    match state {
        AlarmState::Acknowledged => "alert-acknowledged",
        AlarmState::AudioPaused => "audio-paused",
        AlarmState::Active | AlarmState::Latched | AlarmState::Cleared => "enabled",
    }
}

/// `PH`, `PM` or `PL`.
pub fn priority(p: Priority) -> &'static str {
    match p {
        Priority::High => "PH",
        Priority::Medium => "PM",
        Priority::Low => "PL",
    }
}

/// `ST` for technical alarms, `SA` for advisories (NEWS2), `SP` for the physiological rest.
pub fn alert_type(kind: AlarmKind) -> &'static str {
    match kind {
        AlarmKind::Technical => "ST",
        AlarmKind::Advisory => "SA",
        AlarmKind::Threshold | AlarmKind::Trend | AlarmKind::Device => "SP",
    }
}

/// The MDC unit code and reference id of a parameter's UCUM unit.
pub fn unit(p: Parameter) -> Mdc {
    match p {
        Parameter::Hr | Parameter::Pr => Mdc::new(264864, "MDC_DIM_BEAT_PER_MIN"),
        Parameter::Rr => Mdc::new(264928, "MDC_DIM_RESP_PER_MIN"),
        Parameter::Spo2 | Parameter::Pi => Mdc::new(262688, "MDC_DIM_PERCENT"),
        Parameter::NibpSys | Parameter::NibpDia | Parameter::NibpMean => Mdc::new(266016, "MDC_DIM_MMHG"),
    }
}

/// HL7 DTM with seconds and the UTC offset.
fn dtm(out: &mut String, t: Timestamp) {
    let _ = write!(
        out,
        "{:04}{:02}{:02}{:02}{:02}{:02}+0000",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
}

fn cwe(out: &mut String, m: Mdc) {
    let _ = write!(out, "{}^{}^MDC", m.code, m.ref_id);
}

/// A number as HL7 NM: no exponent, no trailing zeros.
fn nm(out: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{v:.0}");
    } else {
        let _ = write!(out, "{}", (v * 1000.0).round() / 1000.0);
    }
}

/// Writes segments: `push` adds one, separated by CR, every free text escaped.
struct Writer {
    out: String,
    sep: Separators,
    obx: u32,
}

impl Writer {
    fn new() -> Writer {
        Writer { out: String::with_capacity(1024), sep: Separators::default(), obx: 0 }
    }

    fn text(&mut self, s: &str) {
        self.out.push_str(&self.sep.escape_text(s));
    }

    /// MSH-1 to MSH-10 (`message_type` in MSH-9); the caller writes MSH-11 on.
    fn header(&mut self, id: &Identity, message_type: &str, control_id: &str, now: Timestamp) {
        self.out.push_str("MSH|^~\\&|");
        for (i, f) in [&id.sending_application, &id.sending_facility, &id.receiving_application, &id.receiving_facility]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                self.out.push('|');
            }
            self.text(f);
        }
        self.out.push('|');
        dtm(&mut self.out, now);
        let _ = write!(self.out, "||{message_type}|");
        self.text(control_id);
    }

    /// The ORU^R40 header; `processing` is MSH-11: `P` (production), `T` for a self-test alarm.
    fn msh(&mut self, id: &Identity, control_id: &str, now: Timestamp, processing: &str) {
        self.header(id, "ORU^R40^ORU_R40", control_id, now);
        let _ = write!(self.out, "|{processing}|2.6|||AL|NE||UNICODE UTF-8|||{PROFILE}\r");
    }

    fn patient(&mut self, id: &Identity, bed: &str) {
        // No patient identity leaves Vigil: the location is what the manager routes on.
        self.out.push_str("PID|1\rPV1|1||");
        self.text(&id.point_of_care);
        self.out.push_str("^^");
        self.text(bed);
        self.out.push('^');
        self.text(&id.sending_facility);
        self.out.push('\r');
    }

    /// OBR-2 (placer) and OBR-3 (filler) carry this indication's id, OBR-29 (Parent) the alert id in its filler
    /// component as in example E.3.1, each namespaced by the reporter (PCD TF-2 Rev. 9.0, B.7.1).
    fn obr(&mut self, id: &Identity, alert_id: &str, indication: &str, time: Timestamp) {
        self.out.push_str("OBR|1|");
        for _ in 0..2 {
            self.text(indication);
            self.out.push('^');
            self.text(&id.sending_application);
            self.out.push('|');
        }
        cwe(&mut self.out, MDC_EVT_ALARM);
        self.out.push_str("|||");
        dtm(&mut self.out, time);
        self.out.push_str("||||||||||||||||||||||^");
        self.text(alert_id);
        self.out.push(char::from(self.sep.subcomponent));
        self.text(&id.sending_application);
        self.out.push('\r');
    }

    /// Starts an OBX: set id, value type, identifier and sub-id; the caller writes OBX-5 on.
    fn obx(&mut self, value_type: &str, ident: Mdc, sub_id: &str) {
        self.obx += 1;
        let _ = write!(self.out, "OBX|{}|{value_type}|", self.obx);
        cwe(&mut self.out, ident);
        let _ = write!(self.out, "|{sub_id}|");
    }

    /// An ST facet with a fixed value, result status F.
    fn st(&mut self, ident: Mdc, sub_id: &str, value: &str) {
        self.obx(if value.is_empty() { "" } else { "ST" }, ident, sub_id);
        self.text(value);
        self.out.push_str("||||||F\r");
    }

    /// The device row of the DEC hierarchy; final like every OBX of a Report Alert (PCD TF-2 Rev. 9.0, B.8.6).
    fn mds(&mut self) {
        self.obx("", MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS, "1.0.0.0");
        self.out.push_str("||||||F\r");
    }
}

/// The ORU^R40 for one alarm event: MSH (control id `control_id`, sent `now`), PID, PV1 (the bed), one OBR with
/// the alarm's id and eight facets (module docs). Segments end with CR; no MLLP framing.
pub fn report_alert(event: &AlarmEvent, id: &Identity, control_id: &str, now: Timestamp) -> String {
    let mut w = Writer::new();
    // A self-test alarm is a test message (HL7 table 0103: T = training/test) and says so in its text too.
    w.msh(id, control_id, now, if event.test { PROCESSING_TEST } else { PROCESSING_PRODUCTION });
    w.patient(id, &event.bed);
    w.obr(id, &event.alarm_id, &indication_id(&event.alarm_id, event.seq), event.time);
    w.mds();
    let p = facet_prefix(event.parameter);
    let sub = |n: u32| format!("{p}.{n}");
    let text = if event.test && !event.message.starts_with("TEST") {
        format!("TEST: {}", event.message)
    } else {
        event.message.clone()
    };
    // Facet 1: the event identification, and the abnormality flag in OBX-8. Priority and type are facets 6 and
    // 7 only: their OBX-8 form is deprecated and ignored when the facets are present (Table B.8.5-1).
    let (ident, value_is_event) = event_identification(event);
    let flag = event_id(&event.condition);
    if value_is_event {
        w.obx("CWE", ident, &sub(1));
        cwe(&mut w.out, flag);
    } else {
        w.obx("ST", ident, &sub(1));
        w.text(&text);
    }
    w.out.push_str("|||");
    if flag == MDC_EVT_HI {
        w.out.push('H');
    } else if flag == MDC_EVT_LO {
        w.out.push('L');
    }
    w.out.push_str("|||F|||");
    dtm(&mut w.out, event.time);
    w.out.push('\r');
    // Facet 2: the triggering value with its unit and limit, or the source.
    match (event.parameter, event.value) {
        (Some(param), Some(v)) => {
            w.obx("NM", Mdc::new(param.mdc_code(), param.mdc_ref_id()), &sub(2));
            nm(&mut w.out, v);
            w.out.push('|');
            let u = unit(param);
            let _ = write!(w.out, "{}^{}^MDC^{}^{}^UCUM|", u.code, u.ref_id, param.ucum(), param.ucum());
            if let Some(limit) = event.limit {
                // OBX-7 as a range: the limit on the side it was crossed.
                if flag == MDC_EVT_LO {
                    nm(&mut w.out, limit);
                    w.out.push('-');
                } else {
                    w.out.push('-');
                    nm(&mut w.out, limit);
                }
            }
            w.out.push_str("||||F\r");
        }
        (param, _) => {
            w.obx("CWE", MDC_ATTR_ALERT_SOURCE, &sub(2));
            match param {
                Some(param) => cwe(&mut w.out, Mdc::new(param.mdc_code(), param.mdc_ref_id())),
                None => cwe(&mut w.out, MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS),
            }
            w.out.push_str("||||||F\r");
        }
    }
    w.st(MDC_ATTR_EVENT_PHASE, &sub(3), phase(event.phase));
    w.st(MDC_ATTR_ALARM_STATE, &sub(4), alarm_state(event.state));
    w.st(MDC_ATTR_ALARM_INACTIVATION_STATE, &sub(5), inactivation_state(event.state));
    w.st(MDC_ATTR_ALARM_PRIORITY, &sub(6), priority(event.priority));
    w.st(MDC_ATTR_ALERT_TYPE, &sub(7), alert_type(event.kind));
    w.st(MDC_ATTR_ALERT_TEXT, &sub(8), &text);
    w.out
}

/// The alert id every heartbeat of a reporter carries in its OBR.
pub fn heartbeat_alert_id(id: &Identity) -> String {
    format!("{}-heartbeat", id.sending_application)
}

/// The heartbeat ORU^R40: `MDC_EVT_ACTIVE` from the reporting device, priority `PN`, type `SA`, alarm state
/// `active` (`inactive` with phase `end` on a deliberate shutdown), and the reporter's ACK deadline
/// (`MDC_ATTR_CONFIRM_TIMEOUT`, seconds) so the manager knows when the reporter will call the link lost.
pub fn heartbeat(id: &Identity, phase: HeartbeatPhase, ack_timeout_s: u64, control_id: &str, now: Timestamp) -> String {
    let mut w = Writer::new();
    w.msh(id, control_id, now, PROCESSING_PRODUCTION);
    w.out.push_str("PID|1\rPV1|1||");
    w.text(&id.point_of_care);
    w.out.push_str("^^^");
    w.text(&id.sending_facility);
    w.out.push('\r');
    let alert_id = heartbeat_alert_id(id);
    w.obr(id, &alert_id, &indication_id(&alert_id, control_id), now);
    w.mds();
    let p = "1.0.0.0";
    w.obx("CWE", MDC_EVT_ACTIVE, &format!("{p}.1"));
    cwe(&mut w.out, MDC_EVT_ACTIVE);
    w.out.push_str("||||||F|||");
    dtm(&mut w.out, now);
    w.out.push('\r');
    w.obx("CWE", MDC_ATTR_ALERT_SOURCE, &format!("{p}.2"));
    cwe(&mut w.out, MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS);
    w.out.push_str("||||||F\r");
    let (ph, state) = match phase {
        HeartbeatPhase::Start => ("start", "active"),
        HeartbeatPhase::Update => ("update", "active"),
        HeartbeatPhase::End => ("end", "inactive"),
    };
    w.st(MDC_ATTR_EVENT_PHASE, &format!("{p}.3"), ph);
    w.st(MDC_ATTR_ALARM_STATE, &format!("{p}.4"), state);
    w.st(MDC_ATTR_ALARM_INACTIVATION_STATE, &format!("{p}.5"), "enabled");
    w.st(MDC_ATTR_ALARM_PRIORITY, &format!("{p}.6"), "PN");
    w.st(MDC_ATTR_ALERT_TYPE, &format!("{p}.7"), "SA");
    w.obx("NM", MDC_ATTR_CONFIRM_TIMEOUT, &format!("{p}.9"));
    let _ = write!(w.out, "{ack_timeout_s}|");
    cwe(&mut w.out, MDC_DIM_SEC);
    w.out.push_str("|||||F\r");
    w.out
}

/// The ACK^R41 the reporter owes an ORA^R41 (MSA `AA`).
pub fn ack_status(id: &Identity, status: &AlertStatus, control_id: &str, now: Timestamp) -> String {
    let mut w = Writer::new();
    w.header(id, "ACK^R41^ACK", control_id, now);
    w.out.push_str("|P|2.6\rMSA|AA|");
    w.text(&status.control_id);
    w.out.push('\r');
    w.out
}

/// One segment split into fields (index = HL7 field number; for MSH, field 1 is the separator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// `MSH`, `OBX`, …
    pub id: String,
    fields: Vec<String>,
    sep: Separators,
}

impl Segment {
    /// Field `n` as sent (escapes kept, components joined).
    pub fn field(&self, n: usize) -> &str {
        self.fields.get(n).map(String::as_str).unwrap_or("")
    }

    /// Component `c` (1-based) of the first repetition of field `n`, unescaped.
    pub fn component(&self, n: usize, c: usize) -> String {
        let first = self.field(n).split(char::from(self.sep.repetition)).next().unwrap_or("");
        unescape(first.split(char::from(self.sep.component)).nth(c - 1).unwrap_or(""), &self.sep)
    }

    /// Subcomponent `s` of component `c` (both 1-based) of the first repetition of field `n`, unescaped.
    pub fn subcomponent(&self, n: usize, c: usize, s: usize) -> String {
        let first = self.field(n).split(char::from(self.sep.repetition)).next().unwrap_or("");
        let comp = first.split(char::from(self.sep.component)).nth(c - 1).unwrap_or("");
        unescape(comp.split(char::from(self.sep.subcomponent)).nth(s - 1).unwrap_or(""), &self.sep)
    }

    /// Every repetition of field `n`, unescaped.
    pub fn repetitions(&self, n: usize) -> Vec<String> {
        let f = self.field(n);
        if f.is_empty() {
            return Vec::new();
        }
        f.split(char::from(self.sep.repetition)).map(|r| unescape(r, &self.sep)).collect()
    }
}

/// Splits a message into segments and fields with the separators its MSH declares. Tolerates LF and CR LF.
pub fn segments(msg: &str) -> Result<Vec<Segment>, AcmCodecError> {
    let header = hl7::parse_header(msg.as_bytes()).map_err(|e| AcmCodecError::NotHl7(e.to_string()))?;
    let sep = header.separators;
    let f = char::from(sep.field);
    let mut out = Vec::new();
    for line in msg.split(['\r', '\n']).map(str::trim_start).filter(|l| !l.trim().is_empty()) {
        let mut fields: Vec<String> = line.split(f).map(str::to_owned).collect();
        let id = fields.first().cloned().unwrap_or_default();
        if id == "MSH" {
            fields.insert(1, f.to_string());
        }
        out.push(Segment { id, fields, sep });
    }
    Ok(out)
}

/// Undoes HL7 escapes (`\F\ \S\ \R\ \E\ \T\`); other escape sequences (formatting, hex) are dropped.
pub fn unescape(s: &str, sep: &Separators) -> String {
    let esc = char::from(sep.escape);
    if !s.contains(esc) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(esc) {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find(esc) {
            Some(j) => {
                match &after[..j] {
                    "F" => out.push(char::from(sep.field)),
                    "S" => out.push(char::from(sep.component)),
                    "R" => out.push(char::from(sep.repetition)),
                    "E" => out.push(esc),
                    "T" => out.push(char::from(sep.subcomponent)),
                    _ => {}
                }
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Reads an Alert Manager's message: an ACK (of an ORU^R40) or an ORA^R41.
pub fn parse_manager_message(msg: &str) -> Result<ManagerMessage, AcmCodecError> {
    let segs = segments(msg)?;
    let msh = segs.first().ok_or_else(|| AcmCodecError::NotHl7("empty message".into()))?;
    let ty = msh.component(9, 1);
    let find = |id: &str| segs.iter().find(|s| s.id == id);
    match ty.as_str() {
        "ACK" => {
            let malformed = |reason: &str| AcmCodecError::Malformed { kind: "ACK", reason: reason.into() };
            let msa = find("MSA").ok_or_else(|| malformed("no MSA segment"))?;
            let code = msa.component(1, 1).trim().to_ascii_uppercase();
            let outcome = match code.as_str() {
                "AA" | "CA" => AckOutcome::Accepted,
                "AE" | "CE" => AckOutcome::Error,
                "AR" | "CR" => AckOutcome::Rejected,
                _ => return Err(malformed(&format!("MSA-1 '{code}' is not an acknowledgment code"))),
            };
            let control_id = msa.component(2, 1);
            if control_id.is_empty() {
                return Err(malformed("MSA-2 (the message answered) is empty"));
            }
            let err_text = find("ERR").map(|e| e.component(8, 1)).filter(|t| !t.is_empty());
            let text = Some(msa.component(3, 1)).filter(|t| !t.is_empty()).or(err_text);
            Ok(ManagerMessage::Ack(Ack { code, outcome, control_id, text }))
        }
        "ORA" => {
            let malformed = |reason: &str| AcmCodecError::Malformed { kind: "ORA^R41", reason: reason.into() };
            let obr = find("OBR").ok_or_else(|| malformed("no OBR segment"))?;
            let parent = [obr.subcomponent(29, 2, 1), obr.subcomponent(29, 1, 1)].into_iter().find(|s| !s.is_empty());
            // A manager that follows older samples echoes OBR-3, which Vigil fills with the indication id.
            let echoed = || {
                let id = [obr.component(3, 1), obr.component(2, 1)].into_iter().find(|s| !s.is_empty())?;
                Some(alert_of_indication(&id).to_owned())
            };
            let alert_id =
                parent.or_else(echoed).ok_or_else(|| malformed("OBR-29, OBR-3 and OBR-2 (the alert id) are empty"))?;
            let prt = find("PRT");
            let status = prt
                .map(|p| p.component(3, 2))
                .filter(|s| !s.is_empty())
                .or_else(|| prt.map(|p| p.component(3, 1)).filter(|s| !s.is_empty()))
                .unwrap_or_else(|| "Accepted".to_owned());
            let by = prt.and_then(|p| {
                let name = [p.component(5, 3), p.component(5, 2)]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                Some(name).filter(|s| !s.is_empty()).or_else(|| Some(p.component(5, 1)).filter(|s| !s.is_empty()))
            });
            let at = prt
                .and_then(|p| hl7::parse_dtm(p.component(11, 1).as_bytes()))
                .or_else(|| hl7::parse_dtm(msh.component(7, 1).as_bytes()));
            Ok(ManagerMessage::Status(AlertStatus { control_id: msh.component(10, 1), alert_id, status, by, at }))
        }
        other => Err(AcmCodecError::Unexpected(if other.is_empty() { "(empty MSH-9)".into() } else { other.into() })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn id() -> Identity {
        Identity {
            sending_application: "VIGIL".into(),
            sending_facility: "demo-clinic".into(),
            receiving_application: "AM".into(),
            receiving_facility: "HOSP".into(),
            point_of_care: "ketamine-suite".into(),
        }
    }

    fn t(s: u32) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 1, 1, 8, 0, s).unwrap()
    }

    fn spo2_low() -> AlarmEvent {
        AlarmEvent {
            time: t(5),
            bed: "chair-1".into(),
            alarm_id: "chair-1-a7".into(),
            seq: 1,
            bed_seq: 3,
            kind: AlarmKind::Threshold,
            source: Default::default(),
            condition: "spo2_low".into(),
            parameter: Some(Parameter::Spo2),
            priority: Priority::High,
            phase: AlarmPhase::Start,
            state: AlarmState::Active,
            value: Some(85.0),
            limit: Some(88.0),
            evidence: Default::default(),
            test: false,
            message: "SpO2 85 < 88".into(),
            by: None,
            audio_paused_until: None,
        }
    }

    /// The facet with OBX-4 ending in `.n`.
    fn facet(segs: &[Segment], n: u32) -> &Segment {
        let suffix = format!(".{n}");
        segs.iter()
            .find(|s| s.id == "OBX" && s.field(4).ends_with(&suffix) && s.field(4).matches('.').count() == 4)
            .unwrap()
    }

    #[test]
    fn a_self_test_alarm_is_a_test_message_in_msh_11_and_says_test_while_a_real_one_is_production() {
        let real = report_alert(&spo2_low(), &id(), "c1", t(6));
        assert_eq!(segments(&real).unwrap()[0].field(11), "P");
        let mut test = spo2_low();
        test.test = true;
        test.message = "Vigil self-test".into();
        let segs = segments(&report_alert(&test, &id(), "c2", t(6))).unwrap();
        assert_eq!(segs[0].field(11), "T");
        assert_eq!(facet(&segs, 8).field(5), "TEST: Vigil self-test");
        test.message = "TEST alarm: Vigil self-test".into();
        let segs = segments(&report_alert(&test, &id(), "c3", t(6))).unwrap();
        assert_eq!(facet(&segs, 8).field(5), "TEST alarm: Vigil self-test", "not said twice");
        let beat = heartbeat(&id(), HeartbeatPhase::Update, 5, "c4", t(6));
        assert_eq!(segments(&beat).unwrap()[0].field(11), "P");
    }

    #[test]
    fn an_spo2_low_start_reads_back_with_every_facet_through_the_parser() {
        let msg = report_alert(&spo2_low(), &id(), "c1", t(6));
        let segs = segments(&msg).unwrap();
        let msh = &segs[0];
        assert_eq!(msh.field(9), "ORU^R40^ORU_R40");
        assert_eq!(msh.field(10), "c1");
        assert_eq!(msh.field(12), "2.6");
        assert_eq!((msh.field(15), msh.field(16)), ("AL", "NE"));
        assert_eq!(msh.field(21), PROFILE);
        let obr: Vec<_> = segs.iter().filter(|s| s.id == "OBR").collect();
        assert_eq!(obr.len(), 1, "one OBR per alarm");
        assert_eq!(obr[0].component(3, 1), "chair-1-a7.1");
        assert_eq!(obr[0].subcomponent(29, 2, 1), "chair-1-a7");
        assert_eq!(obr[0].field(4), "196616^MDC_EVT_ALARM^MDC");
        assert_eq!(obr[0].field(7), "20260101080005+0000");
        let pv1 = segs.iter().find(|s| s.id == "PV1").unwrap();
        assert_eq!(pv1.component(3, 3), "chair-1");
        let f1 = facet(&segs, 1);
        assert_eq!(f1.field(4), "1.1.1.150456.1");
        assert_eq!((f1.field(2), f1.field(3)), ("ST", "196670^MDC_EVT_LO^MDC"));
        assert_eq!(f1.component(5, 1), "SpO2 85 < 88");
        assert_eq!(f1.repetitions(8), vec!["L"]);
        let f2 = facet(&segs, 2);
        assert_eq!((f2.field(2), f2.field(3), f2.field(5)), ("NM", "150456^MDC_PULS_OXIM_SAT_O2^MDC", "85"));
        assert_eq!(f2.component(6, 1), "262688");
        assert_eq!(f2.component(6, 4), "%");
        assert_eq!(f2.field(7), "88-");
        let values: Vec<(String, String)> =
            (3..=8).map(|n| (facet(&segs, n).component(3, 2), facet(&segs, n).component(5, 1))).collect();
        assert_eq!(
            values,
            [
                ("MDC_ATTR_EVENT_PHASE", "start"),
                ("MDC_ATTR_ALARM_STATE", "active"),
                ("MDC_ATTR_ALARM_INACTIVATION_STATE", "enabled"),
                ("MDC_ATTR_ALARM_PRIORITY", "PH"),
                ("MDC_ATTR_ALERT_TYPE", "SP"),
                ("MDC_ATTR_ALERT_TEXT", "SpO2 85 < 88"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
    }

    #[test]
    fn a_physiological_alarm_names_its_own_event_code_in_obx_3_and_a_technical_one_keeps_mdc_evt_alarm() {
        let mut hi = spo2_low();
        hi.condition = "hr_high".into();
        hi.parameter = Some(Parameter::Hr);
        hi.message = "HR 150 > 120".into();
        let segs = segments(&report_alert(&hi, &id(), "c", t(6))).unwrap();
        let f1 = facet(&segs, 1);
        assert_eq!((f1.field(2), f1.field(3), f1.field(5)), ("ST", "196648^MDC_EVT_HI^MDC", "HR 150 > 120"));
        assert_eq!(f1.repetitions(8), vec!["H"], "priority and type are facets 6 and 7, not OBX-8");
        let mut tech = spo2_low();
        tech.kind = AlarmKind::Technical;
        tech.condition = "low_battery".into();
        let segs = segments(&report_alert(&tech, &id(), "c", t(6))).unwrap();
        let f1 = facet(&segs, 1);
        assert_eq!(
            (f1.field(2), f1.field(3), f1.field(5)),
            ("CWE", "196616^MDC_EVT_ALARM^MDC", "196802^MDC_EVT_BATT_LO^MDC")
        );
    }

    #[test]
    fn every_message_of_an_alarm_carries_its_alert_id_in_obr_29_and_its_own_indication_id_in_obr_3() {
        let start = spo2_low();
        let mut end = spo2_low();
        end.seq = 3;
        end.phase = AlarmPhase::End;
        end.state = AlarmState::Cleared;
        let obr = |e: &AlarmEvent| {
            let segs = segments(&report_alert(e, &id(), "c", t(6))).unwrap();
            segs.into_iter().find(|s| s.id == "OBR").unwrap()
        };
        let (a, b) = (obr(&start), obr(&end));
        assert_eq!((a.subcomponent(29, 2, 1), a.subcomponent(29, 2, 2)), ("chair-1-a7".into(), "VIGIL".into()));
        assert_eq!(b.subcomponent(29, 2, 1), "chair-1-a7", "the same parent on the end");
        assert_eq!((a.component(3, 1), b.component(3, 1)), ("chair-1-a7.1".into(), "chair-1-a7.3".into()));
        assert_eq!(a.component(2, 1), a.component(3, 1));
        let beat = segments(&heartbeat(&id(), HeartbeatPhase::Update, 5, "h9", t(0))).unwrap();
        let beat_obr = beat.iter().find(|s| s.id == "OBR").unwrap();
        assert_eq!(beat_obr.subcomponent(29, 2, 1), "VIGIL-heartbeat");
        assert_eq!(beat_obr.component(3, 1), "VIGIL-heartbeat.h9");
    }

    #[test]
    fn every_obx_of_an_alert_and_of_the_heartbeat_is_final_the_device_row_too() {
        for msg in [report_alert(&spo2_low(), &id(), "c", t(6)), heartbeat(&id(), HeartbeatPhase::Start, 5, "h", t(0))]
        {
            let segs = segments(&msg).unwrap();
            let obx: Vec<_> = segs.iter().filter(|s| s.id == "OBX").collect();
            assert!(obx.len() >= 8);
            for o in obx {
                assert_eq!(o.field(11), "F", "{}", o.field(3));
            }
        }
    }

    #[test]
    fn hl7_delimiters_in_alarm_text_and_names_are_escaped_and_come_back_unchanged() {
        let mut e = spo2_low();
        e.message = "a|b^c~d\\e&f\rg".into();
        let mut ident = id();
        ident.point_of_care = "ward|7^x".into();
        let msg = report_alert(&e, &ident, "c|2", t(6));
        let segs = segments(&msg).unwrap();
        assert_eq!(segs.iter().filter(|s| s.id == "OBX").count(), 9, "no delimiter split a segment");
        assert_eq!(facet(&segs, 8).component(5, 1), "a|b^c~d\\e&f g");
        assert!(facet(&segs, 8).field(5).contains("\\F\\"));
        let pv1 = segs.iter().find(|s| s.id == "PV1").unwrap();
        assert_eq!(pv1.component(3, 1), "ward|7^x");
        assert_eq!(segs[0].component(10, 1), "c|2");
    }

    #[test]
    fn phases_states_and_types_map_to_the_acm_vocabulary() {
        let mut e = spo2_low();
        e.phase = AlarmPhase::Escalate;
        e.state = AlarmState::Acknowledged;
        e.kind = AlarmKind::Technical;
        e.condition = "sensor_off".into();
        e.value = None;
        e.priority = Priority::Medium;
        let segs = segments(&report_alert(&e, &id(), "c", t(6))).unwrap();
        assert_eq!(facet(&segs, 1).field(3), "196616^MDC_EVT_ALARM^MDC");
        assert_eq!(facet(&segs, 1).field(5), "196616^MDC_EVT_ALARM^MDC");
        assert!(facet(&segs, 1).repetitions(8).is_empty());
        assert_eq!(facet(&segs, 2).field(3), "68480^MDC_ATTR_ALERT_SOURCE^MDC");
        assert_eq!(facet(&segs, 2).field(5), "150456^MDC_PULS_OXIM_SAT_O2^MDC");
        assert_eq!(facet(&segs, 3).field(5), "update");
        assert_eq!(facet(&segs, 4).field(5), "active");
        assert_eq!(facet(&segs, 5).field(5), "alert-acknowledged");
        e.phase = AlarmPhase::End;
        e.state = AlarmState::Cleared;
        e.parameter = None;
        let segs = segments(&report_alert(&e, &id(), "c", t(6))).unwrap();
        assert_eq!(facet(&segs, 3).field(4), "1.0.0.0.3");
        assert_eq!((facet(&segs, 3).field(5), facet(&segs, 4).field(5)), ("end", "inactive"));
        assert_eq!(event_id("nibp_sys_high"), MDC_EVT_HI);
        assert_eq!(event_id("apnoea"), MDC_EVT_APNEA);
        assert_eq!(event_id("spo2_low_poor_signal"), MDC_EVT_LO);
        assert_eq!(alert_type(AlarmKind::Advisory), "SA");
    }

    #[test]
    fn the_heartbeat_carries_mdc_evt_active_and_the_ack_deadline() {
        let segs = segments(&heartbeat(&id(), HeartbeatPhase::Start, 5, "h1", t(0))).unwrap();
        let f1 = facet(&segs, 1);
        assert_eq!(f1.field(3), "196614^MDC_EVT_ACTIVE^MDC");
        assert_eq!(facet(&segs, 6).field(5), "PN");
        let timeout = facet(&segs, 9);
        assert_eq!((timeout.component(3, 2).as_str(), timeout.field(5)), ("MDC_ATTR_CONFIRM_TIMEOUT", "5"));
        let end = segments(&heartbeat(&id(), HeartbeatPhase::End, 5, "h2", t(0))).unwrap();
        assert_eq!((facet(&end, 3).field(5), facet(&end, 4).field(5)), ("end", "inactive"));
    }

    #[test]
    fn acks_are_read_in_original_and_enhanced_mode_with_the_reason() {
        let aa = "MSH|^~\\&|AM||VIGIL||20260101080006||ACK^R40^ACK|9|P|2.6\rMSA|AA|c1\r";
        assert_eq!(
            parse_manager_message(aa).unwrap(),
            ManagerMessage::Ack(Ack {
                code: "AA".into(),
                outcome: AckOutcome::Accepted,
                control_id: "c1".into(),
                text: None
            })
        );
        let ca = "MSH|^~\\&#|||||20191105183942||ACK^R40|||2.7\nMSA|CA|79\n";
        assert!(matches!(
            parse_manager_message(ca),
            Ok(ManagerMessage::Ack(Ack { outcome: AckOutcome::Accepted, .. }))
        ));
        let ar = "MSH|^~\\&|AM||||20260101||ACK|9|P|2.6\rMSA|AR|c1\rERR|||207^x^HL70357|E||||bed unknown \\T\\ gone\r";
        match parse_manager_message(ar).unwrap() {
            ManagerMessage::Ack(a) => {
                assert_eq!(a.outcome, AckOutcome::Rejected);
                assert_eq!(a.text.as_deref(), Some("bed unknown & gone"));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_manager_message("MSH|^~\\&|AM||||20260101||ACK|9|P|2.6\rMSA|ZZ|c1\r").is_err());
        assert!(parse_manager_message("MSH|^~\\&|AM||||20260101||ACK|9|P|2.6\r").is_err());
        assert!(matches!(parse_manager_message("hello"), Err(AcmCodecError::NotHl7(_))));
        assert!(matches!(
            parse_manager_message("MSH|^~\\&|AM||||20260101||ADT^A01|9|P|2.6\r"),
            Err(AcmCodecError::Unexpected(_))
        ));
    }

    #[test]
    fn an_ora_r41_names_the_alert_who_took_it_and_when() {
        // The framework's form (PCD TF-2 Rev. 9.0, B.10): OBR-29 the alert, OBR-3 the indication, PRT-2 the action
        // code, PRT-3.2 the status in coding system IHE_PCD_ACM, PRT-4 RO/AAP.
        let ora = "MSH|^~\\&|AM|HOSP|VIGIL||20260101080010+0000||ORA^R41^ORA_R41|a5|P|2.6\r\
                   MSA|AA|c1\rOBR|1|chair-1-a7.2^VIGIL|chair-1-a7.2^VIGIL|196616^MDC_EVT_ALARM^MDC\
                   |||||||||||||||||||||||||^chair-1-a7&VIGIL\r\
                   PRT|d1^AM|UP|^Accepted^IHE_PCD_ACM|^RO^^AAP|n42^Smith^Nina||||||20260101080009+0000\r";
        let ManagerMessage::Status(s) = parse_manager_message(ora).unwrap() else { panic!() };
        assert_eq!(s.alert_id, "chair-1-a7");
        assert_eq!(s.status, "Accepted");
        assert!(s.is_acknowledgement());
        assert_eq!(s.by.as_deref(), Some("Nina Smith"));
        assert_eq!(s.at, Some(t(9)));
        assert_eq!(s.control_id, "a5");
        let only_action = "MSH|^~\\&|AM||||20260101||ORA^R41^ORA_R41|a6|P|2.6\rOBR|1||chair-1-a7^VIGIL\rPRT|1|UP\r";
        let ManagerMessage::Status(o) = parse_manager_message(only_action).unwrap() else { panic!() };
        assert_eq!((o.alert_id.as_str(), o.status.as_str()), ("chair-1-a7", "Accepted"), "PRT-2 is the action code");
        let echoed = "MSH|^~\\&|AM||||20260101||ORA^R41^ORA_R41|a7|P|2.6\rOBR|1||chair-1-a7.2^VIGIL\rPRT|||Accepted\r";
        let ManagerMessage::Status(e) = parse_manager_message(echoed).unwrap() else { panic!() };
        assert_eq!(
            e.alert_id, "chair-1-a7",
            "an older manager that echoes the indication id in OBR-3 reaches the alert"
        );
        let delivered = "MSH|^~\\&#||MockAM|||20191105183942||ORA^R41^ORA_R41|79||2.7\rOBR|||1^381a\rPRT|||Delivered\r";
        let ManagerMessage::Status(d) = parse_manager_message(delivered).unwrap() else { panic!() };
        assert_eq!((d.alert_id.as_str(), d.status.as_str(), d.by.as_deref()), ("1", "Delivered", None));
        assert!(!d.is_acknowledgement());
        let ack = ack_status(&id(), &s, "r1", t(11));
        let segs = segments(&ack).unwrap();
        assert_eq!(segs[0].field(9), "ACK^R41^ACK");
        assert_eq!(segs[1].field(2), "a5");
    }
}
