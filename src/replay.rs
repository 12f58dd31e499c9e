//! `vigil replay`: the alarm engine over a recording, in virtual time. Every alarm event becomes one JSON line;
//! a summary line follows (alarms per hour by priority and parameter, time in alarm), and with `--compare` a line
//! saying how many alarms each profile raised on the same data, for alarm-fatigue tuning.
//!
//! Input is a long CSV `timestamp,bed,parameter,value` (timestamp in seconds from start or RFC 3339; parameter
//! one of the parameter names or `event` with `session_start`, `infusion_start`, `infusion_stop`, `session_end`;
//! an empty value is missing). The input layer yields [`Row`]s, so device-capture decoders can be plugged in
//! beside the CSV reader without touching the engine loop.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::alarm::{DeviceSignal, Engine, Profile, ProfileError};
use crate::event::{AlarmEvent, AlarmPhase, AlarmState, Command, Event, Priority};
use crate::ingest::protocol::{hl7, masimo, mllp, nonin, Frame};
use crate::vitals::{BedId, Parameter, Reading, Timestamp, ValueStatus};

/// Arguments of `vigil replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The recording: a CSV with header `timestamp,bed,parameter,value`.
    pub file: PathBuf,
    /// Alarm profile: a name (looked up in `<profile-dir>/profiles/`, then built in) or a path to a .toml file.
    #[arg(long, default_value = "ketamine-chair")]
    pub profile: String,
    /// A second profile to run on the same data; prints how many alarms each raises.
    #[arg(long)]
    pub compare: Option<String>,
    /// Only replay this bed (default: every bed named in the file).
    #[arg(long)]
    pub bed: Option<String>,
    /// Directory whose `profiles/` folder is searched for profile names.
    #[arg(long, default_value = "config")]
    pub profile_dir: PathBuf,
    /// Wall-clock time of second 0 when timestamps are seconds from start (RFC 3339).
    #[arg(long, default_value = "1970-01-01T00:00:00Z")]
    pub start: String,
    /// Print only the summary lines, not every event.
    #[arg(long)]
    pub summary_only: bool,
    /// Input format: `auto` (CSV, HL7 with or without MLLP framing, or Masimo ASCII, by content), `csv`,
    /// `masimo`, `nonin` (format #8 binary, one frame per second) or `hl7`.
    #[arg(long, default_value = "auto")]
    pub format: String,
}

impl ReplayArgs {
    /// Arguments for a file with every other option at its default.
    pub fn new(file: impl Into<PathBuf>) -> ReplayArgs {
        ReplayArgs {
            file: file.into(),
            profile: "ketamine-chair".into(),
            compare: None,
            bed: None,
            profile_dir: PathBuf::from("config"),
            start: "1970-01-01T00:00:00Z".into(),
            summary_only: false,
            format: "auto".into(),
        }
    }
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The recording could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the CSV is wrong.
    #[error("{file}:{line}: {reason}")]
    Csv {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// Why.
        reason: String,
    },
    /// The format is not one replay reads.
    #[error("{file}: {reason}")]
    Unsupported {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A profile could not be loaded.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// `--start` is not RFC 3339.
    #[error("--start {0}: not an RFC 3339 time")]
    Start(String),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Write(#[from] std::io::Error),
}

/// What one row of a recording says.
#[derive(Debug, Clone, PartialEq)]
pub enum RowKind {
    /// A value (or a missing value) from the CSV: valid when present.
    Reading(Parameter, Option<f64>),
    /// A value decoded from a device capture, with the status the decoder gave it.
    Device(Parameter, Option<f64>, ValueStatus),
    /// What a capture says about its sensor or demo mode.
    Signal(DeviceSignal),
    /// A session command.
    Command(Command),
}

/// One timestamped row of a recording, whatever the input format.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// When.
    pub time: Timestamp,
    /// Which bed.
    pub bed: BedId,
    /// What.
    pub kind: RowKind,
}

/// Reads the long CSV format. Rows are returned in time order (a stable sort keeps same-time rows in file order).
pub fn read_csv(text: &str, file: &str, start: Timestamp) -> Result<Vec<Row>, ReplayError> {
    let err = |line: usize, reason: String| ReplayError::Csv { file: file.to_owned(), line, reason };
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l.trim().trim_start_matches('\u{feff}')).unwrap_or("");
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    if cols != ["timestamp", "bed", "parameter", "value"] {
        return Err(err(1, format!("header must be 'timestamp,bed,parameter,value', found '{header}'")));
    }
    let mut beds: HashMap<String, BedId> = HashMap::new();
    let mut rows = Vec::new();
    for (n, line) in lines {
        let line_no = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != 4 {
            return Err(err(line_no, format!("expected 4 fields, found {}", f.len())));
        }
        let time = match f[0].parse::<f64>() {
            Ok(s) if s.is_finite() => start + TimeDelta::milliseconds((s * 1000.0).round() as i64),
            _ => DateTime::parse_from_rfc3339(f[0])
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| err(line_no, format!("timestamp '{}' is neither seconds nor RFC 3339", f[0])))?,
        };
        if f[1].is_empty() {
            return Err(err(line_no, "bed is empty".into()));
        }
        let bed = beds.entry(f[1].to_owned()).or_insert_with(|| f[1].into()).clone();
        let kind = if f[2] == "event" {
            RowKind::Command(match f[3] {
                "session_start" => Command::SessionStart { patient: None, baseline_sys: None, baseline_dia: None },
                "infusion_start" => Command::InfusionStart,
                "infusion_stop" => Command::InfusionStop,
                "session_end" => Command::SessionEnd,
                other => {
                    return Err(err(
                        line_no,
                        format!(
                            "event '{other}' is not one of session_start, infusion_start, infusion_stop, session_end"
                        ),
                    ))
                }
            })
        } else {
            let p = Parameter::from_name(f[2]).ok_or_else(|| {
                err(
                    line_no,
                    format!(
                        "parameter '{}' is not one of hr, pr, spo2, nibp_sys, nibp_dia, nibp_mean, rr, event",
                        f[2]
                    ),
                )
            })?;
            let v = if f[3].is_empty() {
                None
            } else {
                Some(f[3].parse::<f64>().map_err(|_| err(line_no, format!("value '{}' is not a number", f[3])))?)
            };
            RowKind::Reading(p, v)
        };
        rows.push(Row { time, bed, kind });
    }
    rows.sort_by_key(|r| r.time);
    Ok(rows)
}

/// Loads a recording: the CSV, or a raw device capture through the same decoders the daemon uses
/// (`ingest::protocol`). Capture time comes from the device's own stamps where it gives them (Masimo line time,
/// HL7 MSH-7 and OBX-14), otherwise one frame per second from `--start`.
pub fn load(path: &Path, start: Timestamp, format: &str, bed: &str) -> Result<Vec<Row>, ReplayError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ReplayError::Read { file: file.clone(), source })?;
    let unsupported = |reason: String| ReplayError::Unsupported { file: file.clone(), reason };
    let text = std::str::from_utf8(&bytes).ok();
    let format = match format {
        "auto" => {
            let t = text.unwrap_or("");
            if t.trim_start_matches('\u{feff}').starts_with("timestamp,") {
                "csv"
            } else if bytes.contains(&0x0b) || t.contains("MSH|") {
                "hl7"
            } else if t.contains("SPO2=") || t.contains("SpO2=") {
                "masimo"
            } else {
                return Err(unsupported(
                    "cannot tell the format (not the replay CSV, HL7 or Masimo ASCII); use --format nonin for Nonin \
                     binary captures"
                        .into(),
                ));
            }
        }
        f @ ("csv" | "masimo" | "nonin" | "hl7") => f,
        other => return Err(unsupported(format!("unknown --format '{other}' (auto, csv, masimo, nonin, hl7)"))),
    };
    let bed: BedId = bed.into();
    let source = format!("{bed}/replay");
    let mut frames: Vec<(Option<Timestamp>, Frame)> = Vec::new();
    match format {
        "csv" => {
            let text = text.ok_or_else(|| unsupported("the CSV is not UTF-8".into()))?;
            return read_csv(text, &file, start);
        }
        "masimo" => {
            for line in bytes.split(|b| *b == b'\n' || *b == b'\r') {
                if line.iter().all(u8::is_ascii_whitespace) || line.starts_with(b"#") {
                    continue;
                }
                // Lines that do not decode (comments, headers) are skipped, as the serial reader skips them.
                if let Ok(f) = masimo::parse_line(line) {
                    frames.push((f.device_time, f));
                }
            }
        }
        "nonin" => {
            // The streaming decoder resynchronises on the status byte, as on the serial line.
            use tokio_util::codec::Decoder as _;
            let mut decoder = nonin::NoninDecoder::default();
            let mut buf = bytes::BytesMut::from(&bytes[..]);
            while let Ok(Some(item)) = decoder.decode(&mut buf) {
                if let Ok(f) = item {
                    frames.push((None, f));
                }
            }
        }
        _ => {
            for msg in hl7_messages(&bytes) {
                if let Ok(f) = hl7::decode_message(&msg) {
                    frames.push((f.device_time, f));
                }
            }
        }
    }
    if frames.is_empty() {
        return Err(unsupported(format!("no {format} frame could be decoded")));
    }
    let mut rows = Vec::new();
    let mut clock = start;
    for (k, (time, f)) in frames.into_iter().enumerate() {
        clock = match time {
            Some(t) => t,
            None if k == 0 => start,
            None => clock + TimeDelta::seconds(1),
        };
        rows.push(Row {
            time: clock,
            bed: bed.clone(),
            kind: RowKind::Signal(DeviceSignal::Sensor { source: source.clone(), flags: f.sensor }),
        });
        rows.push(Row {
            time: clock,
            bed: bed.clone(),
            kind: RowKind::Signal(DeviceSignal::Demo { source: source.clone(), on: f.demo }),
        });
        for m in f.measurements {
            let time = if m.parameter.is_nibp() { m.observed.unwrap_or(clock) } else { clock };
            rows.push(Row { time, bed: bed.clone(), kind: RowKind::Device(m.parameter, m.value, m.status) });
        }
    }
    rows.sort_by_key(|r| r.time);
    Ok(rows)
}

/// HL7 messages from a capture: MLLP-framed, or plain text with one `MSH|` per message and segments on lines.
fn hl7_messages(bytes: &[u8]) -> Vec<Vec<u8>> {
    use tokio_util::codec::Decoder as _;
    if bytes.contains(&0x0b) {
        let mut codec = mllp::MllpCodec::default();
        let mut buf = bytes::BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Ok(Some(item)) = codec.decode(&mut buf) {
            if let Ok(msg) = item {
                out.push(msg.to_vec());
            }
        }
        return out;
    }
    let text = String::from_utf8_lossy(bytes);
    let mut out: Vec<Vec<u8>> = Vec::new();
    for line in text.lines().map(str::trim_end) {
        if line.starts_with("MSH|") {
            out.push(Vec::new());
        } else if line.is_empty()
            || line.starts_with('#')
            || out.is_empty()
            || line.as_bytes().get(3).is_none_or(|b| *b != b'|')
        {
            continue;
        }
        let msg = out.last_mut().expect("pushed on MSH");
        msg.extend_from_slice(line.as_bytes());
        msg.push(b'\r');
    }
    out
}

/// Alarm counts of one profile over a recording.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Counts {
    /// Profile name.
    pub profile: String,
    /// Alarms started.
    pub alarms: usize,
    /// All alarm events.
    pub events: usize,
    /// Alarms per hour of recording.
    pub alarms_per_hour: f64,
    /// Alarms started, by starting priority.
    pub by_priority: BTreeMap<String, usize>,
    /// Alarms started, by parameter (`none` for bed-level conditions).
    pub by_parameter: BTreeMap<String, usize>,
    /// Alarms started, by condition.
    pub by_condition: BTreeMap<String, usize>,
    /// Alarms per hour by starting priority.
    pub per_hour_by_priority: BTreeMap<String, f64>,
    /// Alarms per hour by parameter.
    pub per_hour_by_parameter: BTreeMap<String, f64>,
    /// Seconds with at least one alarm condition present (union; latched-only time excluded).
    pub time_in_alarm_s: f64,
    /// Seconds with at least one alarm of this starting priority present.
    pub time_in_alarm_by_priority_s: BTreeMap<String, f64>,
    /// Escalations (band or unanswered).
    pub escalations: usize,
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The recording.
    pub file: String,
    /// Rows read.
    pub rows: usize,
    /// Rows with a missing value.
    pub missing_values: usize,
    /// Beds replayed.
    pub beds: Vec<String>,
    /// First to last row, seconds.
    pub duration_s: f64,
    /// Counts for `--profile`.
    #[serde(flatten)]
    pub counts: Counts,
    /// Profile settings replay changed to suit the recording, with why.
    pub adjustments: Vec<String>,
    /// Counts for `--compare`, if asked.
    pub compare: Option<Counts>,
}

fn prio(p: Priority) -> &'static str {
    match p {
        Priority::High => "high",
        Priority::Medium => "medium",
        Priority::Low => "low",
    }
}

/// Widens the no-data timeout when the recording samples continuous parameters more sparsely than the profile
/// expects (MIMIC numerics are 1 per minute): otherwise every gap between samples would be a technical alarm.
fn adapt(profile: &mut Profile, rows: &[Row]) -> Vec<String> {
    let mut last: HashMap<(BedId, Parameter), Timestamp> = HashMap::new();
    let mut gaps: Vec<f64> = Vec::new();
    for r in rows {
        if let RowKind::Reading(p, Some(_)) | RowKind::Device(p, Some(_), _) = r.kind {
            if p.is_continuous() {
                if let Some(prev) = last.insert((r.bed.clone(), p), r.time) {
                    gaps.push((r.time - prev).num_milliseconds() as f64 / 1000.0);
                }
            }
        }
    }
    let Some(median) = crate::session::median(&gaps) else { return Vec::new() };
    let needed = (2.0 * median).ceil() as u64;
    if needed <= profile.technical.no_data_s {
        return Vec::new();
    }
    if needed > 3600 {
        return vec![format!(
            "technical.no_data_s kept at {} s: samples are {median} s apart (median), too sparse to judge data gaps",
            profile.technical.no_data_s
        )];
    }
    let old = profile.technical.no_data_s;
    profile.technical.no_data_s = needed;
    vec![format!(
        "technical.no_data_s raised from {old} to {needed} s: the recording samples continuous parameters every {median} s (median)"
    )]
}

struct Run {
    counts: Counts,
    open: HashMap<String, (Timestamp, Priority)>,
    start_priority: HashMap<String, Priority>,
    intervals: Vec<(Timestamp, Timestamp, Priority)>,
}

fn replay_one(
    profile: Profile,
    rows: &[Row],
    only_bed: Option<&str>,
    mut sink: impl FnMut(&AlarmEvent) -> std::io::Result<()>,
) -> Result<Run, ReplayError> {
    let profile = Arc::new(profile);
    let mut engines: BTreeMap<BedId, Engine> = BTreeMap::new();
    let mut run = Run {
        counts: Counts {
            profile: profile.name.clone(),
            alarms: 0,
            events: 0,
            alarms_per_hour: 0.0,
            by_priority: BTreeMap::new(),
            by_parameter: BTreeMap::new(),
            by_condition: BTreeMap::new(),
            per_hour_by_priority: BTreeMap::new(),
            per_hour_by_parameter: BTreeMap::new(),
            time_in_alarm_s: 0.0,
            time_in_alarm_by_priority_s: BTreeMap::new(),
            escalations: 0,
        },
        open: HashMap::new(),
        start_priority: HashMap::new(),
        intervals: Vec::new(),
    };
    let mut handle = |events: Vec<Event>, run: &mut Run| -> Result<(), ReplayError> {
        for e in events {
            let Event::Alarm(a) = e else { continue };
            run.counts.events += 1;
            match a.phase {
                AlarmPhase::Start => {
                    run.counts.alarms += 1;
                    *run.counts.by_priority.entry(prio(a.priority).into()).or_default() += 1;
                    let param = a.parameter.map_or("none", Parameter::name);
                    *run.counts.by_parameter.entry(param.into()).or_default() += 1;
                    *run.counts.by_condition.entry(a.condition.clone()).or_default() += 1;
                    run.start_priority.insert(a.alarm_id.clone(), a.priority);
                }
                AlarmPhase::Escalate => run.counts.escalations += 1,
                _ => {}
            }
            // Time in alarm counts while the condition is present (not while merely latched: nobody
            // acknowledges in a replay, so latched time would only measure the recording's length).
            let present = matches!(a.state, AlarmState::Active | AlarmState::Acknowledged | AlarmState::AudioPaused);
            if present && !run.open.contains_key(&a.alarm_id) {
                let p = run.start_priority.get(&a.alarm_id).copied().unwrap_or(a.priority);
                run.open.insert(a.alarm_id.clone(), (a.time, p));
            } else if !present {
                if let Some((s, p)) = run.open.remove(&a.alarm_id) {
                    run.intervals.push((s, a.time, p));
                }
            }
            if a.phase == AlarmPhase::End {
                run.start_priority.remove(&a.alarm_id);
            }
            sink(&a)?;
        }
        Ok(())
    };
    let Some(first) = rows.first().map(|r| r.time) else { return Ok(run) };
    let mut next_tick = first + TimeDelta::seconds(1);
    for r in rows {
        if only_bed.is_some_and(|b| b != &*r.bed) {
            continue;
        }
        // Virtual time: one tick per second of recording time up to this row. In a gap longer than an hour
        // (a capture of unrelated messages, a recording paused overnight) every timer has long run out: tick the
        // first hour second by second, then once just before the row.
        let gap_start = next_tick;
        while next_tick <= r.time {
            for e in engines.values_mut() {
                let ev = e.tick(next_tick);
                handle(ev, &mut run)?;
            }
            next_tick += TimeDelta::seconds(1);
            if next_tick - gap_start > TimeDelta::hours(1) && next_tick < r.time {
                next_tick = r.time;
            }
        }
        let engine = engines.entry(r.bed.clone()).or_insert_with(|| Engine::new(r.bed.clone(), profile.clone(), 1));
        let reading = |p: Parameter, value: Option<f64>, status: ValueStatus| Reading {
            bed: r.bed.clone(),
            parameter: p,
            value,
            status,
            device_time: None,
            received: r.time,
            measured: None,
            spot: false,
            source: None,
        };
        let events = match &r.kind {
            RowKind::Reading(p, v) => {
                // The CSV convention: an empty value or 0 is "no value" (monitor exports write 0 for missing).
                let v = v.filter(|v| *v != 0.0);
                let status = if v.is_some() { ValueStatus::Valid } else { ValueStatus::Unavailable };
                engine.observe(&reading(*p, v, status), r.time)
            }
            RowKind::Device(p, v, status) => engine.observe(&reading(*p, *v, *status), r.time),
            RowKind::Signal(sig) => engine.device(sig, r.time),
            // A refused command in a recording (e.g. infusion_stop without a start) changes nothing.
            RowKind::Command(c) => engine.command(c, "replay", r.time).unwrap_or_default(),
        };
        handle(events, &mut run)?;
    }
    let end = rows.last().map_or(first, |r| r.time);
    for (_, (s, p)) in run.open.drain() {
        run.intervals.push((s, end, p));
    }
    let hours = ((end - first).num_milliseconds() as f64 / 3_600_000.0).max(1.0 / 3600.0);
    let c = &mut run.counts;
    c.alarms_per_hour = round2(c.alarms as f64 / hours);
    c.per_hour_by_priority = c.by_priority.iter().map(|(k, v)| (k.clone(), round2(*v as f64 / hours))).collect();
    c.per_hour_by_parameter = c.by_parameter.iter().map(|(k, v)| (k.clone(), round2(*v as f64 / hours))).collect();
    c.time_in_alarm_s = union_s(run.intervals.iter().map(|&(s, e, _)| (s, e)));
    for p in [Priority::High, Priority::Medium, Priority::Low] {
        let u = union_s(run.intervals.iter().filter(|i| i.2 == p).map(|&(s, e, _)| (s, e)));
        if u > 0.0 {
            c.time_in_alarm_by_priority_s.insert(prio(p).into(), u);
        }
    }
    Ok(run)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn union_s(intervals: impl Iterator<Item = (Timestamp, Timestamp)>) -> f64 {
    let mut v: Vec<_> = intervals.collect();
    v.sort();
    let mut total = 0i64;
    let mut cur: Option<(Timestamp, Timestamp)> = None;
    for (s, e) in v {
        match &mut cur {
            Some((_, ce)) if s <= *ce => *ce = (*ce).max(e),
            _ => {
                if let Some((cs, ce)) = cur.take() {
                    total += (ce - cs).num_milliseconds();
                }
                cur = Some((s, e));
            }
        }
    }
    if let Some((cs, ce)) = cur {
        total += (ce - cs).num_milliseconds();
    }
    total as f64 / 1000.0
}

/// The JSON line for one alarm event (the replay output format).
pub fn event_line(a: &AlarmEvent, first: Timestamp) -> Value {
    json!({
        "offset_s": (a.time - first).num_milliseconds() as f64 / 1000.0,
        "time": a.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "bed": &*a.bed,
        "alarm_id": a.alarm_id,
        "seq": a.seq,
        "bed_seq": a.bed_seq,
        "kind": a.kind,
        "condition": a.condition,
        "parameter": a.parameter,
        "priority": a.priority,
        "phase": a.phase,
        "state": a.state,
        "value": a.value,
        "limit": a.limit,
        "evidence": a.evidence,
    })
}

/// Runs a replay and writes its JSON lines to `out`.
pub fn run(args: &ReplayArgs, out: &mut dyn Write) -> Result<Summary, ReplayError> {
    let start = DateTime::parse_from_rfc3339(&args.start)
        .map_err(|_| ReplayError::Start(args.start.clone()))?
        .with_timezone(&Utc);
    let rows = load(&args.file, start, &args.format, args.bed.as_deref().unwrap_or("replay"))?;
    let mut profile = Profile::resolve(&args.profile, &args.profile_dir)?;
    let compare = args.compare.as_deref().map(|c| Profile::resolve(c, &args.profile_dir)).transpose()?;
    let adjustments = adapt(&mut profile, &rows);
    let first = rows.first().map_or(start, |r| r.time);
    let bed = args.bed.as_deref();
    let run_main = replay_one(profile, &rows, bed, |a| {
        if args.summary_only {
            return Ok(());
        }
        writeln!(out, "{}", event_line(a, first))
    })?;
    let compare = match compare {
        Some(mut p) => {
            adapt(&mut p, &rows);
            Some(replay_one(p, &rows, bed, |_| Ok(()))?.counts)
        }
        None => None,
    };
    let mut beds: Vec<String> =
        rows.iter().filter(|r| bed.is_none_or(|b| b == &*r.bed)).map(|r| r.bed.to_string()).collect();
    beds.sort();
    beds.dedup();
    let last = rows.last().map_or(first, |r| r.time);
    let summary = Summary {
        file: args.file.display().to_string(),
        rows: rows.len(),
        missing_values: rows.iter().filter(|r| matches!(r.kind, RowKind::Reading(_, None))).count(),
        beds,
        duration_s: (last - first).num_milliseconds() as f64 / 1000.0,
        counts: run_main.counts,
        adjustments,
        compare,
    };
    writeln!(out, "{}", json!({ "summary": &summary }))?;
    if let Some(c) = &summary.compare {
        let line = json!({ "compare": {
            summary.counts.profile.clone(): { "alarms": summary.counts.alarms, "alarms_per_hour": summary.counts.alarms_per_hour, "by_priority": summary.counts.by_priority },
            c.profile.clone(): { "alarms": c.alarms, "alarms_per_hour": c.alarms_per_hour, "by_priority": c.by_priority },
        }});
        writeln!(out, "{line}")?;
    }
    Ok(summary)
}
