//! Chair history for the trends and the session export (CSV for the chart, a printable page built from the same
//! JSON). By default both cover the bed's latest session; `from`/`to` choose another window, at most
//! [`MAX_WINDOW_H`] hours. Both need a signed-in user whenever `[[users]]` are configured; the store is read off
//! the async runtime.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};

use super::history::{ActionRecord, History, SessionSummary};
use super::{DashboardError, DashboardState};
use crate::event::{AlarmEvent, SessionEvent, VitalValue};
use crate::vitals::{Parameter, Timestamp};

/// Continuous parameters are thinned to about this many points each for the chart; NIBP never is.
const MAX_POINTS: usize = 1200;
/// Without a session the chair view shows this much of the past.
const DEFAULT_WINDOW_H: i64 = 2;
/// Context kept before a session's start (readings taken while the patient settled in).
const LEAD_IN_MIN: i64 = 2;
/// The longest window one request may ask for: bounds the rows read and the memory of one response.
pub const MAX_WINDOW_H: i64 = 24;

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

async fn load(state: &DashboardState, bed: &str, w: &Window, full: bool) -> Result<HistoryDoc, DashboardError> {
    let info = state.bed_exists(bed)?;
    let history: Arc<dyn History> = state.history.clone();
    let bed = bed.to_owned();
    let (from, to) = (w.from, w.to);
    tokio::task::spawn_blocking(move || {
        let now = Utc::now();
        let session = history.latest_session(&bed)?;
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
    .map_err(|e| DashboardError::Io(std::io::Error::other(e)))?
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
fn require_history(state: &DashboardState, headers: &HeaderMap) -> Result<bool, DashboardError> {
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

/// One chronological log: vitals, alarm events, session events and actions, one per row.
fn csv(doc: &HistoryDoc) -> String {
    let mut rows: Vec<(Timestamp, u8, String)> = Vec::new();
    for v in &doc.vitals {
        let row = [
            v.time.to_rfc3339(),
            "vital".into(),
            v.parameter.name().into(),
            num(v.value),
            v.parameter.ucum().into(),
            snake(&v.status),
            String::new(),
            String::new(),
            String::new(),
        ];
        rows.push((v.time, 0, row.map(|f| field(&f)).join(",")));
    }
    for a in &doc.alarms {
        let row = [
            a.time.to_rfc3339(),
            "alarm".into(),
            a.parameter.map(|p| p.name().to_owned()).unwrap_or_default(),
            num(a.value),
            a.parameter.map(|p| p.ucum().to_owned()).unwrap_or_default(),
            format!("{}/{}/{}", snake(&a.priority), snake(&a.phase), snake(&a.state)),
            a.message.clone(),
            a.by.clone().unwrap_or_default(),
            a.alarm_id.clone(),
        ];
        rows.push((a.time, 1, row.map(|f| field(&f)).join(",")));
    }
    for s in &doc.session_events {
        let baseline = s.baseline.map(|b| format!("baseline {}/{}", b.sys, b.dia)).unwrap_or_default();
        let row = [
            s.time.to_rfc3339(),
            "session".into(),
            String::new(),
            String::new(),
            String::new(),
            snake(&s.phase),
            format!("{} {baseline}", s.action).trim().to_owned(),
            s.by.clone().unwrap_or_default(),
            s.session_id.clone(),
        ];
        rows.push((s.time, 2, row.map(|f| field(&f)).join(",")));
    }
    for a in &doc.actions {
        let outcome = if a.ok { String::from("ok") } else { format!("refused: {}", a.reason.as_deref().unwrap_or("")) };
        let row = [
            a.time.to_rfc3339(),
            "action".into(),
            String::new(),
            String::new(),
            String::new(),
            outcome,
            a.request.clone(),
            a.actor.clone(),
            String::new(),
        ];
        rows.push((a.time, 3, row.map(|f| field(&f)).join(",")));
    }
    rows.sort_by_key(|r| (r.0, r.1));
    let mut out = format!(
        "# Vigil session export (secondary notification system; the bedside monitor is the primary record)\n\
         # bed {}, {} to {}, generated {}\n\
         time,kind,parameter,value,unit,status,detail,by,ref\n",
        field(&doc.bed),
        doc.from.to_rfc3339(),
        doc.to.to_rfc3339(),
        doc.generated.to_rfc3339()
    );
    for (_, _, row) in rows {
        out.push_str(&row);
        out.push('\n');
    }
    out
}

pub(super) async fn history_csv(
    State(state): State<DashboardState>,
    Path(bed): Path<String>,
    headers: HeaderMap,
    Query(w): Query<Window>,
) -> Result<Response, DashboardError> {
    let staff = require_history(&state, &headers)?;
    let doc = load(&state, &bed, &w, true).await?;
    let doc = if staff { doc } else { for_anonymous(doc) };
    let name = match &doc.session {
        Some(s) if w.from.is_none() => format!("vigil-{}-{}.csv", doc.bed, s.session_id),
        _ => format!("vigil-{}-{}.csv", doc.bed, doc.from.format("%Y%m%dT%H%M%SZ")),
    };
    let name: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    Ok((
        [
            (header::CONTENT_TYPE, String::from("text/csv; charset=utf-8")),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
            (header::CACHE_CONTROL, String::from("no-store")),
        ],
        csv(&doc),
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
