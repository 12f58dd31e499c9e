//! The integrator API over MQTT: topics, payloads, the publisher that drains the store's outbox, command intake
//! with authorisation, the embedded broker, and TLS for external brokers. The API is documented in
//! `docs/mqtt-api.md`, `docs/asyncapi.yaml` and `docs/schemas/`.
//!
//! Guarantee: every alarm and session event the store accepted reaches the broker at least once (QoS 1,
//! replayed from the outbox after a reconnect or a restart until the broker acknowledges it); consumers remove
//! the rare duplicate by (`alarm_id`, `seq`) and detect loss by gaps in `bed_seq`.

pub mod acl;
pub mod auth;
mod backlog;
pub mod broker;
pub mod command;
pub mod discovery;
pub mod filter;
pub mod gate;
mod intake5;
pub mod local_link;
pub mod payload;
mod publisher;
pub mod topics;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::hub::Hub;
use crate::store::{Store, StoreError};
use crate::vitals::Timestamp;

pub use broker::Broker;
pub use topics::Topics;

/// What can go wrong starting MQTT. Every message names the setting to change.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The embedded broker's port is taken.
    #[error("mqtt.port: {addr} is already in use (set mqtt.port or mqtt.mode = \"external\")")]
    PortInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// A setting that cannot work.
    #[error("{key}: {reason}")]
    Config {
        /// The key path, e.g. `mqtt.host`.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// The store failed while starting.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The state of Vigil's connection to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// MQTT is disabled in the configuration.
    Disabled,
    /// Connecting (first time or after a loss).
    Connecting,
    /// Connected; the birth status is published.
    Connected,
    /// The broker refused Vigil's credentials or client id; retrying slowly.
    Refused,
    /// Shut down.
    Stopped,
}

/// What the dashboard or logs can show about the broker link.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LinkStatus {
    /// State.
    pub state: LinkState,
    /// `host:port` of the broker in use or being tried.
    pub broker: String,
    /// Since when.
    pub since: Timestamp,
    /// The last connection error, naming the setting to check.
    pub last_error: Option<String>,
    /// Birth sequence of the current (or last) connection.
    pub birth_seq: u64,
    /// What the publisher had to shed or set aside since start.
    pub delivery: DeliveryCounters,
}

/// What the publisher shed or set aside since start, shown in `/api/status` (`mqtt.delivery`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryCounters {
    /// Outbox events the broker can never take (e.g. larger than its packet limit), set aside so they do not
    /// block the events behind them. They stay in the store's event log.
    pub quarantined: u64,
    /// Vitals messages (QoS 0) not sent: replaced by a newer one of the same bed while waiting for room, missed
    /// while the publisher lagged behind the hub, or waiting when the broker went away. Never alarms.
    pub vitals_shed: u64,
    /// Hub events the publisher missed by lagging (alarm and session events among them are still sent: they
    /// come from the outbox).
    pub hub_events_missed: u64,
    /// Command replies dropped because too many were waiting for room.
    pub replies_dropped: u64,
    /// Publishes waiting for room right now (retained state, replies, vitals; bounded).
    pub parked: u64,
    /// Connections to a broker made since start (the first one included: reconnects are this minus one).
    pub connections: u64,
    /// Publishes handed to the broker since start (every topic, every QoS; with the embedded broker, vitals are
    /// handed to it in-process).
    pub publishes: u64,
    /// Outbox events (alarms, sessions) the broker acknowledged since start.
    pub acknowledged: u64,
}

/// A running MQTT publisher.
pub struct Mqtt {
    /// The publisher task; it ends after publishing `offline` when the cancellation token fires.
    pub task: JoinHandle<()>,
    /// The broker link's status, for the dashboard.
    pub link: watch::Receiver<LinkStatus>,
    /// Beats once a second while the publisher's loop turns (the systemd watchdog reads it).
    pub heartbeat: crate::health::Heartbeat,
}

/// Starts the publisher (not the broker: call [`broker::start`] first when `mqtt.mode = "embedded"`). Returns
/// at once; the task connects, reconnects with backoff and jitter, and drains the outbox until `cancel` fires.
/// Must be called inside a tokio runtime.
pub fn spawn(config: Arc<Config>, hub: Arc<Hub>, store: Store, cancel: CancellationToken) -> Result<Mqtt, MqttError> {
    publisher::spawn(config, hub, store, cancel)
}

/// Everything MQTT for the daemon: starts the embedded broker when `mqtt.mode = "embedded"` (a port in use is
/// an error naming `mqtt.port`), then the publisher. Keep the returned broker alive as long as the process runs.
pub fn start(
    config: Arc<Config>,
    hub: Arc<Hub>,
    store: Store,
    cancel: CancellationToken,
) -> Result<(Option<Broker>, Mqtt), MqttError> {
    let broker = match config.mqtt.mode {
        crate::config::MqttMode::Embedded => Some(broker::start(&config)?),
        _ => None,
    };
    Ok((broker, spawn(config, hub, store, cancel)?))
}

/// [`spawn`], for callers that only need the task.
pub fn run(
    config: Arc<Config>,
    hub: Arc<Hub>,
    store: Store,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, MqttError> {
    spawn(config, hub, store, cancel).map(|m| m.task)
}
