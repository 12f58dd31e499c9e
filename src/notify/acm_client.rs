//! The IHE PCD ACM Alert Reporter's link to one Alert Manager: MLLP over TCP (TLS optional), one message in
//! flight at a time, each answered by an ACK^R40 within `ack_timeout_s`; a heartbeat every
//! `heartbeat_interval_s`; ORA^R41 alert status from the manager on the same connection, answered with ACK^R41
//! and offered to subscribers ([`AcmClient::statuses`]).
//!
//! [`AcmClient::send_alert`] re-sends an alarm (same control id, so the manager can drop a duplicate) after a
//! refused or failed connection, a lost link or a missing ACK, with a jittered backoff, until the manager answers
//! or `give_up_after_s` has passed (then [`AcmError::Undelivered`]: the caller's durable queue keeps it). An
//! `AE`/`AR` answer is final for that message and returned as [`AcmOutcome::Rejected`] with the manager's reason.
//! A link that fails is visible: [`AcmClient::link`] (connected, last error, heartbeats missed, malformed
//! replies) and a warning in the log on every change of state.
//!
//! Messages are built by [`super::acm`] (pure); this module is the I/O.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_rustls::rustls;
use tokio_util::codec::Framed;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::acm::{self, AckOutcome, AlertStatus, HeartbeatPhase, Identity, ManagerMessage};
use crate::event::AlarmEvent;
use crate::ingest::protocol::mllp::MllpCodec;
use crate::tls::TlsError;
use crate::vitals::Timestamp;

/// The largest message taken from a manager: ACKs and ORA^R41 are a few hundred bytes.
const MAX_REPLY_BYTES: usize = 64 * 1024;
/// How many alert statuses are remembered for [`AcmReply::acknowledged`] (oldest forgotten first).
const STATUSES_KEPT: usize = 4096;
/// First and largest pause between delivery attempts.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// One Alert Manager target (`kind = "acm"`): where it is and how Vigil introduces itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmTargetConfig {
    /// The Alert Manager's MLLP listener, `host:port`.
    pub address: String,
    /// TLS to the manager. Default: none (plain MLLP; keep it on a closed network).
    #[serde(default)]
    pub tls: Option<AcmTlsConfig>,
    /// MSH-3, Vigil's application name. Default `VIGIL`.
    #[serde(default = "default_sending_application")]
    pub sending_application: String,
    /// MSH-4 and PV1-3.4, the facility (the site). Default empty.
    #[serde(default)]
    pub sending_facility: String,
    /// MSH-5, the manager's application name, if it wants one. Default empty.
    #[serde(default)]
    pub receiving_application: String,
    /// MSH-6, the manager's facility, if it wants one. Default empty.
    #[serde(default)]
    pub receiving_facility: String,
    /// PV1-3.1, the point of care (the ward) the manager routes on; PV1-3.3 is the bed id. Default empty.
    #[serde(default)]
    pub point_of_care: String,
    /// Seconds between heartbeats (`MDC_EVT_ACTIVE`), so the manager sees a lost reporter. 1 to 300; default 5
    /// (the public ACM watchdog design: docs/acm.md).
    #[serde(default = "default_heartbeat_interval_s")]
    pub heartbeat_interval_s: u64,
    /// Seconds to wait for the manager's ACK of a message before the link is taken as lost and the message is
    /// sent again. 1 to 60; default 5.
    #[serde(default = "default_ack_timeout_s")]
    pub ack_timeout_s: u64,
    /// Seconds to wait for a connection (TCP and TLS handshake). 1 to 60; default 5.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: u64,
    /// Seconds one alarm event is re-sent for before `send_alert` gives up and returns the failure (the caller's
    /// queue keeps the event). 1 to 86400; default 300.
    #[serde(default = "default_give_up_after_s")]
    pub give_up_after_s: u64,
}

/// TLS settings of an ACM target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmTlsConfig {
    /// PEM file of the CA that signed the manager's certificate.
    pub ca_file: PathBuf,
    /// The name the manager's certificate must carry. Default: the host part of `address`.
    #[serde(default)]
    pub server_name: Option<String>,
}

fn default_sending_application() -> String {
    "VIGIL".into()
}
fn default_heartbeat_interval_s() -> u64 {
    5
}
fn default_ack_timeout_s() -> u64 {
    5
}
fn default_connect_timeout_s() -> u64 {
    5
}
fn default_give_up_after_s() -> u64 {
    300
}

impl AcmTargetConfig {
    /// A target at `address` with every other setting at its default.
    pub fn new(address: impl Into<String>) -> AcmTargetConfig {
        AcmTargetConfig {
            address: address.into(),
            tls: None,
            sending_application: default_sending_application(),
            sending_facility: String::new(),
            receiving_application: String::new(),
            receiving_facility: String::new(),
            point_of_care: String::new(),
            heartbeat_interval_s: default_heartbeat_interval_s(),
            ack_timeout_s: default_ack_timeout_s(),
            connect_timeout_s: default_connect_timeout_s(),
            give_up_after_s: default_give_up_after_s(),
        }
    }

    /// Checks every field; `at` is the key path of this target (`notify.targets[2]`), which every error names.
    pub fn validate(&self, at: &str) -> Result<(), AcmError> {
        let bad = |key: &str, reason: String| Err(AcmError::Config { key: format!("{at}.{key}"), reason });
        match self.address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => return bad("address", format!("'{}' is not host:port", self.address)),
        }
        for (key, value) in [
            ("sending_application", &self.sending_application),
            ("sending_facility", &self.sending_facility),
            ("receiving_application", &self.receiving_application),
            ("receiving_facility", &self.receiving_facility),
            ("point_of_care", &self.point_of_care),
        ] {
            if let Some(c) = value.chars().find(|c| "|^~\\&".contains(*c) || c.is_control()) {
                return bad(key, format!("'{value}' contains {c:?}, an HL7 delimiter or control character"));
            }
        }
        if self.sending_application.is_empty() {
            return bad("sending_application", "must not be empty (it is MSH-3)".into());
        }
        for (key, value, max) in [
            ("heartbeat_interval_s", self.heartbeat_interval_s, 300),
            ("ack_timeout_s", self.ack_timeout_s, 60),
            ("connect_timeout_s", self.connect_timeout_s, 60),
            ("give_up_after_s", self.give_up_after_s, 86_400),
        ] {
            if value == 0 || value > max {
                return bad(key, format!("{value} is outside 1 to {max}"));
            }
        }
        if let Some(tls) = &self.tls {
            if let Some(name) = &tls.server_name {
                if rustls::pki_types::ServerName::try_from(name.clone()).is_err() {
                    return bad("tls.server_name", format!("'{name}' is not a DNS name or IP address"));
                }
            }
        }
        Ok(())
    }

    fn identity(&self) -> Identity {
        Identity {
            sending_application: self.sending_application.clone(),
            sending_facility: self.sending_facility.clone(),
            receiving_application: self.receiving_application.clone(),
            receiving_facility: self.receiving_facility.clone(),
            point_of_care: self.point_of_care.clone(),
        }
    }

    fn host(&self) -> &str {
        let host = self.address.rsplit_once(':').map_or(self.address.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// What can go wrong with an ACM target.
#[derive(Debug, thiserror::Error)]
pub enum AcmError {
    /// A setting is unusable.
    #[error("{key}: {reason}")]
    Config {
        /// Key path.
        key: String,
        /// Why.
        reason: String,
    },
    /// The TLS files could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// No answer from the manager within `give_up_after_s`.
    #[error("alarm not delivered to the Alert Manager at {address} after {attempts} attempts: {last}")]
    Undelivered {
        /// The manager.
        address: String,
        /// How many times it was sent (or a connection tried).
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The client was shut down.
    #[error("the ACM client is shut down")]
    Closed,
}

/// How the manager answered an alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcmOutcome {
    /// `AA`/`CA`: the manager took it.
    Accepted {
        /// MSA-1 as sent.
        code: String,
    },
    /// `AE`/`AR` (`CE`/`CR`): the manager refused it; re-sending the same message will not help.
    Rejected {
        /// MSA-1 as sent.
        code: String,
        /// The manager's reason (MSA-3 or ERR-8), if it gave one.
        reason: Option<String>,
    },
}

/// The result of [`AcmClient::send_alert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmReply {
    /// Taken or refused.
    pub outcome: AcmOutcome,
    /// How many times it was sent (1 when the first attempt was answered).
    pub attempts: u32,
    /// The latest ORA^R41 in which the manager said a person took this alarm (accepted, read), if one has
    /// arrived by the time of the answer. Later ones arrive on [`AcmClient::statuses`].
    pub acknowledged: Option<AlertStatus>,
}

/// The link's state, for a status page, a metric or a technical alarm.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AcmLinkStatus {
    /// Connected and the last exchange answered.
    pub connected: bool,
    /// When the manager last answered anything.
    pub last_answer: Option<Timestamp>,
    /// The last failure (connect, TLS, timeout, lost link).
    pub last_error: Option<String>,
    /// Heartbeats not answered in time, since start.
    pub heartbeats_missed: u64,
    /// Messages from the manager that could not be read (counted, logged rate-limited, skipped).
    pub malformed: u64,
    /// Alarm messages the manager accepted, since start.
    pub alerts_accepted: u64,
}

enum Payload {
    Alert { message: String, control_id: String },
    Heartbeat,
}

struct Request {
    payload: Payload,
    reply: oneshot::Sender<Result<acm::Ack, String>>,
}

/// The latest statuses per alert, bounded.
#[derive(Default)]
struct Statuses {
    by_alert: HashMap<String, AlertStatus>,
    order: VecDeque<String>,
}

impl Statuses {
    fn insert(&mut self, s: AlertStatus) {
        if !self.by_alert.contains_key(&s.alert_id) {
            self.order.push_back(s.alert_id.clone());
            if self.order.len() > STATUSES_KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.by_alert.remove(&old);
                }
            }
        }
        self.by_alert.insert(s.alert_id.clone(), s);
    }
}

struct Shared {
    config: AcmTargetConfig,
    identity: Identity,
    statuses: Mutex<Statuses>,
    status_tx: broadcast::Sender<AlertStatus>,
    link: watch::Sender<AcmLinkStatus>,
    control_prefix: String,
    next_control: AtomicU64,
}

impl Shared {
    fn control_id(&self) -> String {
        format!("{}{}", self.control_prefix, self.next_control.fetch_add(1, Ordering::Relaxed))
    }

    fn acknowledged(&self, alert_id: &str) -> Option<AlertStatus> {
        let statuses = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        statuses.by_alert.get(alert_id).filter(|s| s.is_acknowledgement()).cloned()
    }

    fn set_link(&self, f: impl FnOnce(&mut AcmLinkStatus)) {
        self.link.send_modify(f);
    }
}

/// A client of one Alert Manager. Cheap to share behind an `Arc`; dropping it (or [`AcmClient::shutdown`]) stops
/// its tasks.
pub struct AcmClient {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    cancel: CancellationToken,
    link_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    _guard: DropGuard,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Conn = Framed<Box<dyn Io>, MllpCodec>;

impl AcmClient {
    /// Validates `config` (key paths under `acm`), reads its TLS CA file on a blocking thread, and starts the
    /// link and heartbeat tasks. The first connection is made by the first heartbeat or alarm.
    pub async fn new(config: AcmTargetConfig) -> Result<AcmClient, AcmError> {
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || AcmClient::start(config, "acm", std::path::Path::new(""), &handle))
            .await
            .map_err(|e| AcmError::Config { key: "acm".into(), reason: e.to_string() })?
    }

    /// [`AcmClient::new`] for a caller on a blocking thread: validates `config` (key paths under `key`, e.g.
    /// `notify.targets[2].acm`), reads its TLS CA file (relative to `base_dir`) and starts the link and heartbeat
    /// tasks on `runtime`.
    pub fn start(
        config: AcmTargetConfig,
        key: &str,
        base_dir: &std::path::Path,
        runtime: &tokio::runtime::Handle,
    ) -> Result<AcmClient, AcmError> {
        config.validate(key)?;
        let tls = match &config.tls {
            None => None,
            Some(t) => {
                let ca = if t.ca_file.is_absolute() { t.ca_file.clone() } else { base_dir.join(&t.ca_file) };
                let loaded = crate::tls::load_client_config(&format!("{key}.tls.ca_file"), &ca)?;
                let name = t.server_name.clone().unwrap_or_else(|| config.host().to_owned());
                let name = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|_| AcmError::Config {
                    key: format!("{key}.tls.server_name"),
                    reason: format!("'{name}' is not a DNS name or IP address"),
                })?;
                Some((tokio_rustls::TlsConnector::from(loaded), name))
            }
        };
        let (status_tx, _) = broadcast::channel(64);
        let (link, _) = watch::channel(AcmLinkStatus::default());
        let shared = Arc::new(Shared {
            identity: config.identity(),
            config,
            statuses: Mutex::new(Statuses::default()),
            status_tx,
            link,
            control_prefix: format!("V{:x}-", Utc::now().timestamp_millis()),
            next_control: AtomicU64::new(1),
        });
        let cancel = CancellationToken::new();
        let (requests, rx) = mpsc::channel(16);
        let link_task = runtime.spawn(run_link(shared.clone(), tls, rx, cancel.clone()));
        runtime.spawn(run_heartbeat(shared.clone(), requests.clone(), cancel.clone()));
        Ok(AcmClient {
            shared,
            requests,
            _guard: cancel.clone().drop_guard(),
            cancel,
            link_task: Mutex::new(Some(link_task)),
        })
    }

    /// The manager's address, for messages.
    pub fn address(&self) -> &str {
        &self.shared.config.address
    }

    /// Sends one alarm event as an ORU^R40 and waits for the manager's answer, re-sending (module docs) until it
    /// answers or `give_up_after_s` passes.
    pub async fn send_alert(&self, event: &AlarmEvent) -> Result<AcmReply, AcmError> {
        let control_id = self.shared.control_id();
        let message = acm::report_alert(event, &self.shared.identity, &control_id, Utc::now());
        let deadline = Instant::now() + Duration::from_secs(self.shared.config.give_up_after_s);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let payload = Payload::Alert { message: message.clone(), control_id: control_id.clone() };
            let last = match self.exchange(payload).await? {
                Ok(ack) => {
                    let outcome = match ack.outcome {
                        AckOutcome::Accepted => {
                            self.shared.set_link(|l| l.alerts_accepted += 1);
                            AcmOutcome::Accepted { code: ack.code }
                        }
                        AckOutcome::Error | AckOutcome::Rejected => {
                            tracing::warn!(
                                alarm_id = %event.alarm_id, code = %ack.code, reason = ?ack.text,
                                "the Alert Manager refused an alarm"
                            );
                            AcmOutcome::Rejected { code: ack.code, reason: ack.text }
                        }
                    };
                    let acknowledged = self.shared.acknowledged(&event.alarm_id);
                    return Ok(AcmReply { outcome, attempts, acknowledged });
                }
                Err(e) => e,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(AcmError::Undelivered { address: self.shared.config.address.clone(), attempts, last });
            }
            tracing::debug!(alarm_id = %event.alarm_id, attempts, error = %last, "re-sending an alarm to the Alert Manager");
            tokio::select! {
                _ = tokio::time::sleep(retry_delay(attempts).min(deadline - now)) => {}
                _ = self.cancel.cancelled() => return Err(AcmError::Closed),
            }
        }
    }

    async fn exchange(&self, payload: Payload) -> Result<Result<acm::Ack, String>, AcmError> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request { payload, reply }).await.map_err(|_| AcmError::Closed)?;
        answer.await.map_err(|_| AcmError::Closed)
    }

    /// ORA^R41 alert statuses as they arrive (delivered, accepted by whom, …).
    pub fn statuses(&self) -> broadcast::Receiver<AlertStatus> {
        self.shared.status_tx.subscribe()
    }

    /// The latest status of an alert in which a person took it, if one arrived.
    pub fn acknowledged(&self, alarm_id: &str) -> Option<AlertStatus> {
        self.shared.acknowledged(alarm_id)
    }

    /// The link's state, updated on every change.
    pub fn link(&self) -> watch::Receiver<AcmLinkStatus> {
        self.shared.link.subscribe()
    }

    /// Stops the tasks; while connected, first sends the last heartbeat (phase `end`, state `inactive`) so the
    /// manager knows the reporter left on purpose.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let task = self.link_task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Attempt `n`'s pause: doubling from [`RETRY_MIN`] to [`RETRY_MAX`], the upper half random.
fn retry_delay(attempt: u32) -> Duration {
    let ceiling = RETRY_MIN.saturating_mul(1 << attempt.saturating_sub(1).min(6)).min(RETRY_MAX);
    ceiling / 2 + rand::rng().random_range(Duration::ZERO..=ceiling / 2)
}

async fn run_heartbeat(shared: Arc<Shared>, requests: mpsc::Sender<Request>, cancel: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(shared.config.heartbeat_interval_s));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let (reply, answer) = oneshot::channel();
        if requests.send(Request { payload: Payload::Heartbeat, reply }).await.is_err() {
            return;
        }
        match answer.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                shared.set_link(|l| l.heartbeats_missed += 1);
                tracing::debug!(error = %e, "ACM heartbeat not answered");
            }
            Err(_) => return,
        }
    }
}

async fn connect(
    shared: &Shared,
    tls: &Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
) -> Result<Conn, String> {
    let address = &shared.config.address;
    let within = Duration::from_secs(shared.config.connect_timeout_s);
    let attempt = async {
        let tcp = TcpStream::connect(address).await.map_err(|e| format!("cannot connect to {address}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match tls {
            None => Box::new(tcp),
            Some((connector, name)) => {
                Box::new(connector.connect(name.clone(), tcp).await.map_err(|e| format!("TLS with {address}: {e}"))?)
            }
        };
        Ok::<_, String>(Framed::new(io, MllpCodec::new(MAX_REPLY_BYTES)))
    };
    tokio::time::timeout(within, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no connection to {address} within {} s", within.as_secs())))
}

/// What the link task does with one message from the manager while it waits (or idles).
enum Incoming {
    Ack(acm::Ack),
    Other,
}

struct Link {
    shared: Arc<Shared>,
    conn: Option<Conn>,
    heartbeats_on_conn: u64,
    logged_malformed: u64,
}

impl Link {
    fn lost(&mut self, error: String) {
        self.conn = None;
        let was = self.shared.link.borrow().connected;
        let same = self.shared.link.borrow().last_error.as_deref() == Some(error.as_str());
        if was || !same {
            tracing::warn!(address = %self.shared.config.address, %error, "ACM link to the Alert Manager is down");
        }
        self.shared.set_link(|l| {
            l.connected = false;
            l.last_error = Some(error);
        });
    }

    /// Reads one framed item: an ACK is returned, an ORA^R41 is answered and published, junk is counted.
    async fn take(&mut self, item: Result<bytes::Bytes, crate::ingest::protocol::DecodeError>) -> Incoming {
        let parsed = match item {
            Ok(bytes) => acm::parse_manager_message(&String::from_utf8_lossy(&bytes)).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        self.shared.set_link(|l| l.last_answer = Some(Utc::now()));
        match parsed {
            Ok(ManagerMessage::Ack(ack)) => Incoming::Ack(ack),
            Ok(ManagerMessage::Status(status)) => {
                let answer = acm::ack_status(&self.shared.identity, &status, &self.shared.control_id(), Utc::now());
                if let Some(conn) = self.conn.as_mut() {
                    if let Err(e) = conn.send(answer.as_bytes()).await {
                        self.lost(format!("cannot answer an ORA^R41: {e}"));
                    }
                }
                tracing::info!(
                    alert_id = %status.alert_id, status = %status.status, by = ?status.by,
                    "the Alert Manager reported an alert's status"
                );
                self.shared.statuses.lock().unwrap_or_else(|e| e.into_inner()).insert(status.clone());
                let _ = self.shared.status_tx.send(status);
                Incoming::Other
            }
            Err(reason) => {
                self.shared.set_link(|l| l.malformed += 1);
                // Rate-limited: the first, then every hundredth.
                if self.logged_malformed % 100 == 0 {
                    tracing::warn!(%reason, count = self.logged_malformed + 1, "unreadable message from the Alert Manager skipped");
                }
                self.logged_malformed += 1;
                Incoming::Other
            }
        }
    }

    /// Sends one message and waits for the ACK carrying its control id.
    async fn exchange(&mut self, message: &str, control_id: &str) -> Result<acm::Ack, String> {
        let timeout = Duration::from_secs(self.shared.config.ack_timeout_s);
        let conn = self.conn.as_mut().ok_or("not connected")?;
        if let Err(e) = conn.send(message.as_bytes()).await {
            let error = format!("cannot send to {}: {e}", self.shared.config.address);
            self.lost(error.clone());
            return Err(error);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let Some(conn) = self.conn.as_mut() else { return Err("connection lost".into()) };
            let next = match tokio::time::timeout_at(deadline, conn.next()).await {
                Err(_) => {
                    let error = format!("no ACK from {} within {} s", self.shared.config.address, timeout.as_secs());
                    self.lost(error.clone());
                    return Err(error);
                }
                Ok(None) => Err("the Alert Manager closed the connection".to_owned()),
                Ok(Some(Err(e))) => Err(format!("connection to the Alert Manager failed: {e}")),
                Ok(Some(Ok(item))) => Ok(item),
            };
            match next {
                Err(error) => {
                    self.lost(error.clone());
                    return Err(error);
                }
                Ok(item) => match self.take(item).await {
                    Incoming::Ack(ack) if ack.control_id == control_id => {
                        if !self.shared.link.borrow().connected {
                            tracing::info!(address = %self.shared.config.address, "ACM link to the Alert Manager is up");
                        }
                        self.shared.set_link(|l| {
                            l.connected = true;
                            l.last_error = None;
                        });
                        return Ok(ack);
                    }
                    Incoming::Ack(stale) => {
                        tracing::debug!(control_id = %stale.control_id, "ACK for an earlier message ignored");
                    }
                    Incoming::Other => {}
                },
            }
        }
    }

    async fn serve(
        &mut self,
        req: Request,
        tls: &Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    ) {
        if self.conn.is_none() {
            match connect(&self.shared, tls).await {
                Ok(c) => {
                    self.conn = Some(c);
                    self.heartbeats_on_conn = 0;
                }
                Err(e) => {
                    self.lost(e.clone());
                    let _ = req.reply.send(Err(e));
                    return;
                }
            }
        }
        let result = match req.payload {
            Payload::Alert { message, control_id } => self.exchange(&message, &control_id).await,
            Payload::Heartbeat => {
                let phase = if self.heartbeats_on_conn == 0 { HeartbeatPhase::Start } else { HeartbeatPhase::Update };
                self.heartbeats_on_conn += 1;
                self.heartbeat(phase).await
            }
        };
        let _ = req.reply.send(result);
    }

    async fn heartbeat(&mut self, phase: HeartbeatPhase) -> Result<acm::Ack, String> {
        let control_id = self.shared.control_id();
        let msg =
            acm::heartbeat(&self.shared.identity, phase, self.shared.config.ack_timeout_s, &control_id, Utc::now());
        self.exchange(&msg, &control_id).await
    }
}

async fn run_link(
    shared: Arc<Shared>,
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    mut requests: mpsc::Receiver<Request>,
    cancel: CancellationToken,
) {
    let mut link = Link { shared, conn: None, heartbeats_on_conn: 0, logged_malformed: 0 };
    loop {
        let idle = async {
            match link.conn.as_mut() {
                Some(c) => c.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            req = requests.recv() => match req {
                Some(req) => link.serve(req, &tls).await,
                None => break,
            },
            item = idle => match item {
                None => link.lost("the Alert Manager closed the connection".into()),
                Some(Err(e)) => link.lost(format!("connection to the Alert Manager failed: {e}")),
                Some(Ok(item)) => {
                    if let Incoming::Ack(stale) = link.take(item).await {
                        tracing::debug!(control_id = %stale.control_id, "unexpected ACK ignored");
                    }
                }
            },
        }
    }
    if link.conn.is_some() {
        if let Err(e) = link.heartbeat(HeartbeatPhase::End).await {
            tracing::debug!(error = %e, "the last ACM heartbeat was not answered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_target_names_the_key_path_and_the_reason() {
        let ok = AcmTargetConfig::new("127.0.0.1:2576");
        assert!(ok.validate("notify.targets[1]").is_ok());
        let cases: Vec<(AcmTargetConfig, &str)> = vec![
            (AcmTargetConfig::new("localhost"), "notify.targets[1].address"),
            (AcmTargetConfig::new("h:0"), "notify.targets[1].address"),
            (AcmTargetConfig { point_of_care: "ward|3".into(), ..ok.clone() }, "notify.targets[1].point_of_care"),
            (
                AcmTargetConfig { sending_application: String::new(), ..ok.clone() },
                "notify.targets[1].sending_application",
            ),
            (AcmTargetConfig { heartbeat_interval_s: 0, ..ok.clone() }, "notify.targets[1].heartbeat_interval_s"),
            (AcmTargetConfig { ack_timeout_s: 61, ..ok.clone() }, "notify.targets[1].ack_timeout_s"),
            (
                AcmTargetConfig {
                    tls: Some(AcmTlsConfig { ca_file: "ca.pem".into(), server_name: Some("not a name".into()) }),
                    ..ok.clone()
                },
                "notify.targets[1].tls.server_name",
            ),
        ];
        for (cfg, key) in cases {
            match cfg.validate("notify.targets[1]") {
                Err(AcmError::Config { key: k, reason }) => {
                    assert_eq!(k, key);
                    assert!(!reason.is_empty());
                }
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_target_reads_from_toml_with_documented_defaults_and_refuses_unknown_keys() {
        let cfg: AcmTargetConfig =
            toml::from_str("address = \"10.0.0.5:2575\"\nsending_facility = \"clinic\"").unwrap();
        assert_eq!(cfg, AcmTargetConfig { sending_facility: "clinic".into(), ..AcmTargetConfig::new("10.0.0.5:2575") });
        assert_eq!((cfg.heartbeat_interval_s, cfg.ack_timeout_s, cfg.sending_application.as_str()), (5, 5, "VIGIL"));
        assert!(toml::from_str::<AcmTargetConfig>("address = \"h:1\"\nheartbeat = 3").is_err());
    }

    #[test]
    fn retry_delays_grow_to_five_seconds_and_are_jittered() {
        assert!(retry_delay(1) <= RETRY_MIN && retry_delay(1) >= RETRY_MIN / 2);
        for n in 8..12 {
            let d = retry_delay(n);
            assert!(d >= RETRY_MAX / 2 && d <= RETRY_MAX, "{d:?}");
        }
    }

    #[test]
    fn remembered_statuses_are_bounded_and_keep_the_latest_per_alert() {
        let mut s = Statuses::default();
        let status = |id: usize, st: &str| AlertStatus {
            control_id: "c".into(),
            alert_id: format!("a{id}"),
            status: st.into(),
            by: None,
            at: None,
        };
        s.insert(status(0, "Delivered"));
        s.insert(status(0, "Accepted"));
        assert_eq!(s.by_alert["a0"].status, "Accepted");
        for i in 1..=STATUSES_KEPT {
            s.insert(status(i, "Accepted"));
        }
        assert_eq!(s.by_alert.len(), STATUSES_KEPT);
        assert!(!s.by_alert.contains_key("a0"));
    }
}
