//! `vigil decode --format masimo|nonin|hl7|intellivue|s5 FILE`: a raw device capture through the daemon's own
//! decoders, printed as JSON lines: one per reading (`parameter`, `value`, `status`, `device_time`, `mdc`), one
//! per device alarm (`kind: "device_alarm"`, `source`, `priority`, `text`, `state`), then a summary of frames
//! good and bad. A tool to look at what a monitor sends before wiring it to a bed.
//!
//! IntelliVue captures are the MIB/RS-232 byte stream (the monitor → host direction as a serial tap or
//! `vigil-sim --device intellivue --output file:…` records it, or both directions), LAN datagram payloads back to
//! back, or a pcap/pcapng file of the UDP traffic of port 24105 ([`capture`]); every numeric is printed, Vigil's
//! parameter or not (`parameter` null, the physio id and MDC code say what it is), with `received`, the packet
//! time, for a pcap.

use std::io::Write;
use std::path::Path;

use bytes::BytesMut;
use serde_json::{json, Value};
use tokio_util::codec::Decoder;

use crate::config::DeviceKind;
use crate::ingest::protocol::intellivue::{self, capture, DeviceClock, Pdu};
use crate::ingest::protocol::{DecodeError, DeviceAlarmPriority, Frame};
use crate::ingest::AnyDecoder;
use crate::vitals::Timestamp;

/// Why `vigil decode` could not run.
#[derive(Debug, thiserror::Error)]
pub enum DecodeCliError {
    /// The file cannot be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The format is not one Vigil decodes.
    #[error("unknown --format '{0}' (masimo, nonin, hl7, intellivue, s5)")]
    UnknownFormat(String),
    /// A pcap/pcapng file that cannot be read.
    #[error("cannot read the capture {file}: {reason}")]
    Capture {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// Writing the output failed (a closed pipe).
    #[error("cannot write the output: {0}")]
    Write(std::io::Error),
}

/// Frames decoded and not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Frames (messages) decoded.
    pub frames_ok: u64,
    /// Frames that could not be decoded.
    pub frames_bad: u64,
    /// Readings printed.
    pub readings: u64,
    /// Device alarm entries printed.
    pub device_alarms: u64,
}

/// Most decode errors quoted in the summary.
const MAX_ERRORS_SHOWN: usize = 10;

fn time(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
}

fn priority_name(p: DeviceAlarmPriority) -> &'static str {
    match p {
        DeviceAlarmPriority::High => "high",
        DeviceAlarmPriority::Medium => "medium",
        DeviceAlarmPriority::Low => "low",
        DeviceAlarmPriority::Info => "info",
    }
}

/// Decodes `path` as `format` and writes the JSON lines to `out`.
pub fn run(format: &str, path: &Path, out: &mut impl Write) -> Result<Summary, DecodeCliError> {
    let device = match format {
        "masimo" => DeviceKind::Masimo,
        "nonin" => DeviceKind::Nonin,
        "hl7" => DeviceKind::Hl7,
        "intellivue" => DeviceKind::Intellivue,
        "s5" => DeviceKind::S5,
        other => return Err(DecodeCliError::UnknownFormat(other.to_owned())),
    };
    let bytes =
        std::fs::read(path).map_err(|source| DecodeCliError::Read { file: path.display().to_string(), source })?;
    let mut summary = Summary::default();
    let mut errors = Vec::new();
    let line = |v: Value, out: &mut dyn Write| writeln!(out, "{v}").map_err(DecodeCliError::Write);
    let mut note = |e: DecodeError, summary: &mut Summary| {
        summary.frames_bad += 1;
        if errors.len() < MAX_ERRORS_SHOWN {
            errors.push(e.to_string());
        }
    };
    if device == DeviceKind::Intellivue {
        let (messages, _) = capture::messages(&bytes)
            .map_err(|e| DecodeCliError::Capture { file: path.display().to_string(), reason: e.to_string() })?;
        let mut clock = DeviceClock::new();
        for m in messages {
            match m.message.and_then(|payload| intellivue::parse_pdu(&payload)) {
                Err(e) => note(e, &mut summary),
                Ok(mut pdu) => {
                    summary.frames_ok += 1;
                    clock.observe(&mut pdu);
                    if let Pdu::Poll(p) = pdu {
                        for v in intellivue_lines(&p, m.time, &mut summary) {
                            line(v, out)?;
                        }
                    }
                }
            }
        }
    } else {
        let mut decoder = AnyDecoder::for_device(device);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(item)) = decoder.decode_eof(&mut buf) {
            match item {
                Err(e) => note(e, &mut summary),
                Ok(frame) => {
                    summary.frames_ok += 1;
                    for v in frame_lines(&frame, &mut summary) {
                        line(v, out)?;
                    }
                }
            }
        }
    }
    let summary_line = json!({
        "kind": "summary",
        "format": format,
        "frames_ok": summary.frames_ok,
        "frames_bad": summary.frames_bad,
        "readings": summary.readings,
        "device_alarms": summary.device_alarms,
        "errors": errors,
    });
    line(summary_line, out)?;
    Ok(summary)
}

fn frame_lines(frame: &Frame, summary: &mut Summary) -> Vec<Value> {
    let mut lines = Vec::new();
    for m in &frame.measurements {
        summary.readings += 1;
        lines.push(json!({
            "kind": "reading",
            "parameter": m.parameter.name(),
            "value": m.value,
            "status": m.status,
            "device_time": time(m.observed.or(frame.device_time)),
            "mdc": m.parameter.mdc_code(),
        }));
    }
    for a in frame.device_alarms.iter().flatten() {
        summary.device_alarms += 1;
        lines.push(json!({
            "kind": "device_alarm",
            "source": "monitor",
            "priority": priority_name(a.priority),
            "text": a.text,
            "state": "active",
            "technical": a.technical,
            "parameter": a.parameter.map(|p| p.name()),
        }));
    }
    lines
}

fn intellivue_lines(p: &intellivue::PollResult, received: Option<Timestamp>, summary: &mut Summary) -> Vec<Value> {
    let mut lines = Vec::new();
    for n in &p.numerics {
        summary.readings += 1;
        let m = n.measurement();
        lines.push(json!({
            "kind": "reading",
            "parameter": m.as_ref().map(|m| m.parameter.name()),
            "value": m.as_ref().map_or(n.value, |m| m.value),
            "status": m.as_ref().map_or(n.status(), |m| m.status),
            "device_time": time(n.time.or(p.time)),
            "mdc": n.mdc(),
            "physio_id": format!("0x{:04X}", n.physio_id),
            "unit_code": n.unit,
            "received": time(received),
        }));
    }
    for a in p.patient_alarms.iter().chain(&p.technical_alarms).flatten() {
        summary.device_alarms += 1;
        let d = a.device_alarm();
        lines.push(json!({
            "kind": "device_alarm",
            "source": "monitor",
            "priority": priority_name(d.priority),
            "text": d.text,
            "state": a.state_name(),
            "technical": d.technical,
            "parameter": d.parameter.map(|p| p.name()),
            "device_key": d.key,
            "device_time": time(p.time),
            "received": time(received),
        }));
    }
    lines
}
