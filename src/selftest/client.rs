//! `vigil self-test`: asks a running daemon to run its self-test over the dashboard API (signed in as an
//! admin), and watches for the test alarm itself as an independent MQTT subscriber signed in as the same user:
//! the hop `mqtt-subscriber`, which only a client outside the daemon can confirm.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{HopResult, Report, DEADLINE};

/// Why `vigil self-test` could not run a test (a test that ran and failed is a [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `http://host:port`.
    #[error("--url: '{0}' is not http://HOST:PORT (https dashboards are not supported by vigil self-test yet)")]
    BadUrl(String),
    /// The dashboard could not be reached.
    #[error("cannot reach the dashboard at {url}: {reason}")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
    /// The dashboard answered with an error.
    #[error("{what}: HTTP {status}: {reason}")]
    Refused {
        /// Which request.
        what: &'static str,
        /// Its status.
        status: u16,
        /// The dashboard's reason.
        reason: String,
    },
    /// The dashboard's answer was not what this version expects.
    #[error("{what}: unexpected answer: {reason}")]
    Unexpected {
        /// Which request.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// Where and as whom to run the self-test.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port` of the dashboard.
    pub url: String,
    /// An admin's name and password; `None` for the loopback demo (actions without sign-in).
    pub credentials: Option<(String, String)>,
    /// The bed; `None` for the daemon's default (the first bed).
    pub bed: Option<String>,
}

/// The dashboard's address from a `dashboard.listen` value: an unspecified address is reached on loopback.
pub fn url_of_listen(listen: &str) -> String {
    let addr = match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let ip: std::net::IpAddr =
                if a.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
            std::net::SocketAddr::new(ip, a.port()).to_string()
        }
        Ok(a) => a.to_string(),
        Err(_) => listen.to_owned(),
    };
    format!("http://{addr}")
}

struct Http {
    authority: String,
    cookie: Option<String>,
    csrf: Option<String>,
}

impl Http {
    fn new(url: &str) -> Result<Http, ClientError> {
        let rest = url.strip_prefix("http://").ok_or_else(|| ClientError::BadUrl(url.to_owned()))?;
        let authority = rest.trim_end_matches('/').to_owned();
        if authority.is_empty() || authority.contains('/') {
            return Err(ClientError::BadUrl(url.to_owned()));
        }
        Ok(Http { authority, cookie: None, csrf: None })
    }

    /// One request on its own connection; returns the status, the `Set-Cookie` values and the JSON body.
    async fn send(
        &self,
        what: &'static str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Vec<String>, Value), ClientError> {
        let unreachable = |e: String| ClientError::Unreachable { url: format!("http://{}", self.authority), reason: e };
        let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(&self.authority))
            .await
            .map_err(|_| unreachable("no connection within 5 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority)
            .header(header::ACCEPT, "application/json");
        if let Some(c) = &self.cookie {
            req = req.header(header::COOKIE, c);
        }
        if let Some(t) = &self.csrf {
            req = req.header(crate::dashboard::auth::CSRF_HEADER, t);
        }
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        if !bytes.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ClientError::Unexpected { what, reason: e.to_string() })?;
        // The self-test itself takes up to DEADLINE; the answer comes right after.
        let res = tokio::time::timeout(DEADLINE + Duration::from_secs(5), sender.send_request(req))
            .await
            .map_err(|_| unreachable(format!("{what}: no answer within {} s", DEADLINE.as_secs() + 5)))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = res.status();
        let cookies = res
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v: &HeaderValue| v.to_str().ok().map(str::to_owned))
            .collect();
        let body = res.into_body().collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let reason = json.get("error").and_then(Value::as_str).unwrap_or("no reason given").to_owned();
            return Err(ClientError::Refused { what, status: status.as_u16(), reason });
        }
        Ok((status, cookies, json))
    }
}

/// An MQTT subscriber on the bed's alarm topic; sends every test alarm's `alarm_id` it sees.
async fn subscribe(
    host: String,
    port: u16,
    topic: String,
    credentials: Option<(String, String)>,
) -> Result<mpsc::UnboundedReceiver<String>, String> {
    let id = format!("vigil-self-test-{}", std::process::id());
    let mut o = MqttOptions::new(id, host.clone(), port);
    o.set_keep_alive(Duration::from_secs(5)).set_clean_session(true).set_max_packet_size(1 << 20, 1 << 20);
    if let Some((u, p)) = credentials {
        o.set_credentials(u, p);
    }
    let (client, mut el) = AsyncClient::new(o, 16);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut topic = Some(topic);
        loop {
            match el.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    if let Some(t) = topic.take() {
                        if let Err(e) = client.subscribe(t, QoS::AtLeastOnce).await {
                            if let Some(r) = ready.take() {
                                let _ = r.send(Err(e.to_string()));
                            }
                            return;
                        }
                    }
                }
                Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                    if let Some(r) = ready.take() {
                        let _ =
                            r.send(if refused { Err("the broker refused the subscription".into()) } else { Ok(()) });
                    }
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    let json: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    if json.get("test") == Some(&Value::Bool(true)) {
                        if let Some(id) = json.get("alarm_id").and_then(Value::as_str) {
                            let _ = tx.send(id.to_owned());
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e.to_string()));
                    }
                    return;
                }
            }
        }
    });
    match tokio::time::timeout(Duration::from_secs(5), ready_rx).await {
        Ok(Ok(Ok(()))) => Ok(rx),
        Ok(Ok(Err(e))) => Err(format!("cannot subscribe at {host}:{port}: {e}")),
        Ok(Err(_)) => Err(format!("cannot subscribe at {host}:{port}: the client stopped")),
        Err(_) => Err(format!("cannot subscribe at {host}:{port}: no answer within 5 s")),
    }
}

/// Signs in, subscribes to the bed's alarm topic, runs the self-test and adds the subscriber's own hop to the
/// daemon's report.
pub async fn run(target: &Target) -> Result<Report, ClientError> {
    let mut http = Http::new(&target.url)?;
    let (_, cookies, me) = match &target.credentials {
        Some((name, password)) => {
            http.send("sign-in", Method::POST, "/api/session", Some(json!({ "name": name, "password": password })))
                .await?
        }
        None => http.send("who am I", Method::GET, "/api/me", None).await?,
    };
    let session = format!("{}=", crate::dashboard::auth::COOKIE);
    http.cookie =
        cookies.iter().find_map(|c| c.split(';').next().filter(|kv| kv.starts_with(&session)).map(str::to_owned));
    http.csrf = me.get("csrf").and_then(Value::as_str).map(str::to_owned);
    let (_, _, info) = http.send("self-test info", Method::GET, "/api/selftest", None).await?;
    let bed = match &target.bed {
        Some(b) => b.clone(),
        None => info
            .get("default_bed")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Unexpected { what: "self-test info", reason: "no bed to test".into() })?,
    };
    // The subscriber is in place before the alarm is raised, so it cannot miss it.
    let t0 = Instant::now();
    let subscriber = match info.get("mqtt").filter(|m| !m.is_null()) {
        None => None,
        Some(m) if m.get("tls") == Some(&Value::Bool(true)) => {
            Some(Err("the broker uses TLS, which vigil self-test's subscriber does not support yet".to_owned()))
        }
        Some(m) => {
            let dashboard_host = http.authority.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']']).to_owned());
            let host = match m.get("host").and_then(Value::as_str) {
                Some(h) if h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified()) => {
                    dashboard_host.unwrap_or_else(|| "127.0.0.1".into())
                }
                Some(h) => h.to_owned(),
                None => "127.0.0.1".into(),
            };
            let port = m.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()).unwrap_or(1883);
            let topic = m.get("alarm_topic").and_then(Value::as_str).unwrap_or_default().replace('+', &bed);
            Some(subscribe(host, port, topic, target.credentials.clone()).await)
        }
    };
    let (_, _, answer) = http.send("self-test", Method::POST, "/api/selftest", Some(json!({ "bed": bed }))).await?;
    let mut report: Report = serde_json::from_value(answer)
        .map_err(|e| ClientError::Unexpected { what: "self-test", reason: e.to_string() })?;
    if let Some(sub) = subscriber {
        let hop = match (sub, report.alarm_id.clone()) {
            (Err(why), _) => HopResult { hop: "mqtt-subscriber".into(), ok: false, ms: 0, detail: why },
            (Ok(_), None) => HopResult {
                hop: "mqtt-subscriber".into(),
                ok: false,
                ms: t0.elapsed().as_millis() as u64,
                detail: "not reached: the engine raised no test alarm".into(),
            },
            (Ok(mut rx), Some(id)) => {
                let deadline = t0 + DEADLINE;
                let seen = loop {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(got)) if got == id => break true,
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break false,
                    }
                };
                let user = target.credentials.as_ref().map_or("anonymous", |(u, _)| u.as_str());
                HopResult {
                    hop: "mqtt-subscriber".into(),
                    ok: seen,
                    ms: t0.elapsed().as_millis() as u64,
                    detail: if seen {
                        format!("received by this command's own subscriber (signed in as {user})")
                    } else {
                        format!("not received by this command's own subscriber within {} s", DEADLINE.as_secs())
                    },
                }
            }
        };
        report.passed &= hop.ok;
        report.hops.push(hop);
    }
    Ok(report)
}

/// The report as a table for people: one line per hop with its result, time and detail.
pub fn table(report: &Report) -> String {
    let mut out = format!(
        "self-test of bed {} ({}): {}\n",
        report.bed,
        report.alarm_id.as_deref().unwrap_or("no test alarm"),
        if report.passed { "PASSED" } else { "FAILED" }
    );
    let width = report.hops.iter().map(|h| h.hop.len()).max().unwrap_or(4).max(4);
    out.push_str(&format!("  {:<width$}  {:<4}  {:>7}  detail\n", "hop", "", "ms"));
    for h in &report.hops {
        let mark = if h.ok { "ok" } else { "FAIL" };
        out.push_str(&format!("  {:<width$}  {:<4}  {:>7}  {}\n", h.hop, mark, h.ms, h.detail));
    }
    out
}
