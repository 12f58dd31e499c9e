//! `vigil-sim alert-manager`: plays an IHE PCD ACM Alert Manager on loopback, so tests and the demo can show an
//! alarm reaching a hospital's alert system. It takes ORU^R40 (Report Alert, PCD-04) over MLLP, answers each
//! with ACK^R40 (`AA`; `AR` with a reason under `--reject`, heartbeats always `AA`), optionally sends ORA^R41
//! ("Accepted" by a simulated nurse) for each new alarm after `--ack-after` seconds on the same connection, and
//! prints one JSON line per thing it sees or does on stdout.
//!
//! Independent of the daemon like the rest of the simulator: its own small HL7 reading, keyed on what the IHE
//! ACM messages carry (OBR-29 alert id, else OBR-3 as older samples have it; OBX-4 facet sub-ids ending `.1` …
//! `.8`; `MDC_EVT_ACTIVE` heartbeats). Its ORA^R41 follows IHE PCD TF-2 Rev. 9.0, Appendix B.10: the alert's
//! OBR-2/3/29 echoed, PRT-2 `AD`, the status in PRT-3.2 with coding system `IHE_PCD_ACM`, PRT-4 `RO`/`AAP`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};

use crate::devices::hl7::mllp_frame;
use crate::output::read_frame;

/// What the simulated manager does.
#[derive(Debug, Clone, Default)]
pub struct AlertManagerOptions {
    /// Send ORA^R41 "Accepted" this long after a new alarm's first ORU^R40.
    pub ack_after: Option<Duration>,
    /// Refuse every alarm with `AR` (heartbeats are still accepted).
    pub reject: bool,
    /// Leave the first N alarm messages unanswered (a manager that hangs), to exercise the reporter's timeout.
    pub ignore_first: u32,
}

struct State {
    options: AlertManagerOptions,
    emit: Sink,
    ignored: AtomicU32,
    acknowledged: Mutex<HashSet<String>>,
    seen_controls: Mutex<HashSet<String>>,
    next_control: AtomicU64,
}

/// Where the manager's JSON lines go: stdout for the command, a channel for in-process tests.
pub type Sink = Arc<dyn Fn(Value) + Send + Sync>;

/// A segment's fields; index = HL7 field number (MSH-1 is the field separator).
fn fields(segment: &str) -> Vec<&str> {
    let mut f: Vec<&str> = segment.split('|').collect();
    if f.first() == Some(&"MSH") {
        f.insert(1, "|");
    }
    f
}

fn field<'a>(f: &[&'a str], n: usize) -> &'a str {
    f.get(n).copied().unwrap_or("")
}

fn component(field: &str, n: usize) -> &str {
    field.split('~').next().unwrap_or("").split('^').nth(n - 1).unwrap_or("")
}

/// OBR-29 (Parent, EIP): the filler's id (component 2), else the placer's, first subcomponent.
fn parent_id(field: &str) -> &str {
    let id = |n| component(field, n).split('&').next().unwrap_or("");
    Some(id(2)).filter(|s| !s.is_empty()).unwrap_or_else(|| id(1))
}

/// Undoes the HL7 escapes of the default separators.
fn unescape(s: &str) -> String {
    s.replace("\\F\\", "|").replace("\\S\\", "^").replace("\\R\\", "~").replace("\\T\\", "&").replace("\\E\\", "\\")
}

fn dtm() -> String {
    Utc::now().format("%Y%m%d%H%M%S+0000").to_string()
}

/// Reads one ORU^R40 into the JSON line the manager prints.
fn read_alert(segments: &[Vec<&str>]) -> Map<String, Value> {
    let mut out = Map::new();
    let mut heartbeat = false;
    for s in segments {
        match s[0] {
            "MSH" => {
                // MSH-11: P for production, T for a test message (a reporter's self-test).
                out.insert("processing_id".into(), field(s, 11).into());
            }
            "OBR" => {
                let parent = parent_id(field(s, 29));
                let id = if parent.is_empty() { component(field(s, 3), 1) } else { parent };
                out.insert("alert_id".into(), unescape(id).into());
                out.insert("indication_id".into(), unescape(component(field(s, 3), 1)).into());
            }
            "PV1" => {
                out.insert("point_of_care".into(), unescape(component(field(s, 3), 1)).into());
                out.insert("bed".into(), unescape(component(field(s, 3), 3)).into());
            }
            "OBX" => {
                let sub = field(s, 4);
                if field(s, 3).starts_with("196614^MDC_EVT_ACTIVE") {
                    heartbeat = true;
                }
                let Some(facet) = sub.rsplit_once('.').map(|(_, f)| f).filter(|_| sub.matches('.').count() == 4) else {
                    continue;
                };
                let value = unescape(component(field(s, 5), 1));
                let key = match facet {
                    "1" => {
                        // A physiological alarm names its event in OBX-3 and says its text in OBX-5; the rest
                        // are MDC_EVT_ALARM with the event in OBX-5 (PCD TF-2 Rev. 9.0, Table B.8.5-1).
                        let event = if field(s, 3).starts_with("196616^") { field(s, 5) } else { field(s, 3) };
                        out.insert("event".into(), event.into());
                        out.insert(
                            "flags".into(),
                            field(s, 8).split('~').filter(|x| !x.is_empty()).collect::<Vec<_>>().into(),
                        );
                        continue;
                    }
                    "2" => {
                        out.insert("source".into(), field(s, 3).into());
                        if field(s, 2) == "NM" {
                            out.insert("value".into(), value.parse::<f64>().map(Value::from).unwrap_or(Value::Null));
                            out.insert("unit".into(), component(field(s, 6), 4).into());
                            out.insert("limits".into(), field(s, 7).into());
                        } else {
                            out.insert("source_value".into(), field(s, 5).into());
                        }
                        continue;
                    }
                    "3" => "phase",
                    "4" => "state",
                    "5" => "inactivation",
                    "6" => "priority",
                    "7" => "alert_type",
                    "8" => "text",
                    "9" => "confirm_timeout_s",
                    _ => continue,
                };
                out.insert(key.into(), value.into());
            }
            _ => {}
        }
    }
    out.insert("type".into(), if heartbeat { "heartbeat" } else { "alert" }.into());
    out
}

fn ack(msh: &[&str], code: &str, reason: Option<&str>, control: u64) -> String {
    let mut m = format!(
        "MSH|^~\\&|SIM-AM|SIM|{}|{}|{}||ACK^R40^ACK|AM{control}|P|2.6\rMSA|{code}|{}",
        field(msh, 3),
        field(msh, 4),
        dtm(),
        field(msh, 10)
    );
    if let Some(r) = reason {
        m.push_str(&format!("|{r}\rERR|||207^Application internal error^HL70357|E||||{r}"));
    }
    m.push('\r');
    m
}

/// The ORA^R41 "Accepted" for the alert whose ORU^R40 had `msh` and `obr` (its OBR-2, OBR-3 and OBR-29 echoed).
fn ora(msh: &[&str], obr: &[&str], control: u64) -> String {
    format!(
        "MSH|^~\\&|SIM-AM|SIM|{}|{}|{t}||ORA^R41^ORA_R41|AM{control}|P|2.6\r\
         OBR|1|{}|{}|196616^MDC_EVT_ALARM^MDC|||{t}||||||||||||||||||||||{}\r\
         PRT|AM{control}^SIM-AM|AD|^Accepted^IHE_PCD_ACM|^RO^^AAP|sim-nurse^Nurse^Simulated||||||{t}\r",
        field(msh, 3),
        field(msh, 4),
        field(obr, 2),
        field(obr, 3),
        field(obr, 29),
        t = dtm(),
    )
}

async fn write(writer: &tokio::sync::Mutex<OwnedWriteHalf>, msg: &str) -> std::io::Result<()> {
    writer.lock().await.write_all(&mllp_frame(msg.as_bytes())).await
}

async fn connection(stream: TcpStream, state: Arc<State>) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let (mut reader, writer) = stream.into_split();
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    (state.emit)(json!({"type": "connected", "peer": peer}));
    let mut buf = Vec::new();
    while let Ok(frame) = read_frame(&mut reader, &mut buf).await {
        let text = String::from_utf8_lossy(&frame).into_owned();
        let segments: Vec<Vec<&str>> = text.split(['\r', '\n']).filter(|s| s.len() >= 3).map(fields).collect();
        let Some(msh) = segments.first().filter(|s| s[0] == "MSH") else {
            (state.emit)(json!({"type": "malformed", "reason": "no MSH segment"}));
            continue;
        };
        let kind = field(msh, 9);
        if kind.starts_with("ACK") {
            let msa = segments.iter().find(|s| s[0] == "MSA");
            (state.emit)(json!({
                "type": "ack",
                "code": msa.map(|m| field(m, 1)).unwrap_or(""),
                "control_id": msa.map(|m| field(m, 2)).unwrap_or(""),
            }));
            continue;
        }
        if !kind.starts_with("ORU^R40") {
            (state.emit)(json!({"type": "malformed", "reason": format!("unexpected message type '{kind}'")}));
            continue;
        }
        let mut line = read_alert(&segments);
        let control_id = field(msh, 10).to_owned();
        let duplicate = !state.seen_controls.lock().unwrap_or_else(|e| e.into_inner()).insert(control_id.clone());
        let heartbeat = line.get("type") == Some(&Value::from("heartbeat"));
        line.insert("control_id".into(), control_id.into());
        line.insert("duplicate".into(), duplicate.into());
        line.insert("received".into(), Utc::now().to_rfc3339().into());
        let ignore = !heartbeat
            && state
                .ignored
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < state.options.ignore_first).then_some(n + 1)
                })
                .is_ok();
        let control = state.next_control.fetch_add(1, Ordering::Relaxed);
        let answer = if ignore {
            None
        } else if state.options.reject && !heartbeat {
            Some(("AR", ack(msh, "AR", Some("refused by the simulated alert manager (--reject)"), control)))
        } else {
            Some(("AA", ack(msh, "AA", None, control)))
        };
        line.insert("answered".into(), answer.as_ref().map(|(c, _)| Value::from(*c)).unwrap_or(Value::Null));
        let alert_id = line.get("alert_id").and_then(Value::as_str).unwrap_or("").to_owned();
        (state.emit)(Value::Object(line));
        if let Some((code, msg)) = answer {
            if write(&writer, &msg).await.is_err() {
                break;
            }
            let first = code == "AA"
                && !heartbeat
                && !alert_id.is_empty()
                && state.acknowledged.lock().unwrap_or_else(|e| e.into_inner()).insert(alert_id.clone());
            if let (true, Some(after)) = (first, state.options.ack_after) {
                let obr = segments.iter().find(|s| s[0] == "OBR").map(Vec::as_slice).unwrap_or(&[]);
                let msg = ora(msh, obr, state.next_control.fetch_add(1, Ordering::Relaxed));
                let writer = writer.clone();
                let emit = state.emit.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let sent = write(&writer, &msg).await.is_ok();
                    emit(json!({"type": "acknowledged", "alert_id": alert_id, "by": "Simulated Nurse", "sent": sent}));
                });
            }
        }
    }
    (state.emit)(json!({"type": "disconnected", "peer": peer}));
}

/// Serves on `listener` until the process ends (or the task is dropped), giving every line to `emit`.
pub async fn run(listener: TcpListener, options: AlertManagerOptions, emit: Sink) -> std::io::Result<()> {
    let state = Arc::new(State {
        options,
        emit,
        ignored: AtomicU32::new(0),
        acknowledged: Mutex::new(HashSet::new()),
        seen_controls: Mutex::new(HashSet::new()),
        next_control: AtomicU64::new(1),
    });
    // The connections live in this future: dropping it (a test stopping the manager) closes them all.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let _ = stream.set_nodelay(true);
                connections.spawn(connection(stream, state.clone()));
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_is_read_from_its_facets_and_a_heartbeat_is_told_apart() {
        let msg = "MSH|^~\\&|VIGIL|clinic|||20260101080000+0000||ORU^R40^ORU_R40|c1|P|2.6\r\
                   PV1|1||ward^^chair-1^clinic\rOBR|1|a7.2^VIGIL|a7.2^VIGIL|196616^MDC_EVT_ALARM^MDC|||20260101\
                   ||||||||||||||||||||||^a7&VIGIL\r\
                   OBX|1|ST|196670^MDC_EVT_LO^MDC|1.1.1.150456.1|SpO2 85 low|||L~PH~SP\r\
                   OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.150456.2|85|262688^MDC_DIM_PERCENT^MDC^%^%^UCUM|88-\r\
                   OBX|3|ST|68481^MDC_ATTR_EVENT_PHASE^MDC|1.1.1.150456.3|start\r\
                   OBX|4|ST|68546^MDC_ATTR_ALERT_TEXT^MDC|1.1.1.150456.8|SpO2 85 \\T\\ falling\r";
        let segs: Vec<Vec<&str>> = msg.split('\r').filter(|s| s.len() >= 3).map(fields).collect();
        let a = read_alert(&segs);
        assert_eq!(a["type"], "alert");
        assert_eq!((a["alert_id"].as_str(), a["indication_id"].as_str()), (Some("a7"), Some("a7.2")));
        assert_eq!(a["bed"], "chair-1");
        assert_eq!(a["event"], "196670^MDC_EVT_LO^MDC");
        assert_eq!(a["flags"], json!(["L", "PH", "SP"]));
        assert_eq!((a["value"].as_f64(), a["unit"].as_str()), (Some(85.0), Some("%")));
        assert_eq!(a["phase"], "start");
        assert_eq!(a["text"], "SpO2 85 & falling");
        let hb = "MSH|^~\\&|VIGIL||||20260101||ORU^R40^ORU_R40|h1|P|2.6\r\
                  OBX|1|CWE|196614^MDC_EVT_ACTIVE^MDC|1.0.0.0.1|196614^MDC_EVT_ACTIVE^MDC\r";
        let segs: Vec<Vec<&str>> = hb.split('\r').filter(|s| s.len() >= 3).map(fields).collect();
        assert_eq!(read_alert(&segs)["type"], "heartbeat");
    }

    #[test]
    fn the_ora_r41_echoes_the_alerts_obr_29_and_puts_the_status_in_prt_3_text() {
        let msh = fields("MSH|^~\\&|VIGIL|clinic|||20260101||ORU^R40^ORU_R40|c1|P|2.6");
        let obr =
            fields("OBR|1|a7.2^VIGIL|a7.2^VIGIL|196616^MDC_EVT_ALARM^MDC|||20260101||||||||||||||||||||||^a7&VIGIL");
        let msg = ora(&msh, &obr, 5);
        let segs: Vec<Vec<&str>> = msg.split('\r').filter(|s| s.len() >= 3).map(fields).collect();
        let (ora_obr, prt) = (&segs[1], &segs[2]);
        assert_eq!((field(ora_obr, 3), field(ora_obr, 29)), ("a7.2^VIGIL", "^a7&VIGIL"));
        assert_eq!((field(prt, 2), field(prt, 3), field(prt, 4)), ("AD", "^Accepted^IHE_PCD_ACM", "^RO^^AAP"));
    }
}
