//! Philips IntelliVue Data Export, monitor side: answers a host's association request with an accept and the
//! MDS Create event, and its extended polls with the numerics (SpO2, pleth pulse, respiration, perfusion index,
//! NIBP) and the alert lists of the current second; MIB/RS-232 framing (`C0 … C1`, `7D` escaping, the `11 01`
//! header, FCS-16 of RFC 1662). Encodings as the daemon's `docs/sources.md` ("Philips IntelliVue") describes
//! them; written again here so that the simulator and the decoder do not share a mistake.
//!
//! The monitor raises its own alarms like an IntelliVue with default limits: `SpO2 LOW` (medium, yellow) below
//! 90 %, `Pulse HIGH` above 120 and `Pulse LOW` below 50 /min (medium), and the INOPs `SpO2 NO SENSOR`,
//! `SpO2 SENSOR OFF` and `SpO2 SEARCHING` (low-priority technical).

use crate::sim::{Sample, SensorState};

/// Frame start.
pub const BOF: u8 = 0xC0;
/// Frame end.
pub const EOF: u8 = 0xC1;
/// Escape.
pub const ESC: u8 = 0x7D;

/// SpO2 low limit (IntelliVue adult default), %.
pub const SPO2_LOW_LIMIT: u8 = 90;
/// Pulse high limit, /min.
pub const PULSE_HIGH_LIMIT: u16 = 120;
/// Pulse low limit, /min.
pub const PULSE_LOW_LIMIT: u16 = 50;

const FCS_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut v = i as u16;
        let mut k = 0;
        while k < 8 {
            v = if v & 1 == 1 { (v >> 1) ^ 0x8408 } else { v >> 1 };
            k += 1;
        }
        table[i] = v;
        i += 1;
    }
    table
};

/// RFC 1662 FCS-16 (table-driven), complemented as transmitted.
pub fn fcs(data: &[u8]) -> u16 {
    !data.iter().fold(0xFFFFu16, |f, &b| (f >> 8) ^ FCS_TABLE[usize::from((f ^ u16::from(b)) as u8)])
}

/// One message as a MIB/RS-232 frame.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut inner = vec![0x11, 0x01];
    inner.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    inner.extend_from_slice(payload);
    let sum = fcs(&inner);
    inner.extend_from_slice(&sum.to_le_bytes());
    let mut out = vec![BOF];
    for b in inner {
        match b {
            BOF | EOF | ESC => out.extend_from_slice(&[ESC, b ^ 0x20]),
            _ => out.push(b),
        }
    }
    out.push(EOF);
    out
}

/// Takes the complete, intact frames out of what the host sent so far (the rest waits for more bytes); bad
/// frames are dropped, as the monitor does.
pub fn host_frames(received: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let Some(start) = received.iter().position(|b| *b == BOF) else {
            received.clear();
            return out;
        };
        let Some(len) = received[start + 1..].iter().position(|b| *b == EOF) else {
            received.drain(..start);
            if received.len() > 64 * 1024 {
                received.clear();
            }
            return out;
        };
        let raw: Vec<u8> = received[start + 1..start + 1 + len].to_vec();
        received.drain(..start + len + 2);
        let mut body = Vec::with_capacity(raw.len());
        let mut esc = false;
        for b in raw {
            if b == ESC {
                esc = true;
            } else if std::mem::take(&mut esc) {
                body.push(b ^ 0x20);
            } else {
                body.push(b);
            }
        }
        if body.len() < 6 {
            continue;
        }
        let (data, sum) = body.split_at(body.len() - 2);
        if fcs(data) == u16::from_le_bytes([sum[0], sum[1]]) && data[..2] == [0x11, 0x01] {
            out.push(data[4..].to_vec());
        }
    }
}

fn u16s(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn with_len(head: &[u16], body: &[u8]) -> Vec<u8> {
    let mut out = u16s(head);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// `E1 00 00 02`, the remote-operation type and its length, and `body`.
fn data_pdu(ro_type: u16, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xE1, 0x00, 0x00, 0x02];
    out.extend(with_len(&[ro_type], body));
    out
}

/// The association accept (session `0E`), with the poll profile the monitor grants: 1 s numerics.
pub fn association_accept() -> Vec<u8> {
    // Presentation and ACSE parts as in the request, result "accepted"; MDSEUserInfoStd with the poll profile.
    let mut user = Vec::new();
    for v in [0x8000_0000u32, 0x4000_0000, 0, 0x8000_0000, 0x2000_0000] {
        user.extend_from_slice(&v.to_be_bytes());
    }
    user.extend(u16s(&[0, 0]));
    let mut ext = u16s(&[0xF001, 8]);
    ext.extend_from_slice(&0x8000_0000u32.to_be_bytes());
    ext.extend(u16s(&[0, 0]));
    let mut support = Vec::new();
    for v in [0x8000_0000u32, 8000, 1364, 1364, 0xFFFF_FFFF, 0x6000_0000] {
        support.extend_from_slice(&v.to_be_bytes());
    }
    support.extend(with_len(&[1], &ext));
    let profiles = with_len(&[0x0001], &support);
    user.extend(with_len(&[1], &profiles));
    let mut pres = vec![0x31, 0x80, 0xA0, 0x80, 0x80, 0x01, 0x01, 0x00, 0x00, 0xA2, 0x80, 0xA0, 0x03, 0x00, 0x00];
    pres.extend_from_slice(&[0x02, 0x61, 0x80, 0x30, 0x80, 0x02, 0x01, 0x01, 0xA0, 0x80, 0x61, 0x80, 0xBE, 0x80]);
    pres.extend_from_slice(&[0x28, 0x80, 0x02, 0x01, 0x02, 0x81, user.len() as u8]);
    pres.extend(user);
    pres.extend_from_slice(&[0; 12]);
    let mut out = vec![0x0E, (pres.len() + 2) as u8, 0xC1, pres.len() as u8];
    out.extend(pres);
    out
}

/// The MDS Create event report the monitor sends after accepting.
pub fn mds_create_event(invoke_id: u16) -> Vec<u8> {
    // Event report argument: the MDS, relative time, NOM_NOTI_MDS_CREAT, then MdsCreateInfo: the MDS and an
    // attribute list (here only the system type: a multi-parameter monitor).
    let attrs = with_len(&[1], &u16s(&[0x0986, 4, 0x0001, 0x114D]));
    let mut info = u16s(&[33, 0, 0]);
    info.extend(attrs);
    let mut arg = u16s(&[33, 0, 0]);
    arg.extend_from_slice(&0u32.to_be_bytes());
    arg.extend(with_len(&[0x0D06], &info));
    data_pdu(1, &with_len(&[invoke_id, 1], &arg))
}

/// One alarm the monitor shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Physio id it is about.
    pub source: u16,
    /// Event code.
    pub code: u16,
    /// Alert type (priority, patient or technical).
    pub alert_type: u16,
    /// The text on the screen.
    pub text: &'static str,
}

const SPO2: u16 = 0x4BB8;
const PLETH_PULSE: u16 = 0x4822;
const NIBP: u16 = 0x4A04;
const EVT_LO: u16 = 62;
const EVT_HI: u16 = 40;
const EVT_DISCONN: u16 = 22;
const EVT_UNAVAIL: u16 = 110;
const MED_PRI_P_AL: u16 = 512;
const LOW_PRI_T_AL: u16 = 1;

/// The monitor's own alarms for one second: patient alarms and INOPs.
pub fn alerts(s: &Sample) -> (Vec<Alert>, Vec<Alert>) {
    let mut patient = Vec::new();
    if s.shown.spo2.is_some_and(|v| v < SPO2_LOW_LIMIT) {
        patient.push(Alert { source: SPO2, code: EVT_LO, alert_type: MED_PRI_P_AL, text: "SpO2 LOW" });
    }
    match s.shown.pulse {
        Some(p) if p > PULSE_HIGH_LIMIT => {
            patient.push(Alert { source: PLETH_PULSE, code: EVT_HI, alert_type: MED_PRI_P_AL, text: "Pulse HIGH" })
        }
        Some(p) if p < PULSE_LOW_LIMIT => {
            patient.push(Alert { source: PLETH_PULSE, code: EVT_LO, alert_type: MED_PRI_P_AL, text: "Pulse LOW" })
        }
        _ => {}
    }
    let inop = |code, text| Alert { source: SPO2, code, alert_type: LOW_PRI_T_AL, text };
    let technical = match s.sensor {
        SensorState::NoSensor => vec![inop(EVT_DISCONN, "SpO2 NO SENSOR")],
        SensorState::ProbeOff { .. } => vec![inop(EVT_UNAVAIL, "SpO2 SENSOR OFF")],
        SensorState::PulseSearch => vec![inop(EVT_UNAVAIL, "SpO2 SEARCHING")],
        SensorState::Ok | SensorState::Artefact => Vec::new(),
    };
    (patient, technical)
}

fn bcd(v: u32) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

/// An `AbsoluteTime` (BCD, hundredths zero).
pub fn abs_time(t: chrono::DateTime<chrono::Utc>) -> [u8; 8] {
    use chrono::{Datelike, Timelike};
    let y = t.year() as u32;
    [bcd(y / 100), bcd(y % 100), bcd(t.month()), bcd(t.day()), bcd(t.hour()), bcd(t.minute()), bcd(t.second()), 0]
}

/// FLOAT-Type: exponent `exp` (signed), 24-bit mantissa; `None` is NaN.
pub fn float(value: Option<f64>, exp: i8) -> u32 {
    match value {
        Some(v) => (u32::from(exp as u8) << 24) | ((v * 10f64.powi(-i32::from(exp))).round() as i32 as u32 & 0xFF_FFFF),
        None => 0x007F_FFFF,
    }
}

/// `NuObsValue`: physio id, state, unit, value.
pub fn nu_obs(physio: u16, state: u16, unit: u16, value: u32) -> Vec<u8> {
    let mut v = u16s(&[physio, state, unit]);
    v.extend_from_slice(&value.to_be_bytes());
    v
}

/// One polled object: its handle and attributes (id, value).
pub fn observation(handle: u16, attributes: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut list = Vec::new();
    for (id, value) in attributes {
        list.extend(with_len(&[*id], value));
    }
    let mut out = u16s(&[handle, attributes.len() as u16]);
    out.extend_from_slice(&(list.len() as u16).to_be_bytes());
    out.extend(list);
    out
}

/// Measurement state bits for the oximeter's values this second.
fn oximeter_state(s: &Sample) -> u16 {
    let mut state = match s.sensor {
        SensorState::Ok => 0,
        SensorState::Artefact => 0x4000, // questionable
        _ => 0x2000,                     // unavailable
    };
    if s.demo {
        state |= 0x0400;
    }
    state
}

/// A poll result (an extended poll's `RORS`): the objects of `class` with `observations`.
pub fn poll_result(
    invoke_id: u16,
    poll_number: u16,
    class: u16,
    group: u16,
    time: [u8; 8],
    observations: &[Vec<u8>],
) -> Vec<u8> {
    let objects: Vec<u8> = observations.concat();
    let mut context = u16s(&[0, observations.len() as u16]);
    context.extend_from_slice(&(objects.len() as u16).to_be_bytes());
    context.extend(objects);
    let mut reply = u16s(&[poll_number, 0]);
    reply.extend_from_slice(&0u32.to_be_bytes());
    reply.extend_from_slice(&time);
    reply.extend(u16s(&[1, class, group]));
    reply.extend(with_len(&[1], &context));
    let mut action = u16s(&[33, 0, 0]);
    action.extend(with_len(&[0xF13B], &reply));
    data_pdu(2, &with_len(&[invoke_id, 7], &action))
}

/// The numerics of one second: SpO2, pleth pulse, respiration, perfusion index and the last NIBP.
pub fn numerics_result(
    invoke_id: u16,
    poll_number: u16,
    s: &Sample,
    nibp: Option<&crate::sim::NibpReading>,
) -> Vec<u8> {
    let ox = oximeter_state(s);
    let demo = if s.demo { 0x0400 } else { 0 };
    let spo2 = s.shown.spo2.map(f64::from).filter(|_| ox & 0x2000 == 0);
    let pulse = s.shown.pulse.map(f64::from).filter(|_| ox & 0x2000 == 0);
    let mut obs = vec![
        observation(0x0050, &[(0x0950, nu_obs(SPO2, ox, 0x0220, float(spo2, -1)))]),
        observation(0x0051, &[(0x0950, nu_obs(PLETH_PULSE, ox, 0x0AA0, float(pulse, 0)))]),
        observation(0x0052, &[(0x0950, nu_obs(0x4BB0, ox, 0x0200, float(s.shown.pi, -2)))]),
        observation(0x0053, &[(0x0950, nu_obs(0x500A, demo, 0x0AE0, float(s.shown.resp.map(f64::from), 0)))]),
    ];
    if let Some(values) = nibp.and_then(|n| n.values.map(|v| (n.started, v))) {
        let (at, v) = values;
        let mut cmpd = u16s(&[3, 30]);
        for (id, value) in [(0x4A05, v.systolic), (0x4A06, v.diastolic), (0x4A07, v.mean)] {
            cmpd.extend(nu_obs(id, demo, 0x0F20, float(Some(f64::from(value)), 0)));
        }
        obs.push(observation(0x0054, &[(0x094B, cmpd), (0x0990, abs_time(at).to_vec())]));
    }
    poll_result(invoke_id, poll_number, 6, 0x0803, abs_time(s.device_time), &obs)
}

fn alert_list(alerts: &[Alert]) -> Vec<u8> {
    let mut entries = Vec::new();
    for (i, a) in alerts.iter().enumerate() {
        let text: Vec<u8> = a.text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let mut info = u16s(&[i as u16 + 1]);
        info.extend_from_slice(&0u32.to_be_bytes());
        info.extend(with_len(&[0, 0], &text));
        let handle = if a.source == SPO2 {
            0x0050
        } else if a.source == NIBP {
            0x0054
        } else {
            0x0051
        };
        entries.extend(u16s(&[a.source, a.code, a.alert_type, 0, 6, 0, handle]));
        entries.extend(with_len(&[516], &info));
    }
    with_len(&[alerts.len() as u16], &entries)
}

/// The alert monitor of one second: the patient and the technical alarm lists.
pub fn alerts_result(invoke_id: u16, poll_number: u16, s: &Sample) -> Vec<u8> {
    let (patient, technical) = alerts(s);
    let obs = observation(0x0001, &[(0x0902, alert_list(&patient)), (0x0904, alert_list(&technical))]);
    poll_result(invoke_id, poll_number, 54, 0x0801, abs_time(s.device_time), &[obs])
}

/// The release response.
pub fn release_response() -> Vec<u8> {
    let mut out = vec![0x0A, 0x18, 0xC1, 0x16, 0x61, 0x80, 0x30, 0x80, 0x02, 0x01, 0x01, 0xA0, 0x80, 0x63, 0x80];
    out.extend_from_slice(&[0x80, 0x01, 0x00]);
    out.extend_from_slice(&[0; 8]);
    out
}

/// What the monitor sends on its own for one second when a host polls every second: a numerics and an alert
/// result. A file or stdout output gets these (after the accept and the MDS Create event at second 0), which is
/// what a capture of the monitor → host direction of a live session holds.
pub fn second_of_output(s: &Sample, nibp: Option<&crate::sim::NibpReading>, n: u16) -> Vec<u8> {
    let mut out = Vec::new();
    if s.offset_s == 0 {
        out.extend(frame(&association_accept()));
        out.extend(frame(&mds_create_event(1)));
    }
    out.extend(frame(&numerics_result(n.wrapping_mul(2), n, s, nibp)));
    out.extend(frame(&alerts_result(n.wrapping_mul(2).wrapping_add(1), n, s)));
    out
}

/// The monitor's side of the session.
#[derive(Debug, Clone, Default)]
pub struct Monitor {
    associated: bool,
    invoke_id: u16,
    /// Associations accepted so far.
    pub associations: u32,
}

impl Monitor {
    /// A monitor that has just booted.
    pub fn new() -> Monitor {
        Monitor::default()
    }

    /// The monitor restarts: the association is gone, polls are ignored until the host associates again.
    pub fn restart(&mut self) {
        self.associated = false;
    }

    /// Whether a host is associated.
    pub fn associated(&self) -> bool {
        self.associated
    }

    /// Answers one message of the host with the current second's data.
    pub fn answer(&mut self, request: &[u8], s: &Sample, nibp: Option<&crate::sim::NibpReading>) -> Vec<Vec<u8>> {
        match request.first() {
            Some(0x0D) => {
                self.associated = true;
                self.associations += 1;
                self.invoke_id = self.invoke_id.wrapping_add(1);
                vec![association_accept(), mds_create_event(self.invoke_id)]
            }
            Some(0x09) => {
                self.associated = false;
                vec![release_response()]
            }
            Some(0x19) => {
                self.associated = false;
                Vec::new()
            }
            Some(0xE1) if self.associated => self.answer_data(request, s, nibp).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    fn answer_data(&mut self, r: &[u8], s: &Sample, nibp: Option<&crate::sim::NibpReading>) -> Option<Vec<u8>> {
        let word = |i: usize| r.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        // E1 00 00 02 | ro_type len | invoke command len | MDS object (6) scope (4) | action len | request…
        if word(4)? != 1 || word(10)? != 7 {
            return None; // not a confirmed action (the MDS Create result, …)
        }
        let invoke = word(8)?;
        let action = word(24)?;
        let poll = word(28)?;
        let class = word(32)?;
        match (action, class) {
            (0xF13B, 6) => Some(numerics_result(invoke, poll, s, nibp)),
            (0xF13B, 54) => Some(alerts_result(invoke, poll, s)),
            // Anything else polled (the keep-alive's MDS poll): an empty result of that class.
            (_, class) => Some(poll_result(invoke, poll, class, 0, abs_time(s.device_time), &[])),
        }
    }
}
