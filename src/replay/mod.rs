//! `vigil replay`: the alarm engine over a recording, in virtual time. Every alarm event becomes one JSON line;
//! a summary line follows (alarms per hour by priority and parameter, time in alarm), and with `--compare` a line
//! saying how many alarms each profile raised on the same data, for alarm-fatigue tuning.
//!
//! Input is a long CSV `timestamp,bed,parameter,value[,status]` (timestamp in seconds from start or RFC 3339;
//! parameter one of the parameter names or `event` with `session_start`, `infusion_start`, `infusion_stop`,
//! `session_end` and the nurse's actions `acknowledge`, `acknowledge:<condition>`, `pause_audio[:<seconds>]`,
//! `baseline:<sys>/<dia>`; an empty value is missing; the optional `status` is `valid`, `questionable`,
//! `unavailable` or `demo`, and without it 0 means "no value"), or a raw device capture. The format with an
//! example is in `docs/replay.md`.
//!
//! The CSV is streamed: memory holds the rows of the last [`REORDER_WINDOW_S`] seconds, one engine per bed and
//! profile and the summary's counters, whatever the length of the file. Modules: [`input`] reads rows in time
//! order (its CSV records split by `records`), [`runner`] is the engine loop and the summary's counting.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::alarm::{Profile, ProfileError};
use crate::event::{AlarmEvent, Priority};
use crate::vitals::Timestamp;

pub mod input;
mod records;
pub mod runner;

pub use input::{open, Action, DeviceValue, Input, Row, RowKind, REORDER_WINDOW_S};
pub use runner::{Refusal, Runner, Sink, ACTOR};

/// The no-data adaptation (see [`runner::adapt`]) looks at this many rows from the start of the recording.
pub const ADAPT_ROWS: usize = 100_000;

/// Arguments of `vigil replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The recording: a CSV with header `timestamp,bed,parameter,value` (optionally `,status`), or a capture.
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
    /// Input format: `auto` (CSV, HL7 with or without MLLP framing, Masimo ASCII or an S/5 DRI capture, by
    /// content), `csv`, `masimo`, `nonin` (format #8 binary, one frame per second), `hl7`, `s5` (DRI records
    /// as the monitor sends them; times from the records) or `intellivue` (Data Export as the monitor sends it,
    /// e.g. `vigil-sim --device intellivue --output file:…`).
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

/// Alarm counts of one profile over a recording.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
    /// Nurse's actions (`acknowledge`, `pause_audio`, `baseline` rows) replayed; absent when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub actions: usize,
    /// Of those, how many the engine refused (each also printed as a `{"refused": ...}` line).
    #[serde(skip_serializing_if = "is_zero")]
    pub refused_actions: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn prio(p: Priority) -> &'static str {
    match p {
        Priority::High => "high",
        Priority::Medium => "medium",
        Priority::Low => "low",
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
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

/// The JSON line for a refused action: `{"refused": {offset_s, time, bed, line, action, reason}}`.
pub fn refused_line(r: &Refusal<'_>, first: Timestamp) -> Value {
    json!({ "refused": {
        "offset_s": (r.time - first).num_milliseconds() as f64 / 1000.0,
        "time": r.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "bed": r.bed,
        "line": r.line,
        "action": r.action.to_string(),
        "reason": r.reason,
    }})
}

/// Writes the first profile's lines (unless only the summary is asked for).
struct Lines<'w> {
    out: std::io::BufWriter<&'w mut dyn Write>,
    first: Option<Timestamp>,
    quiet: bool,
}

impl Sink for Lines<'_> {
    fn alarm(&mut self, a: &AlarmEvent) -> std::io::Result<()> {
        if self.quiet {
            return Ok(());
        }
        writeln!(self.out, "{}", event_line(a, self.first.unwrap_or(a.time)))
    }
    fn refused(&mut self, r: &Refusal<'_>) -> std::io::Result<()> {
        if self.quiet {
            return Ok(());
        }
        writeln!(self.out, "{}", refused_line(r, self.first.unwrap_or(r.time)))
    }
}

/// Runs a replay and writes its JSON lines to `out`.
pub fn run(args: &ReplayArgs, out: &mut dyn Write) -> Result<Summary, ReplayError> {
    let start = DateTime::parse_from_rfc3339(&args.start)
        .map_err(|_| ReplayError::Start(args.start.clone()))?
        .with_timezone(&Utc);
    let mut input = open(&args.file, start, &args.format, args.bed.as_deref().unwrap_or("replay"))?;
    let mut profiles = vec![Profile::resolve(&args.profile, &args.profile_dir)?];
    if let Some(c) = args.compare.as_deref() {
        profiles.push(Profile::resolve(c, &args.profile_dir)?);
    }
    // The first rows decide whether the no-data time must widen; they are then replayed like the rest.
    let mut head = Vec::new();
    while head.len() < ADAPT_ROWS {
        match input.next_row()? {
            Some(r) => head.push(r),
            None => break,
        }
    }
    let mut adjustments = Vec::new();
    for (k, p) in profiles.iter_mut().enumerate() {
        let a = runner::adapt(p, &head);
        if k == 0 {
            adjustments = a;
        }
    }
    let mut lines =
        Lines { out: std::io::BufWriter::with_capacity(1 << 16, out), first: None, quiet: args.summary_only };
    let mut runner = Runner::new(profiles, args.bed.as_deref());
    for r in head {
        lines.first.get_or_insert(r.time);
        runner.row(&r, input.bed(r.bed), &mut lines)?;
    }
    while let Some(r) = input.next_row()? {
        lines.first.get_or_insert(r.time);
        runner.row(&r, input.bed(r.bed), &mut lines)?;
    }
    let o = runner.finish();
    let first = o.first.unwrap_or(start);
    let last = o.last.unwrap_or(first);
    let mut counts = o.counts.into_iter();
    let summary = Summary {
        file: args.file.display().to_string(),
        rows: o.rows,
        missing_values: input.missing_values(),
        beds: o.beds,
        duration_s: (last - first).num_milliseconds() as f64 / 1000.0,
        // The runner always tallies the run's own profile first; an empty default can only mean no rows.
        counts: counts.next().unwrap_or_default(),
        adjustments,
        compare: counts.next(),
        actions: o.actions,
        refused_actions: o.refused,
    };
    let out = &mut lines.out;
    writeln!(out, "{}", json!({ "summary": &summary }))?;
    if let Some(c) = &summary.compare {
        let line = json!({ "compare": {
            summary.counts.profile.clone(): { "alarms": summary.counts.alarms, "alarms_per_hour": summary.counts.alarms_per_hour, "by_priority": summary.counts.by_priority },
            c.profile.clone(): { "alarms": c.alarms, "alarms_per_hour": c.alarms_per_hour, "by_priority": c.by_priority },
        }});
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(summary)
}
