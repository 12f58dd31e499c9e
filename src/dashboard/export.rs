//! Chair history for the trends and the session export (CSV for the chart, a printable page built from the same
//! JSON). By default both cover the bed's latest session; `from`/`to` choose another window, at most
//! [`MAX_WINDOW_H`] hours. Both need a signed-in user whenever `[[users]]` are configured; the store is read off
//! the async runtime.
//!
//! The CSV is streamed: a blocking thread reads the records in time order from a read connection of its own
//! ([`History::for_each_record`]) and hands the rows on in chunks of about [`CHUNK_BYTES`] through a channel of
//! [`CHANNEL_CHUNKS`], so an export holds at most about 128 KiB of rows whatever its window, its first bytes leave
//! before the query has finished, and a client that stops reading for [`SEND_TIMEOUT`] (or goes away) ends the
//! query. At most [`MAX_EXPORTS`] exports run at once in the process (more get 503).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};

use super::history::{ActionRecord, History, HistoryRecord, SessionSummary};
use super::{DashboardError, DashboardState};
use crate::event::{AlarmEvent, SessionEvent, VitalValue};
use crate::vitals::{Parameter, Timestamp};

/// Continuous parameters are thinned to about this many points each for the chart; NIBP never is.
const MAX_POINTS: usize = 1200;
/// Without a session the chair view shows this much of the past.
const DEFAULT_WINDOW_H: i64 = 2;
/// Context kept before a session's start (readings taken while the patient settled in).
const LEAD_IN_MIN: i64 = 2;
/// The longest window one request may ask for: bounds the rows read and the memory of one JSON response.
pub const MAX_WINDOW_H: i64 = 24;
/// The CSV goes out in chunks of about this many bytes.
pub const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks of one export waiting for the client at most.
pub const CHANNEL_CHUNKS: usize = 8;
/// A client that takes no chunk for this long loses its export (the read transaction is not held for ever).
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// CSV exports running at once in the process.
pub const MAX_EXPORTS: usize = 4;
static EXPORTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_EXPORTS);

#[derive(Deserialize)]
pub(super) struct Window {
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    /// `full` keeps every vital value (the CSV always does).
    resolution: Option<String>,
}

#[derive(Serialize)]
struct HistoryDoc {
    bed: String,
    label: String,
    profile: String,
    from: Timestamp,
    to: Timestamp,
    generated: Timestamp,
    session: Option<SessionSummary>,
    vitals: Vec<VitalValue>,
    alarms: Vec<AlarmEvent>,
    session_events: Vec<SessionEvent>,
    actions: Vec<ActionRecord>,
}

/// The window a request covers and the bed's latest session.
struct Span {
    from: Timestamp,
    to: Timestamp,
    now: Timestamp,
    session: Option<SessionSummary>,
}

/// Resolves a request's window (blocking: asks the store for the latest session).
fn span(
    history: &dyn History,
    bed: &str,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<Span, DashboardError> {
    let now = Utc::now();
    let session = history.latest_session(bed)?;
    let (from, to) = match (from, to, &session) {
        (Some(f), Some(t), _) => (f, t),
        (Some(f), None, _) => (f, now),
        (None, to, Some(s)) => (s.started - Duration::minutes(LEAD_IN_MIN), to.or(s.ended).unwrap_or(now)),
        (None, to, None) => {
            let to = to.unwrap_or(now);
            (to - Duration::hours(DEFAULT_WINDOW_H), to)
        }
    };
    if from > to {
        return Err(DashboardError::BadRequest("from is after to".into()));
    }
    if to - from > Duration::hours(MAX_WINDOW_H) {
        return Err(DashboardError::BadRequest(format!(
            "the window from {from} to {to} is longer than {MAX_WINDOW_H} h: ask for less"
        )));
    }
    Ok(Span { from, to, now, session })
}

fn join_error(e: tokio::task::JoinError) -> DashboardError {
    DashboardError::Io(std::io::Error::other(e))
}

async fn load(state: &DashboardState, bed: &str, w: &Window, full: bool) -> Result<HistoryDoc, DashboardError> {
    let info = state.bed_exists(bed)?;
    let history: Arc<dyn History> = state.history.clone();
    let bed = bed.to_owned();
    let (from, to) = (w.from, w.to);
    tokio::task::spawn_blocking(move || {
        let Span { from, to, now, session } = span(&*history, &bed, from, to)?;
        let mut vitals = history.vitals(&bed, from, to)?;
        if !full {
            vitals = thin(vitals, MAX_POINTS);
        }
        Ok(HistoryDoc {
            bed: bed.clone(),
            label: info.label,
            profile: info.profile,
            from,
            to,
            generated: now,
            session,
            vitals,
            alarms: history.alarm_events(&bed, from, to)?,
            session_events: history.session_events(&bed, from, to)?,
            actions: history.actions(&bed, from, to)?,
        })
    })
    .await
    .map_err(join_error)?
}

/// Keeps at most about `max` points per continuous parameter by keeping each bucket's lowest and highest value,
/// so a brief desaturation or a heart-rate spike survives the thinning.
fn thin(vitals: Vec<VitalValue>, max: usize) -> Vec<VitalValue> {
    let mut by_param: BTreeMap<Parameter, Vec<VitalValue>> = BTreeMap::new();
    for v in vitals {
        by_param.entry(v.parameter).or_default().push(v);
    }
    let mut out = Vec::new();
    for (param, values) in by_param {
        if param.is_nibp() || values.len() <= max {
            out.extend(values);
            continue;
        }
        let per_bucket = values.len().div_ceil(max / 2);
        for bucket in values.chunks(per_bucket) {
            let with_value = || bucket.iter().filter(|v| v.value.is_some());
            let lo = with_value().min_by(|a, b| a.value.partial_cmp(&b.value).unwrap_or(std::cmp::Ordering::Equal));
            let hi = with_value().max_by(|a, b| a.value.partial_cmp(&b.value).unwrap_or(std::cmp::Ordering::Equal));
            match (lo, hi) {
                (Some(lo), Some(hi)) if lo.time <= hi.time => out.extend([lo.clone(), hi.clone()]),
                (Some(lo), Some(hi)) => out.extend([hi.clone(), lo.clone()]),
                // A bucket of gaps stays a gap.
                _ => out.push(bucket[0].clone()),
            }
        }
    }
    out.sort_by_key(|v| v.time);
    out.dedup();
    out
}

/// History needs a signed-in user whenever `[[users]]` are configured. Without a signed-in user (only possible
/// when no users are configured, the demo) the audit trail and patient pseudonyms are left out.
pub(super) fn require_history(state: &DashboardState, headers: &HeaderMap) -> Result<bool, DashboardError> {
    let p = state.require_view(headers)?;
    let signed_in = p.as_ref().is_some_and(|p| p.signed_in);
    if !signed_in && !state.config.users.is_empty() {
        return Err(DashboardError::Unauthorized);
    }
    Ok(signed_in)
}

fn for_anonymous(mut doc: HistoryDoc) -> HistoryDoc {
    doc.actions.clear();
    if let Some(s) = doc.session.as_mut() {
        s.patient = None;
    }
    for e in &mut doc.session_events {
        e.patient = None;
    }
    doc
}

pub(super) async fn history_json(
    State(state): State<DashboardState>,
    Path(bed): Path<String>,
    headers: HeaderMap,
    Query(w): Query<Window>,
) -> Result<Response, DashboardError> {
    let staff = require_history(&state, &headers)?;
    let full = w.resolution.as_deref() == Some("full");
    let doc = load(&state, &bed, &w, full).await?;
    Ok(Json(if staff { doc } else { for_anonymous(doc) }).into_response())
}

/// Quotes a CSV field, and defuses text a spreadsheet would run as a formula.
fn field(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']) && s.parse::<f64>().is_err();
    let s = if formula { format!("'{s}") } else { s.to_owned() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn num(v: Option<f64>) -> String {
    v.map(|v| format!("{v}")).unwrap_or_default()
}

fn snake<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// One CSV row (with its newline) for a record of the chronological log.
fn csv_row(record: &HistoryRecord, out: &mut String) {
    let row = match record {
        HistoryRecord::Vital(v) => [
            v.time.to_rfc3339(),
            "vital".into(),
            v.parameter.name().into(),
            num(v.value),
            v.parameter.ucum().into(),
            snake(&v.status),
            String::new(),
            String::new(),
            String::new(),
        ],
        HistoryRecord::Alarm(a) => [
            a.time.to_rfc3339(),
            "alarm".into(),
            a.parameter.map(|p| p.name().to_owned()).unwrap_or_default(),
            num(a.value),
            a.parameter.map(|p| p.ucum().to_owned()).unwrap_or_default(),
            format!("{}/{}/{}", snake(&a.priority), snake(&a.phase), snake(&a.state)),
            a.message.clone(),
            a.by.clone().unwrap_or_default(),
            a.alarm_id.clone(),
        ],
        HistoryRecord::Session(s) => {
            let baseline = s.baseline.map(|b| format!("baseline {}/{}", b.sys, b.dia)).unwrap_or_default();
            [
                s.time.to_rfc3339(),
                "session".into(),
                String::new(),
                String::new(),
                String::new(),
                snake(&s.phase),
                format!("{} {baseline}", s.action).trim().to_owned(),
                s.by.clone().unwrap_or_default(),
                s.session_id.clone(),
            ]
        }
        HistoryRecord::Action(a) => {
            let outcome =
                if a.ok { String::from("ok") } else { format!("refused: {}", a.reason.as_deref().unwrap_or("")) };
            [
                a.time.to_rfc3339(),
                "action".into(),
                String::new(),
                String::new(),
                String::new(),
                outcome,
                a.request.clone(),
                a.actor.clone(),
                String::new(),
            ]
        }
    };
    out.push_str(&row.map(|f| field(&f)).join(","));
    out.push('\n');
}

fn csv_header(bed: &str, span: &Span) -> String {
    format!(
        "# Vigil session export (secondary notification system; the bedside monitor is the primary record)\n\
         # bed {}, {} to {}, generated {}\n\
         time,kind,parameter,value,unit,status,detail,by,ref\n",
        field(bed),
        span.from.to_rfc3339(),
        span.to.to_rfc3339(),
        span.now.to_rfc3339()
    )
}

/// Runs on a blocking thread: reads the records and sends the CSV in chunks until done, the client is gone, or it
/// stalls for [`SEND_TIMEOUT`]. A store error ends the body with an error, so the client sees a broken download
/// rather than a short file that looks complete.
fn stream_csv(
    history: &dyn History,
    bed: &str,
    span: &Span,
    staff: bool,
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    runtime: tokio::runtime::Handle,
) {
    let send = |chunk: String| {
        let sent = runtime.block_on(tokio::time::timeout(SEND_TIMEOUT, tx.send(Ok(bytes::Bytes::from(chunk)))));
        matches!(sent, Ok(Ok(())))
    };
    let mut chunk = csv_header(bed, span);
    let mut open = true;
    let result = history.for_each_record(bed, span.from, span.to, staff, &mut |record| {
        csv_row(&record, &mut chunk);
        if chunk.len() >= CHUNK_BYTES {
            open = send(std::mem::replace(&mut chunk, String::with_capacity(CHUNK_BYTES + 1024)));
        }
        open
    });
    match result {
        Ok(_) if open => {
            send(chunk);
        }
        Ok(_) => tracing::info!(bed, "dashboard: export ended early: the client stopped reading"),
        Err(e) => {
            tracing::error!(bed, error = %e, "dashboard: export failed");
            let _ = runtime.block_on(tokio::time::timeout(SEND_TIMEOUT, tx.send(Err(std::io::Error::other(e)))));
        }
    }
}

pub(super) async fn history_csv(
    State(state): State<DashboardState>,
    Path(bed): Path<String>,
    headers: HeaderMap,
    Query(w): Query<Window>,
) -> Result<Response, DashboardError> {
    let staff = require_history(&state, &headers)?;
    let info = state.bed_exists(&bed)?;
    let permit = EXPORTS.try_acquire().map_err(|_| DashboardError::Busy)?;
    let history: Arc<dyn History> = state.history.clone();
    let (from, to) = (w.from, w.to);
    let id = bed.clone();
    let (span, history) = tokio::task::spawn_blocking(move || span(&*history, &id, from, to).map(|s| (s, history)))
        .await
        .map_err(join_error)??;
    let name = match &span.session {
        Some(s) if w.from.is_none() => format!("vigil-{}-{}.csv", info.id, s.session_id),
        _ => format!("vigil-{}-{}.csv", info.id, span.from.format("%Y%m%dT%H%M%SZ")),
    };
    let name: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        stream_csv(&*history, &bed, &span, staff, tx, runtime);
    });
    Ok((
        [
            (header::CONTENT_TYPE, String::from("text/csv; charset=utf-8")),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
            (header::CACHE_CONTROL, String::from("no-store")),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vitals::ValueStatus;

    fn v(sec: i64, p: Parameter, value: f64) -> VitalValue {
        VitalValue {
            parameter: p,
            value: Some(value),
            status: ValueStatus::Valid,
            time: Timestamp::from_timestamp(1_700_000_000 + sec, 0).unwrap(),
        }
    }

    #[test]
    fn thinning_keeps_the_deepest_desaturation_and_every_nibp() {
        let mut vitals: Vec<VitalValue> = (0..10_000).map(|s| v(s, Parameter::Spo2, 97.0)).collect();
        vitals[6_543].value = Some(71.0);
        vitals.extend((0..50).map(|i| v(i * 200, Parameter::NibpSys, 120.0)));
        let thinned = thin(vitals, 200);
        let spo2: Vec<_> = thinned.iter().filter(|v| v.parameter == Parameter::Spo2).collect();
        assert!(spo2.len() <= 220, "{} points", spo2.len());
        assert!(spo2.iter().any(|v| v.value == Some(71.0)), "the desaturation was thinned away");
        assert_eq!(thinned.iter().filter(|v| v.parameter == Parameter::NibpSys).count(), 50);
        assert!(thinned.windows(2).all(|w| w[0].time <= w[1].time));
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("-1.5"), "-1.5");
        assert_eq!(field("-cmd"), "'-cmd");
    }
}
