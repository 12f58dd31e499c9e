//! The webhook target: an HTTP(S) POST per notification, in one of three bodies ([`Template`]): the MQTT alarm
//! payload (`crate::mqtt::payload::alarm`, the one encoder of alarm events) with a `notification` object, an
//! ntfy message, or a Slack/Mattermost/Teams-style `{"text": ...}`. Any 2xx answer is a delivery; anything else,
//! a timeout or a connection error is a failure the delivery task retries.
//!
//! TLS is rustls with the ring provider (the only crypto provider in the build), trusting the system's roots
//! and the target's `ca_file`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde_json::json;
use tokio_rustls::rustls;

use super::config::{Secret, TargetConfig, Template};
use super::{Notification, NotifyError, Receipt};
use crate::event::Priority;

/// A configured webhook.
#[derive(Debug)]
pub struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    template: Template,
    headers: HeaderMap,
    bearer: Option<Secret>,
    timeout: Duration,
}

/// Longest part of a refusing answer's body kept in the notification log.
const BODY_SHOWN: usize = 200;

impl Webhook {
    /// Builds the webhook of target `key` (reads the system's roots and `ca_file`: off the async runtime).
    pub fn new(key: &str, t: &TargetConfig, base_dir: &Path) -> Result<Webhook, NotifyError> {
        let setup = |k: &str, reason: String| NotifyError::Setup { key: format!("{key}.{k}"), reason };
        let url_text = t.url.as_deref().ok_or_else(|| setup("url", "a webhook needs a url".into()))?;
        let url = reqwest::Url::parse(url_text).map_err(|e| setup("url", e.to_string()))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &t.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| setup(&format!("headers.{name}"), e.to_string()))?;
            let v = HeaderValue::from_str(value).map_err(|e| setup(&format!("headers.{name}"), e.to_string()))?;
            headers.insert(n, v);
        }
        let tls = client_tls(key, t.ca_file.as_deref(), base_dir)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .http1_only()
            .connect_timeout(Duration::from_secs(t.timeout_s))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| setup("url", format!("cannot set up the HTTP client: {e}")))?;
        Ok(Webhook {
            client,
            url,
            template: t.template.unwrap_or_default(),
            headers,
            bearer: t.secret.clone(),
            timeout: Duration::from_secs(t.timeout_s),
        })
    }

    /// POSTs one notification.
    pub async fn deliver(&self, n: &Notification) -> Result<Receipt, NotifyError> {
        let mut request = self.client.post(self.url.clone()).timeout(self.timeout).headers(self.headers.clone());
        if let Some(Secret(token)) = &self.bearer {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| NotifyError::Refused("the bearer token is not a valid header value".into()))?;
            request = request.header(AUTHORIZATION, value);
        }
        request = match self.template {
            Template::Json => request.header(CONTENT_TYPE, "application/json").body(json_body(n).to_string()),
            Template::Slack => {
                request.header(CONTENT_TYPE, "application/json").body(json!({ "text": n.text() }).to_string())
            }
            Template::Ntfy => {
                let mut r = request
                    .header(CONTENT_TYPE, "text/plain; charset=utf-8")
                    .header("Title", ascii(&n.headline()))
                    .header("Priority", ntfy_priority(n.event.priority))
                    .header("Tags", ntfy_tag(n.event.priority));
                if let Some(url) = &n.ack_url {
                    // An http action: the phone POSTs the link itself (a GET only shows the confirmation page).
                    r = r.header("Actions", format!("http, Acknowledge, {url}, method=POST, clear=true"));
                }
                r.body(n.text())
            }
        };
        let response = request.send().await.map_err(|e| NotifyError::Unreachable(error_chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Receipt { detail: format!("HTTP {}", status.as_u16()), acknowledged_by: None });
        }
        let mut body = String::new();
        let mut response = response;
        if let Ok(Some(chunk)) = response.chunk().await {
            body = String::from_utf8_lossy(&chunk[..chunk.len().min(BODY_SHOWN)]).into_owned();
        }
        let body: String = body.chars().filter(|c| !c.is_control()).collect();
        Err(NotifyError::Refused(format!("HTTP {}: {}", status.as_u16(), body.trim())))
    }
}

/// The `json` body: the MQTT alarm payload and what this notification is.
pub fn json_body(n: &Notification) -> serde_json::Value {
    let mut v = crate::mqtt::payload::alarm(&n.event);
    if let serde_json::Value::Object(map) = &mut v {
        map.insert(
            "notification".into(),
            json!({
                "target": n.target,
                "reason": n.reason,
                "headline": n.headline(),
                "bed_label": n.bed_label,
                "ack_url": n.ack_url,
            }),
        );
    }
    v
}

fn ntfy_priority(p: Priority) -> &'static str {
    match p {
        Priority::High => "5",
        Priority::Medium => "4",
        Priority::Low => "3",
    }
}

fn ntfy_tag(p: Priority) -> &'static str {
    match p {
        Priority::High => "rotating_light",
        Priority::Medium => "warning",
        Priority::Low => "information_source",
    }
}

/// Header values must be visible ASCII: anything else becomes `?`.
fn ascii(s: &str) -> String {
    s.chars().map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '?' }).collect()
}

/// An error and its causes on one line (`error sending request: connection refused`).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A rustls client configuration with the ring provider, the system's roots and `ca_file`.
pub(super) fn client_tls(
    key: &str,
    ca_file: Option<&Path>,
    base_dir: &Path,
) -> Result<rustls::ClientConfig, NotifyError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system root rustls cannot parse is skipped, like every TLS client does.
        let _ = roots.add(cert);
    }
    if let Some(file) = ca_file {
        let full = if file.is_absolute() { file.to_path_buf() } else { base_dir.join(file) };
        let setup = |reason: String| NotifyError::Setup { key: format!("{key}.ca_file"), reason };
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(&full)
            .map_err(|e| setup(format!("cannot read '{}': {e}", full.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| setup(format!("'{}': {e}", full.display())))?;
        if certs.is_empty() {
            return Err(setup(format!("'{}' holds no PEM certificate", full.display())));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| setup(format!("'{}': {e}", full.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| NotifyError::Setup { key: key.to_owned(), reason: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AlarmPhase, AlarmState};

    fn notification() -> Notification {
        Notification {
            event: crate::notify::test_event(AlarmPhase::Start, AlarmState::Active, Priority::High, 0),
            bed_label: "Chair 1".into(),
            ward: "demo-clinic/ketamine-suite".into(),
            reason: "escalation step 1 of 2".into(),
            target: "bay".into(),
            ack_url: Some("http://127.0.0.1:8080/ack/1-abc".into()),
        }
    }

    #[test]
    fn the_json_body_is_the_mqtt_alarm_payload_with_the_notification_beside_it() {
        let n = notification();
        let body = json_body(&n);
        let mut mqtt = crate::mqtt::payload::alarm(&n.event);
        assert_eq!(body["parameter"]["mdc_code"], mqtt["parameter"]["mdc_code"], "the parameter is expanded");
        assert_eq!(body["notification"]["ack_url"], "http://127.0.0.1:8080/ack/1-abc");
        assert_eq!(body["notification"]["reason"], "escalation step 1 of 2");
        body.as_object().unwrap().iter().filter(|(k, _)| *k != "notification").for_each(|(k, v)| {
            assert_eq!(mqtt.as_object_mut().unwrap().remove(k).as_ref(), Some(v), "{k}");
        });
        assert!(mqtt.as_object().unwrap().is_empty(), "every MQTT field is in the body: {mqtt}");
    }

    #[test]
    fn the_text_names_the_bed_the_reason_and_the_acknowledge_link() {
        let text = notification().text();
        assert!(text.starts_with("[HIGH] Chair 1: SpO2 84 < 85 (started)\n"), "{text}");
        assert!(text.contains("Sent as: escalation step 1 of 2"), "{text}");
        assert!(text.contains("Acknowledge: http://127.0.0.1:8080/ack/1-abc"), "{text}");
        assert_eq!(ascii("SpO₂ 84 < 85"), "SpO? 84 < 85");
    }
}
