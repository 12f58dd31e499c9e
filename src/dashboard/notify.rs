//! The dashboard's notification routes: acknowledge links (`GET /ack/<token>` shows what the link
//! acknowledges and a button; `POST /ack/<token>` acknowledges, once) and `GET /api/notify/chains`, where each
//! alarm stands in its escalation chain (the ward page shows it in the alarm's row).
//!
//! A GET never acknowledges: chat apps and mail scanners fetch links to preview them, and a preview must not
//! silence an alarm. ntfy's action button and the confirmation page POST.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{DashboardError, DashboardState};
use crate::hub::CommandError;
use crate::notify::NotifyError;

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
