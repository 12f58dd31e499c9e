//! `[notify]`: notification targets, escalation chains and acknowledge links (`docs/notifications.md`). Typed,
//! documented, validated with the key path in every error; `docs/configuration.md` is generated from these doc
//! comments too (`tests/docs_configuration.rs`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::event::Priority;

/// Notification targets (webhooks, e-mail), escalation chains per priority, and the acknowledge links their
/// messages carry. Default: no targets, nothing is sent. See `docs/notifications.md`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// The dashboard's address as the recipients' phones reach it, e.g. `"https://vigil.ward.example"`: each
    /// start or escalation notification then carries a one-time acknowledge link `<public_url>/ack/<token>`.
    /// Its host must be one the dashboard answers to (`dashboard.allowed_hosts`). Default: none (no links).
    #[serde(default)]
    pub public_url: Option<String>,
    /// How long an acknowledge link stays valid, seconds. Default 900 (15 min); between 60 and 86400.
    #[serde(default = "default_ack_link_ttl_s")]
    pub ack_link_ttl_s: u64,
    /// Where notifications go.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// Per priority, the order in which targets are notified while nobody acknowledges.
    #[serde(default)]
    pub escalation: Vec<EscalationConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            public_url: None,
            ack_link_ttl_s: default_ack_link_ttl_s(),
            targets: Vec::new(),
            escalation: Vec::new(),
        }
    }
}

fn default_ack_link_ttl_s() -> u64 {
    900
}

fn default_timeout_s() -> u64 {
    10
}

/// How a target is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// HTTP(S) POST to `url`.
    Webhook,
    /// E-mail through an SMTP server.
    Smtp,
    /// An IHE PCD ACM Alert Manager: ORU^R40 over MLLP (`docs/acm.md`).
    Acm,
}

impl TargetKind {
    /// The config name.
    pub const fn name(self) -> &'static str {
        match self {
            TargetKind::Webhook => "webhook",
            TargetKind::Smtp => "smtp",
            TargetKind::Acm => "acm",
        }
    }
}

/// The body a webhook sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// The MQTT alarm payload (`docs/schemas/`) with a `notification` object (reason, target, acknowledge link).
    #[default]
    Json,
    /// ntfy: the text as the body, title, priority, tags and an acknowledge action as headers.
    Ntfy,
    /// Slack, Mattermost and Teams-style incoming webhooks: `{"text": "..."}`.
    Slack,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS; refused when the server does not offer it.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No TLS: only for a relay on this host or a test receiver.
    None,
}

/// Which alarm events a target is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    /// The alarm started.
    Start,
    /// Its priority went up.
    Escalate,
    /// Someone acknowledged it.
    Acknowledged,
    /// It ended.
    End,
}

/// A secret read from a file or the environment at start-up; never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// One notification target. Keys marked "webhook", "smtp" or "acm" apply to that kind only; any other is an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Unique name, used by escalation steps, logs and metrics: `charge-nurse`. Letters, digits, `-` and `_`.
    pub name: String,
    /// `webhook`, `smtp` or `acm`.
    pub kind: TargetKind,
    /// The alarm priorities this target takes: any of `"low"`, `"medium"`, `"high"`. Required. For a priority
    /// with an escalation chain that names this target, it is notified when the chain reaches it, not at once.
    pub priorities: Vec<Priority>,
    /// The beds (ids) whose alarms it takes. Default: every bed.
    #[serde(default)]
    pub beds: Option<Vec<String>>,
    /// Which alarm events it is sent: any of `"start"`, `"escalate"`, `"acknowledged"`, `"end"`. Default all four.
    #[serde(default)]
    pub events: Option<Vec<NotifyOn>>,
    /// Seconds one delivery attempt may take before it counts as failed. Default 10; between 1 and 120. For
    /// `acm`, the client re-sends within the attempt (same control id) until this or `acm.give_up_after_s`
    /// passes, whichever is sooner; then the queue retries with its backoff.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// webhook: the URL to POST to, `http://` or `https://`.
    #[serde(default)]
    pub url: Option<String>,
    /// webhook: the body: `json` (default: the MQTT alarm payload), `ntfy`, or `slack` (also Mattermost and
    /// Teams-style `{"text": ...}` incoming webhooks).
    #[serde(default)]
    pub template: Option<Template>,
    /// webhook: extra HTTP headers, e.g. `{ "X-Ward" = "5" }`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// webhook: a file (relative to the config file) holding a token sent as `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// webhook: an environment variable holding that token.
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    /// webhook and smtp: a PEM file of CA certificates trusted besides the system's roots (a hospital CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// smtp: the server's host name.
    #[serde(default)]
    pub host: Option<String>,
    /// smtp: its port. Default 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(default)]
    pub port: Option<u16>,
    /// smtp: `starttls` (default), `tls`, or `none` (only for a relay on this host).
    #[serde(default)]
    pub security: Option<SmtpSecurity>,
    /// smtp: the user name to sign in with, if the server wants one (then give a password file or variable).
    #[serde(default)]
    pub username: Option<String>,
    /// smtp: a file (relative to the config file) holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// smtp: an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// smtp: the sender address, e.g. `"Vigil <vigil@ward.example>"`.
    #[serde(default)]
    pub from: Option<String>,
    /// smtp: the recipient addresses.
    #[serde(default)]
    pub to: Vec<String>,
    /// acm: the Alert Manager and how Vigil introduces itself, a table: `acm = { address = "10.0.0.5:2575",
    /// point_of_care = "ward-5" }`. Its keys are in docs/acm.md ("Settings").
    #[serde(default)]
    pub acm: Option<crate::notify::acm_client::AcmTargetConfig>,
    /// The bearer token or SMTP password, read at start-up. Not a TOML key.
    #[serde(skip)]
    pub secret: Option<Secret>,
}

/// The escalation chain of one priority.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationConfig {
    /// The alarm priority this chain is for: `"low"`, `"medium"` or `"high"`; one chain per priority.
    pub priority: Priority,
    /// The steps in order, e.g. `[{ target = "bay-nurse", wait_s = 60 }, { target = "charge-nurse", wait_s = 120 }]`.
    /// The first step's target is notified when the alarm starts; each next one when the previous step's wait has
    /// passed without an acknowledge.
    pub steps: Vec<StepConfig>,
}

/// One step of an escalation chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// The target notified at this step (a `notify.targets` name that takes the chain's priority).
    pub target: String,
    /// Seconds to wait for an acknowledge after this step before the next one (after the last step: before the
    /// chain is logged as exhausted). Between 1 and 86400.
    pub wait_s: u64,
}

type Invalid = (String, String);

impl NotifyConfig {
    /// Checks the section against the configured bed ids; every error names its key path.
    pub fn validate(&self, beds: &[&str]) -> Result<(), Invalid> {
        if let Some(url) = &self.public_url {
            http_url("notify.public_url", url)?;
        }
        if !(60..=86_400).contains(&self.ack_link_ttl_s) {
            return Err((
                "notify.ack_link_ttl_s".into(),
                format!("{} is not between 60 and 86400", self.ack_link_ttl_s),
            ));
        }
        let mut names = HashSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let at = format!("notify.targets[{i}]");
            if t.name.is_empty()
                || t.name.len() > 64
                || !t.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err((
                    format!("{at}.name"),
                    format!("'{}' must be 1 to 64 letters, digits, '-' or '_'", t.name),
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err((format!("{at}.name"), format!("'{}' is used by another target", t.name)));
            }
            t.validate(&at, beds)?;
        }
        let mut chains = HashSet::new();
        for (i, chain) in self.escalation.iter().enumerate() {
            let at = format!("notify.escalation[{i}]");
            if !chains.insert(chain.priority) {
                return Err((format!("{at}.priority"), "another chain is for this priority".into()));
            }
            if chain.steps.is_empty() {
                return Err((format!("{at}.steps"), "needs at least one step".into()));
            }
            let mut seen = HashSet::new();
            for (s, step) in chain.steps.iter().enumerate() {
                let at = format!("{at}.steps[{s}]");
                let Some(target) = self.targets.iter().find(|t| t.name == step.target) else {
                    return Err((format!("{at}.target"), format!("no target is named '{}'", step.target)));
                };
                if !target.priorities.contains(&chain.priority) {
                    return Err((
                        format!("{at}.target"),
                        format!("'{}' does not take this chain's priority (add it to its priorities)", step.target),
                    ));
                }
                if !seen.insert(step.target.as_str()) {
                    return Err((format!("{at}.target"), format!("'{}' is already an earlier step", step.target)));
                }
                if !(1..=86_400).contains(&step.wait_s) {
                    return Err((format!("{at}.wait_s"), format!("{} is not between 1 and 86400", step.wait_s)));
                }
            }
        }
        Ok(())
    }

    /// Reads each target's bearer token or password file or variable into [`TargetConfig::secret`].
    pub fn resolve_secrets(&mut self, base_dir: &Path) -> Result<(), Invalid> {
        for (i, t) in self.targets.iter_mut().enumerate() {
            let (file_key, env_key, file, env) = match t.kind {
                TargetKind::Webhook => {
                    ("bearer_token_file", "bearer_token_env", &t.bearer_token_file, &t.bearer_token_env)
                }
                TargetKind::Smtp => ("password_file", "password_env", &t.password_file, &t.password_env),
                TargetKind::Acm => continue,
            };
            let at = format!("notify.targets[{i}]");
            if file.is_some() && env.is_some() {
                return Err((format!("{at}.{file_key}"), format!("give only one of {file_key} and {env_key}")));
            }
            if let Some(file) = file {
                let full = if file.is_absolute() { file.clone() } else { base_dir.join(file) };
                let text = std::fs::read_to_string(&full)
                    .map_err(|e| (format!("{at}.{file_key}"), format!("cannot read '{}': {e}", full.display())))?;
                let secret = text.trim_end_matches(['\r', '\n']).to_owned();
                if secret.is_empty() {
                    return Err((format!("{at}.{file_key}"), format!("'{}' is empty", full.display())));
                }
                t.secret = Some(Secret(secret));
            } else if let Some(var) = env {
                let secret = std::env::var(var)
                    .map_err(|_| (format!("{at}.{env_key}"), format!("the environment variable {var} is not set")))?;
                t.secret = Some(Secret(secret));
            }
            if t.kind == TargetKind::Smtp && t.username.is_some() != t.secret.is_some() {
                return Err((
                    format!("{at}.username"),
                    "give both username and a password_file or password_env, or neither".into(),
                ));
            }
        }
        Ok(())
    }
}

impl TargetConfig {
    /// The events this target is sent.
    pub fn events(&self) -> Vec<NotifyOn> {
        self.events
            .clone()
            .unwrap_or_else(|| vec![NotifyOn::Start, NotifyOn::Escalate, NotifyOn::Acknowledged, NotifyOn::End])
    }

    fn validate(&self, at: &str, beds: &[&str]) -> Result<(), Invalid> {
        let kind = self.kind.name();
        let not_for = |key: &str, present: bool| -> Result<(), Invalid> {
            if present {
                Err((format!("{at}.{key}"), format!("does not apply to kind = \"{kind}\"")))
            } else {
                Ok(())
            }
        };
        if self.priorities.is_empty() {
            return Err((
                format!("{at}.priorities"),
                "name at least one priority: \"low\", \"medium\", \"high\"".into(),
            ));
        }
        if let Some(list) = &self.beds {
            if list.is_empty() {
                return Err((format!("{at}.beds"), "is empty: leave it out for every bed".into()));
            }
            for (b, bed) in list.iter().enumerate() {
                if !beds.contains(&bed.as_str()) {
                    return Err((format!("{at}.beds[{b}]"), format!("no bed has the id '{bed}'")));
                }
            }
        }
        if self.events.as_ref().is_some_and(Vec::is_empty) {
            return Err((format!("{at}.events"), "is empty: leave it out for every event".into()));
        }
        if !(1..=120).contains(&self.timeout_s) {
            return Err((format!("{at}.timeout_s"), format!("{} is not between 1 and 120", self.timeout_s)));
        }
        let webhook = [
            ("url", self.url.is_some()),
            ("template", self.template.is_some()),
            ("headers", !self.headers.is_empty()),
            ("bearer_token_file", self.bearer_token_file.is_some()),
            ("bearer_token_env", self.bearer_token_env.is_some()),
        ];
        let smtp = [
            ("host", self.host.is_some()),
            ("port", self.port.is_some()),
            ("security", self.security.is_some()),
            ("username", self.username.is_some()),
            ("password_file", self.password_file.is_some()),
            ("password_env", self.password_env.is_some()),
            ("from", self.from.is_some()),
            ("to", !self.to.is_empty()),
        ];
        match self.kind {
            TargetKind::Webhook | TargetKind::Smtp => not_for("acm", self.acm.is_some())?,
            TargetKind::Acm => {
                for (key, present) in webhook.into_iter().chain(smtp).chain([("ca_file", self.ca_file.is_some())]) {
                    not_for(key, present)?;
                }
                let Some(acm) = &self.acm else {
                    return Err((
                        format!("{at}.acm"),
                        "an acm target needs its table, e.g. acm = { address = \"10.0.0.5:2575\" }".into(),
                    ));
                };
                return acm.validate(&format!("{at}.acm")).map_err(|e| match e {
                    crate::notify::acm_client::AcmError::Config { key, reason } => (key, reason),
                    other => (format!("{at}.acm"), other.to_string()),
                });
            }
        }
        match self.kind {
            TargetKind::Acm => {}
            TargetKind::Webhook => {
                for (key, present) in smtp {
                    not_for(key, present)?;
                }
                let Some(url) = &self.url else {
                    return Err((format!("{at}.url"), "a webhook needs a url".into()));
                };
                http_url(&format!("{at}.url"), url)?;
                for (name, value) in &self.headers {
                    let bad_name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err();
                    if bad_name || reqwest::header::HeaderValue::from_str(value).is_err() {
                        return Err((format!("{at}.headers.{name}"), "is not a valid HTTP header".into()));
                    }
                }
            }
            TargetKind::Smtp => {
                for (key, present) in webhook {
                    not_for(key, present)?;
                }
                if self.host.as_deref().is_none_or(str::is_empty) {
                    return Err((format!("{at}.host"), "an smtp target needs the server's host".into()));
                }
                let Some(from) = &self.from else {
                    return Err((format!("{at}.from"), "an smtp target needs a sender address".into()));
                };
                from.parse::<lettre::message::Mailbox>()
                    .map_err(|e| (format!("{at}.from"), format!("'{from}' is not an e-mail address: {e}")))?;
                if self.to.is_empty() {
                    return Err((format!("{at}.to"), "an smtp target needs at least one recipient".into()));
                }
                for (r, to) in self.to.iter().enumerate() {
                    to.parse::<lettre::message::Mailbox>()
                        .map_err(|e| (format!("{at}.to[{r}]"), format!("'{to}' is not an e-mail address: {e}")))?;
                }
            }
        }
        Ok(())
    }
}

fn http_url(at: &str, value: &str) -> Result<reqwest::Url, Invalid> {
    let url = reqwest::Url::parse(value).map_err(|e| (at.to_owned(), format!("'{value}' is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err((at.to_owned(), format!("'{value}' is not an http:// or https:// URL")));
    }
    Ok(url)
}
