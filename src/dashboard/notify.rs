//! The dashboard's notification routes: acknowledge links (`GET /ack/<token>` shows what the link
//! acknowledges and a button; `POST /ack/<token>` acknowledges, once), `GET /api/notify/chains`, where each
//! alarm stands in its escalation chain (the ward page shows it in the alarm's row), and `GET
//! /api/notify/attempts`, the notification log of a bed (the chair page shows it in its alarm log).
//!
//! A GET never acknowledges: chat apps and mail scanners fetch links to preview them, and a preview must not
//! silence an alarm. ntfy's action button and the confirmation page POST.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::json;

use super::export::{require_history, MAX_WINDOW_H};
use super::{DashboardError, DashboardState, HistoryError};
use crate::hub::CommandError;
use crate::notify::NotifyError;
use crate::vitals::Timestamp;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>{t} – Vigil</title>\
         <link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body class=\"ack-page\"><main>\
         <h1>{t}</h1>{body}<p class=\"note\">Vigil is a secondary notification aid: the bedside monitor remains the \
         primary alarm.</p></main></body></html>",
        t = escape(title)
    );
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], html)
        .into_response()
}

fn refusal(e: &NotifyError) -> Response {
    let status = match e {
        NotifyError::UnknownLink => StatusCode::NOT_FOUND,
        NotifyError::LinkUsed | NotifyError::LinkExpired => StatusCode::GONE,
        NotifyError::NotAcknowledged(CommandError::Refused(_)) => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    page(status, "Not acknowledged", &format!("<p class=\"reason\">{}</p>", escape(&e.to_string())))
}

/// `GET /ack/<token>`: what the link would acknowledge, and the button that does it.
pub(super) async fn show(State(state): State<DashboardState>, Path(token): Path<String>) -> Response {
    // Without notification targets there are no links: every token is unknown.
    let Some(n) = state.notify.clone() else { return refusal(&NotifyError::UnknownLink) };
    let links = n.links.clone();
    let t = token.clone();
    let checked = tokio::task::spawn_blocking(move || links.check(&t, chrono::Utc::now())).await;
    match checked {
        Ok(Ok(record)) => page(
            StatusCode::OK,
            "Acknowledge this alarm?",
            &format!(
                "<p>Alarm <code>{}</code> on bed <b>{}</b>, sent to {}.</p><form method=\"post\" action=\"\">\
                 <button type=\"submit\" class=\"ack\">Acknowledge</button></form>",
                escape(&record.alarm_id),
                escape(&record.bed),
                escape(&record.target)
            ),
        ),
        Ok(Err(e)) => refusal(&e),
        Err(e) => refusal(&NotifyError::Store(crate::store::StoreError::Failed(e.to_string()))),
    }
}

/// `POST /ack/<token>`: acknowledges the link's alarm for the target that carried it; the link then is spent.
pub(super) async fn acknowledge(State(state): State<DashboardState>, Path(token): Path<String>) -> Response {
    // Without notification targets there are no links: every token is unknown.
    let Some(n) = state.notify.clone() else { return refusal(&NotifyError::UnknownLink) };
    match n.use_link(&token).await {
        Ok(record) => page(
            StatusCode::OK,
            "Acknowledged",
            &format!(
                "<p class=\"reason\">Alarm <code>{}</code> on bed <b>{}</b> is acknowledged (by notify:{}).</p>",
                escape(&record.alarm_id),
                escape(&record.bed),
                escape(&record.target)
            ),
        ),
        Err(e) => refusal(&e),
    }
}

/// `GET /api/notify/chains`: the escalation chains running now or changed in the last hour.
pub(super) async fn chains(
    State(state): State<DashboardState>,
    headers: HeaderMap,
) -> Result<Response, DashboardError> {
    state.require_view(&headers)?;
    let Some(n) = state.notify.clone() else { return Ok(Json(json!({ "chains": [] })).into_response()) };
    let read = tokio::task::spawn_blocking(move || n.chains()).await;
    match read {
        Ok(Ok(chains)) => Ok(Json(json!({ "chains": chains })).into_response()),
        Ok(Err(e)) => Err(DashboardError::BadRequest(e.to_string())),
        Err(e) => Err(DashboardError::BadRequest(e.to_string())),
    }
}

/// The query of `GET /api/notify/attempts`.
#[derive(Deserialize)]
pub(super) struct AttemptsQuery {
    bed: String,
    /// Only this alarm's attempts.
    alarm_id: Option<String>,
    /// Default: [`MAX_WINDOW_H`] hours before `to`.
    from: Option<Timestamp>,
    /// Default: now.
    to: Option<Timestamp>,
}

/// `GET /api/notify/attempts?bed=…[&alarm_id=…][&from=…][&to=…]`: every delivery attempt to a notification target
/// for a bed's alarms, success or failure, with its receipt or error, oldest first; at most [`MAX_WINDOW_H`] hours.
/// Part of the alarm log, so it needs a signed-in user whenever `[[users]]` are configured, like the history (an
/// error can name a recipient).
pub(super) async fn attempts(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    Query(q): Query<AttemptsQuery>,
) -> Result<Response, DashboardError> {
    require_history(&state, &headers)?;
    state.bed_exists(&q.bed)?;
    let to = q.to.unwrap_or_else(Utc::now);
    let from = q.from.unwrap_or(to - Duration::hours(MAX_WINDOW_H));
    if from > to {
        return Err(DashboardError::BadRequest("from is after to".into()));
    }
    if to - from > Duration::hours(MAX_WINDOW_H) {
        return Err(DashboardError::BadRequest(format!(
            "the window from {from} to {to} is longer than {MAX_WINDOW_H} h: ask for less"
        )));
    }
    let AttemptsQuery { bed, alarm_id, .. } = q;
    // Without notification targets nothing was ever attempted.
    let Some(n) = state.notify.clone() else {
        return Ok(Json(json!({ "bed": bed, "from": from, "to": to, "attempts": [] })).into_response());
    };
    let b = bed.clone();
    let read = tokio::task::spawn_blocking(move || n.attempts(&b, from, to, alarm_id.as_deref())).await;
    let unavailable = |e: String| DashboardError::History(HistoryError::Unavailable(e));
    match read {
        Ok(Ok(attempts)) => {
            Ok(Json(json!({ "bed": bed, "from": from, "to": to, "attempts": attempts })).into_response())
        }
        Ok(Err(e)) => Err(unavailable(e.to_string())),
        Err(e) => Err(unavailable(e.to_string())),
    }
}
