//! Sign-in sessions: users are checked by `crate::auth` (argon2, shared with MQTT command intake), then get a
//! server-side session behind an `HttpOnly; SameSite=Strict` cookie (`Secure` when the browser's connection is
//! HTTPS), and a per-session CSRF token that every state-changing request must echo in `X-CSRF-Token`.
//! A session ends after `dashboard.session_idle_s` without a request that carries its cookie, and
//! `dashboard.session_max_s` after sign-in whatever the activity. An open event stream is not activity: a screen
//! left watching the ward keeps showing it, but acting needs a fresh sign-in after the idle time.
//! Sessions live in memory: a daemon restart signs everyone out, which is the safe direction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use axum::http::HeaderMap;
use rand::RngCore;
use serde::Serialize;

use crate::config::Role;

/// Name of the session cookie.
pub const COOKIE: &str = "vigil_session";
/// Header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// User name, or `demo` for unauthenticated loopback demo actions.
    pub name: String,
    /// Role; the demo actor acts as a nurse.
    pub role: Role,
    /// The token state-changing requests must echo.
    #[serde(skip)]
    pub csrf: String,
    /// True for a signed-in user, false for the demo actor.
    pub signed_in: bool,
}

impl Principal {
    /// Whether this principal may send commands to beds.
    pub fn may_act(&self) -> bool {
        self.role >= Role::Nurse
    }
}

struct Session {
    principal: Principal,
    last_seen: Instant,
    ends: Instant,
}

/// The signed-in sessions and the sign-in throttle.
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    idle: Duration,
    max: Duration,
    /// Failed sign-ins per name and address, shared rules with the embedded broker's gate.
    pub lockout: crate::auth::Lockout,
}

/// 32 random bytes, hex: session ids and CSRF tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// New, empty: sessions end after `idle` without a request, and `max` after sign-in.
    pub fn new(idle: Duration, max: Duration) -> Arc<Sessions> {
        Arc::new(Sessions { sessions: Mutex::default(), idle, max, lockout: Default::default() })
    }

    /// How long a session lasts at most (the cookie's `Max-Age`).
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Opens a session; returns its id (the cookie value).
    pub fn open(&self, name: &str, role: Role) -> (String, Principal) {
        let id = random_token();
        let principal = Principal { name: name.to_owned(), role, csrf: random_token(), signed_in: true };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| self.live(s, now));
        sessions.insert(id.clone(), Session { principal: principal.clone(), last_seen: now, ends: now + self.max });
        (id, principal)
    }

    fn live(&self, s: &Session, now: Instant) -> bool {
        now < s.ends && now.duration_since(s.last_seen) < self.idle
    }

    /// The principal of a live session; the request counts as activity. An expired session is forgotten.
    pub fn get(&self, id: &str) -> Option<Principal> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let s = sessions.get_mut(id)?;
        if !self.live(s, now) {
            sessions.remove(id);
            return None;
        }
        s.last_seen = now;
        Some(s.principal.clone())
    }

    /// Ends a session.
    pub fn close(&self, id: &str) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// `Set-Cookie` for a new session that lasts at most `max`; `secure` when the browser's connection is HTTPS (the
/// browser then never sends it over plain HTTP).
pub fn set_cookie(id: &str, max: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", max.as_secs())
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// Compares tokens without an early exit, so response timing says nothing about how much matched.
pub fn tokens_match(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a `Host` header value names this dashboard: a loopback name, the listen address, or one of
/// `allowed`. Ports are ignored (a rebinding page controls the name, not the port). No header (not sent by
/// browsers) is allowed.
pub fn host_allowed(host: Option<&str>, listen: &std::net::SocketAddr, allowed: &[String]) -> bool {
    let Some(host) = host else { return true };
    let name = |h: &str| -> String {
        let h = h.trim();
        let h = if let Some(rest) = h.strip_prefix('[') {
            rest.split(']').next().unwrap_or("")
        } else if h.matches(':').count() == 1 {
            h.split(':').next().unwrap_or("")
        } else {
            h
        };
        h.trim_end_matches('.').to_ascii_lowercase()
    };
    let host = name(host);
    if host.is_empty() {
        return false;
    }
    let loopback = ["localhost", "127.0.0.1", "::1"];
    if loopback.contains(&host.as_str()) || host.ends_with(".localhost") {
        return true;
    }
    if !listen.ip().is_unspecified() && host == listen.ip().to_string() {
        return true;
    }
    allowed.iter().any(|a| name(a) == host)
}

/// Whether a request's `Origin` (when the browser sends one) is this server. Browsers send it on every
/// cross-site POST, so a mismatch is a forged request even before the CSRF token is checked.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(axum::http::header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or(origin);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_session_ends_after_the_idle_time_without_requests_and_at_its_absolute_lifetime_whatever_the_activity() {
        let min = |m: u64| Duration::from_secs(60 * m);
        let sessions = Sessions::new(min(30), min(12 * 60));
        let (idle, _) = sessions.open("nina", Role::Nurse);
        let (busy, _) = sessions.open("ada", Role::Nurse);
        // Each request restarts the idle clock.
        for _ in 0..3 {
            tokio::time::advance(min(29)).await;
            assert!(sessions.get(&idle).is_some());
        }
        // Thirty minutes without a request: gone, and it stays gone.
        tokio::time::advance(min(30)).await;
        assert!(sessions.get(&idle).is_none());
        assert!(sessions.get(&idle).is_none());
        // A session used every 20 minutes still ends 12 hours after sign-in.
        let (busy2, _) = sessions.open("ada", Role::Nurse);
        let mut used = Duration::ZERO;
        while used + min(20) < min(12 * 60) {
            tokio::time::advance(min(20)).await;
            used += min(20);
            assert!(sessions.get(&busy2).is_some(), "ended early, after {used:?}");
        }
        tokio::time::advance(min(20)).await;
        assert!(sessions.get(&busy2).is_none(), "outlived its 12 h");
        assert!(sessions.get(&busy).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_same_site_strict_and_secure_only_over_https() {
        let plain = set_cookie("abc", Duration::from_secs(600), false);
        assert_eq!(plain, "vigil_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=600");
        assert!(set_cookie("abc", Duration::from_secs(600), true).ends_with("; Secure"));
        assert!(clear_cookie(true).contains("Max-Age=0; Secure"));
    }
}
