//! The publisher: two tasks.
//!
//! * The network task owns rumqttc's `EventLoop` and does nothing but poll it (rumqttc stalls otherwise),
//!   forward what happened, and sleep with backoff and jitter after an error. It rotates through `mqtt.host`
//!   and `mqtt.failover` brokers and gives every connection a birth sequence number (kept in the store) that the
//!   last will carries too.
//! * The main task reacts: hub events become publishes, the outbox is drained with QoS 1, commands are handed
//!   to handler tasks, and on cancellation it publishes the retained `offline` status, waits for its PUBACK and
//!   disconnects cleanly.
//!
//! With the embedded broker, vitals skip TCP: they go through rumqttd's in-process link
//! ([`super::local_link`]); everything else (the outbox, retained state, status, commands) uses the connection.
//!
//! rumqttc's `publish()` does not say which packet id a publish got. Requests are processed in order, and each
//! produces one `Outgoing::Publish(pkid)` event, so the main task keeps a FIFO of what it queued and pairs each
//! event with the front entry; a PUBACK then names the outbox row to mark delivered. After a connection error the
//! network task drops rumqttc's own replay queue (reporting how many never-sent publishes it held, so the FIFO
//! stays aligned) and the main task re-sends every unacknowledged row from the store: the store, not rumqttc's
//! memory, is the source of truth, which also covers a failover to a broker without our session.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing,
    Packet, QoS, Request, TlsConfiguration, Transport,
};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::Authorizer;
use super::backlog::Backlog;
use super::command::{self, Handler};
use super::discovery::Discovery;
use super::intake5;
use super::local_link::LocalLink;
use super::payload::{self, Status, SCHEMA_VERSION};
use super::topics::Topics;
use super::{DeliveryCounters, LinkState, LinkStatus, Mqtt, MqttError};
use crate::config::{Config, MqttMode};
use crate::event::{DeviceStatus, Event};
use crate::health::Heartbeat;
use crate::hub::{Hub, HubEvent};
use crate::store::{Store, StoreError};

/// Outbox events sent but not yet acknowledged, at most.
const WINDOW: usize = 64;
/// rumqttc's in-flight limit (must exceed WINDOW plus status, snapshots and replies).
const INFLIGHT: u16 = 200;
/// rumqttc's request channel.
const CHANNEL: usize = 512;
/// The store counter holding the last birth sequence number.
const BIRTH_COUNTER: &str = "mqtt.birth_seq";
/// Backoff after a connection error: from this, doubling…
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// …up to this. A broker that is back is reached within this (plus the connect itself): trying a down broker
/// on the LAN costs one refused TCP connection, so a long backoff only delays the alarms waiting in the outbox.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// After a refusal (credentials, client id) retrying quickly cannot help: from this, doubling, up to
/// [`REFUSED_MAX`].
const REFUSED_MIN: Duration = Duration::from_secs(2);
/// See [`REFUSED_MIN`].
const REFUSED_MAX: Duration = Duration::from_secs(30);
/// A publish whose topic and payload exceed this can never be taken by the broker (nor sent by rumqttc): it is
/// quarantined instead of being retried forever. The fixed header and topic length prefix fit in the margin.
const MAX_PUBLISH_BYTES: usize = super::broker::MAX_PAYLOAD_BYTES - 16;

fn jittered(min: Duration, max: Duration, exp: u32) -> Duration {
    let ceiling = min.saturating_mul(1 << exp.min(8)).min(max);
    ceiling / 2 + rand::rng().random_range(Duration::ZERO..=ceiling / 2)
}

/// How long to wait before reconnect attempt `exp` after a lost or failed connection: exponential from
/// [`BACKOFF_MIN`] to [`BACKOFF_MAX`], with the upper half randomised so that several clients (the publisher,
/// the command intake, other integrators) do not reconnect in lock-step after a broker restart.
pub(super) fn backoff_delay(exp: u32) -> Duration {
    jittered(BACKOFF_MIN, BACKOFF_MAX, exp)
}

/// Like [`backoff_delay`], after the broker refused the connection (retrying quickly cannot fix that).
pub(super) fn refused_delay(exp: u32) -> Duration {
    jittered(REFUSED_MIN, REFUSED_MAX, exp)
}

/// How long shutdown waits for the broker to acknowledge `offline`.
const OFFLINE_DEADLINE: Duration = Duration::from_secs(3);

/// What the network task reports, in order.
#[derive(Debug)]
enum Net {
    Connected { broker: String, seq: u64, session_present: bool },
    Sent(u16),
    PubAck(u16),
    Message(rumqttc::Publish),
    Lost { broker: String, error: String, refused: bool, dropped: usize },
    Closed,
}

/// What a queued publish was, to pair with its packet id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Track {
    Untracked,
    Outbox(i64),
    Offline,
}

#[derive(Clone)]
struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    fn label(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Everything needed to build connection options for any broker in the list.
#[derive(Clone)]
struct Connector {
    endpoints: Vec<Endpoint>,
    client_id: String,
    keep_alive: Duration,
    credentials: Option<(String, String)>,
    transport: Transport,
    status_topic: String,
    status: Status,
}

impl Connector {
    fn options(&self, idx: usize, seq: u64) -> MqttOptions {
        let ep = &self.endpoints[idx % self.endpoints.len()];
        let mut o = MqttOptions::new(self.client_id.clone(), ep.host.clone(), ep.port);
        o.set_keep_alive(self.keep_alive)
            .set_clean_session(false)
            .set_inflight(INFLIGHT)
            .set_max_packet_size(super::broker::MAX_PAYLOAD_BYTES, super::broker::MAX_PAYLOAD_BYTES)
            .set_transport(self.transport.clone());
        if let Some((u, p)) = &self.credentials {
            o.set_credentials(u.clone(), p.clone());
        }
        let will =
            Status { state: "offline", seq, time: Utc::now(), reason: Some("connection-lost"), ..self.status.clone() };
        o.set_last_will(LastWill::new(self.status_topic.clone(), will.will(), QoS::AtLeastOnce, true));
        o
    }
}

fn read_file(key: &'static str, config: &Config, path: &std::path::Path) -> Result<Vec<u8>, MqttError> {
    let full = config.resolve(path);
    std::fs::read(&full)
        .map_err(|e| MqttError::Config { key, reason: format!("cannot read '{}': {e}", full.display()) })
}

fn transport(config: &Config) -> Result<Transport, MqttError> {
    let Some(tls) = &config.mqtt.tls else { return Ok(Transport::Tcp) };
    let ca = read_file("mqtt.tls.ca_file", config, &tls.ca_file)?;
    let client_auth = match (&tls.cert_file, &tls.key_file) {
        (Some(c), Some(k)) => {
            Some((read_file("mqtt.tls.cert_file", config, c)?, read_file("mqtt.tls.key_file", config, k)?))
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(MqttError::Config { key: "mqtt.tls.key_file", reason: "is required with cert_file".into() })
        }
        (None, Some(_)) => {
            return Err(MqttError::Config { key: "mqtt.tls.cert_file", reason: "is required with key_file".into() })
        }
    };
    Ok(Transport::tls_with_config(TlsConfiguration::Simple { ca, alpn: None, client_auth }))
}

fn endpoints(config: &Config) -> Result<Vec<Endpoint>, MqttError> {
    let mut host = config.mqtt.host.clone();
    // An embedded broker bound to every interface is reached on loopback.
    if config.mqtt.mode == MqttMode::Embedded {
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() && ip.is_ipv4() => host = "127.0.0.1".into(),
            Ok(ip) if ip.is_unspecified() => host = "::1".into(),
            _ => {}
        }
    }
    let mut list = match embedded_internal(config) {
        // Vigil reaches its embedded broker on the private port, not through the gate clients use.
        Some((inner, _)) => vec![Endpoint { host: inner.ip().to_string(), port: inner.port() }],
        None => vec![Endpoint { host, port: config.mqtt.port }],
    };
    if config.mqtt.mode == MqttMode::External {
        for f in &config.mqtt.failover {
            let (host, port) = f
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_owned(), p.parse::<u16>().ok()?)))
                .ok_or_else(|| MqttError::Config { key: "mqtt.failover", reason: format!("'{f}' is not host:port") })?;
            list.push(Endpoint { host, port });
        }
    }
    Ok(list)
}

fn embedded_internal(config: &Config) -> Option<(std::net::SocketAddr, (String, String))> {
    (config.mqtt.mode == MqttMode::Embedded).then(|| super::broker::internal(config.mqtt.port))?
}

fn embedded_local_link(config: &Config) -> Option<Arc<std::sync::Mutex<LocalLink>>> {
    (config.mqtt.mode == MqttMode::Embedded).then(|| super::broker::local_link(config.mqtt.port))?
}

pub(super) fn spawn(
    config: Arc<Config>,
    hub: Arc<Hub>,
    store: Store,
    cancel: CancellationToken,
) -> Result<Mqtt, MqttError> {
    let endpoints = endpoints(&config)?;
    let first = LinkStatus {
        state: if config.mqtt.mode == MqttMode::Disabled { LinkState::Disabled } else { LinkState::Connecting },
        broker: endpoints[0].label(),
        since: Utc::now(),
        last_error: None,
        birth_seq: 0,
        delivery: DeliveryCounters::default(),
    };
    let (link_tx, link) = watch::channel(first);
    if config.mqtt.mode == MqttMode::Disabled {
        tracing::info!("MQTT is disabled (mqtt.mode = \"disabled\")");
        return Ok(Mqtt { task: tokio::spawn(async {}), link, heartbeat: Heartbeat::default() });
    }
    if config.mqtt.keep_alive_s == 0 || config.mqtt.keep_alive_s > 3600 {
        return Err(MqttError::Config { key: "mqtt.keep_alive_s", reason: "must be between 1 and 3600".into() });
    }
    let topics = Topics::from_config(&config);
    let beds: Vec<String> = hub.beds().iter().map(|b| b.id.to_string()).collect();
    let status = Status {
        schema_version: SCHEMA_VERSION,
        state: "online",
        seq: 0,
        time: Utc::now(),
        reason: None,
        version: env!("CARGO_PKG_VERSION"),
        site: config.site.name.clone(),
        ward: config.site.ward.clone(),
        client_id: config.mqtt.client_id.clone(),
        beds: beds.clone(),
        beds_omitted: false,
        store: None,
    };
    let connector = Connector {
        endpoints,
        client_id: config.mqtt.client_id.clone(),
        keep_alive: Duration::from_secs(config.mqtt.keep_alive_s),
        credentials: embedded_internal(&config)
            .map(|(_, creds)| creds)
            .or_else(|| config.mqtt.username.clone().zip(config.mqtt.password.clone())),
        transport: transport(&config)?,
        status_topic: topics.status(),
        status,
    };
    let auth = Arc::new(Authorizer::from_config(&config));
    if auth.demo() {
        tracing::warn!(
            "demo: MQTT commands without credentials run as user 'demo' (dashboard.demo_actions_without_sign_in, \
             embedded broker on loopback)"
        );
    }
    let last_seq = store.counter(BIRTH_COUNTER)?;
    let (client, mut eventloop) = AsyncClient::new(connector.options(0, last_seq + 1), CHANNEL);
    // Alarm events are small writes that must leave at once: without TCP_NODELAY each waits for the broker's
    // delayed ACK of the previous one (tens of milliseconds per hop).
    eventloop.network_options.set_tcp_nodelay(true);
    let (net_tx, net_rx) = mpsc::unbounded_channel();
    let stop_net = CancellationToken::new();
    let net = tokio::spawn(network(eventloop, connector.clone(), store.clone(), last_seq, net_tx, stop_net.clone()));
    let (replies_tx, replies_rx) = mpsc::channel(64);
    let tracker = TaskTracker::new();
    let handler = Handler { topics: topics.clone(), hub: hub.clone(), store: store.clone(), auth, replies: replies_tx };
    // External brokers: commands arrive on a separate MQTT 5 connection (response topic, correlation data).
    let intake = (config.mqtt.mode == MqttMode::External).then(|| {
        let (tx5, rx5) = mpsc::channel(64);
        let link = intake5::Link {
            endpoints: connector.endpoints.iter().map(|e| (e.host.clone(), e.port)).collect(),
            client_id: format!("{}-cmd", config.mqtt.client_id),
            keep_alive: connector.keep_alive,
            credentials: connector.credentials.clone(),
            transport: connector.transport.clone(),
        };
        let h5 = Handler { replies: tx5, ..handler.clone() };
        tokio::spawn(intake5::run(link, topics.clone(), h5, rx5, tracker.clone(), cancel.clone()))
    });
    let heartbeat = Heartbeat::default();
    let discovery = config
        .mqtt
        .discovery_prefix
        .as_deref()
        .map(|prefix| Discovery::new(prefix, topics.clone(), &config.site.name, &config.site.ward));
    let main = Main {
        client,
        topics,
        store,
        hub,
        status: connector.status,
        link: link_tx,
        fifo: VecDeque::new(),
        inflight: HashMap::new(),
        unacked: BTreeSet::new(),
        acked: Vec::new(),
        last_sent: 0,
        outbox_more: false,
        connected: false,
        birth_seq: last_seq,
        devices: HashMap::new(),
        offline_pkid: None,
        offline_acked: false,
        commands_here: intake.is_none(),
        handler,
        tracker,
        warned_fifo: false,
        backlog: Backlog::default(),
        local: embedded_local_link(&config),
        local_failing: false,
        retained_hash: HashMap::new(),
        hub_seen: 0,
        counters: DeliveryCounters::default(),
        heartbeat: heartbeat.clone(),
        discovery,
    };
    let task = tokio::spawn(main.run(net_rx, replies_rx, net, intake, stop_net, cancel));
    Ok(Mqtt { task, link, heartbeat })
}

fn describe(error: &ConnectionError, broker: &str) -> (String, bool) {
    match error {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => (
            format!("mqtt.username / mqtt.password: the broker at {broker} refused Vigil's credentials ({code:?})"),
            true,
        ),
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId) => {
            (format!("mqtt.client_id: the broker at {broker} refused the client id"), true)
        }
        ConnectionError::ConnectionRefused(code) => {
            (format!("the broker at {broker} refused the connection ({code:?})"), true)
        }
        ConnectionError::Tls(e) => (format!("mqtt.tls: TLS with the broker at {broker} failed: {e}"), false),
        ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            (format!("mqtt.host / mqtt.port: nothing listens at {broker} (is the broker running?)"), false)
        }
        e => (format!("connection to the broker at {broker} lost: {e}"), false),
    }
}

/// The network task: polls the event loop and nothing else (see the module documentation).
async fn network(
    mut el: EventLoop,
    connector: Connector,
    store: Store,
    mut last_seq: u64,
    tx: mpsc::UnboundedSender<Net>,
    stop: CancellationToken,
) {
    let mut idx = 0usize;
    let mut failures = 0u32;
    let mut last_error = String::new();
    loop {
        let polled = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = el.poll() => r,
        };
        let broker = connector.endpoints[idx % connector.endpoints.len()].label();
        match polled {
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                last_error.clear();
                last_seq += 1;
                if let Err(e) = store.set_counter(BIRTH_COUNTER, last_seq) {
                    tracing::error!(error = %e, "cannot store the MQTT birth sequence");
                }
                tracing::info!(%broker, seq = last_seq, session_present = ack.session_present, "connected to MQTT broker");
                let _ = tx.send(Net::Connected { broker, seq: last_seq, session_present: ack.session_present });
            }
            Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => {
                let _ = tx.send(Net::PubAck(ack.pkid));
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                let _ = tx.send(Net::Message(p));
            }
            Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => {
                let _ = tx.send(Net::Sent(pkid));
            }
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => {
                let _ = tx.send(Net::Closed);
                return;
            }
            Ok(_) => {}
            Err(error) => {
                // Publishes drained from the request channel were never sent (pkid 0); those taken back from
                // the session state were, and the store re-sends all of them anyway.
                let dropped = el.pending.iter().filter(|r| matches!(r, Request::Publish(p) if p.pkid == 0)).count();
                el.pending.clear();
                let (message, refused) = describe(&error, &broker);
                if message != last_error {
                    tracing::error!(error = %message, "MQTT");
                    last_error = message.clone();
                } else {
                    tracing::debug!(error = %message, "MQTT");
                }
                let _ = tx.send(Net::Lost { broker, error: message, refused, dropped });
                failures = failures.saturating_add(1);
                if connector.endpoints.len() > 1 {
                    idx = (idx + 1) % connector.endpoints.len();
                }
                el.mqtt_options = connector.options(idx, last_seq + 1);
                // A refusal will not fix itself quickly: back off longer.
                let delay = if refused { refused_delay(failures) } else { backoff_delay(failures) };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

struct Main {
    client: AsyncClient,
    topics: Topics,
    store: Store,
    hub: Arc<Hub>,
    status: Status,
    link: watch::Sender<LinkStatus>,
    fifo: VecDeque<Track>,
    inflight: HashMap<u16, i64>,
    unacked: BTreeSet<i64>,
    acked: Vec<i64>,
    last_sent: i64,
    /// Whether the last drain stopped before the outbox was empty (window full, request queue full): only then
    /// does an acknowledgement make another read worth it. Every vitals publish reports back, and reading the
    /// outbox for each was a tenth of a core at 5,000 beds.
    outbox_more: bool,
    connected: bool,
    birth_seq: u64,
    devices: HashMap<String, BTreeMap<String, Arc<DeviceStatus>>>,
    offline_pkid: Option<u16>,
    offline_acked: bool,
    /// Commands come in on this connection (embedded broker) rather than the MQTT 5 intake.
    commands_here: bool,
    handler: Handler,
    tracker: TaskTracker,
    warned_fifo: bool,
    /// Publishes waiting for room in rumqttc's request channel (bounded, coalescing).
    backlog: Backlog,
    /// The in-process link into the embedded broker, which vitals take instead of TCP ([`super::local_link`]).
    local: Option<Arc<std::sync::Mutex<LocalLink>>>,
    /// Whether the last vitals message the local link refused has not been followed by one it took (the error
    /// is logged once per failure, not once per message).
    local_failing: bool,
    /// A hash of the last payload parked per retained topic: after a lag, only topics whose state changed are
    /// parked again (a lag never republishes every bed).
    retained_hash: HashMap<String, u64>,
    /// The id of the last hub event taken into account: after a lag, only beds changed since are re-parked.
    hub_seen: u64,
    /// Counters shown in the link status.
    counters: DeliveryCounters,
    /// Beaten on every tick of the loop.
    heartbeat: Heartbeat,
    /// Home Assistant discovery (`mqtt.discovery_prefix`), republished on every connect.
    discovery: Option<Discovery>,
}

impl Main {
    async fn run(
        mut self,
        mut net: mpsc::UnboundedReceiver<Net>,
        mut replies: mpsc::Receiver<command::Outgoing>,
        net_task: JoinHandle<()>,
        intake: Option<JoinHandle<()>>,
        stop_net: CancellationToken,
        cancel: CancellationToken,
    ) {
        // If this task dies (a panic), the network task stops too: the connection drops without a DISCONNECT,
        // so the broker publishes the last will (`offline`, `connection-lost`) and the death is visible on MQTT.
        let _net_guard = stop_net.clone().drop_guard();
        let (snapshot, mut events) = self.hub.subscribe();
        self.hub_seen = snapshot.last_id;
        for bed in &snapshot.beds {
            let map = self.devices.entry(bed.info.id.to_string()).or_default();
            for d in self.store.latest_devices(&bed.info.id).unwrap_or_default() {
                map.insert(d.source.clone(), Arc::new(d));
            }
            map.extend(bed.devices.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let mut hub_open = true;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut store_health = self.store.health();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(n) = net.recv() => {
                    self.on_net(n);
                    // Take what else has arrived, so that a burst of PUBACKs costs one store transaction.
                    for _ in 0..256 {
                        match net.try_recv() {
                            Ok(n) => self.on_net(n),
                            Err(_) => break,
                        }
                    }
                    self.flush_acks();
                    if self.outbox_more && self.unacked.len() < WINDOW / 2 {
                        self.drain();
                    }
                    self.flush_backlog();
                }
                ev = events.recv(), if hub_open => match ev {
                    Ok(ev) => {
                        self.on_hub(&ev);
                        // Take what else has arrived before flushing, so that vitals coalesce under load.
                        for _ in 0..256 {
                            match events.try_recv() {
                                Ok(ev) => self.on_hub(&ev),
                                Err(broadcast::error::TryRecvError::Lagged(n)) => self.lagged(n),
                                Err(_) => break,
                            }
                        }
                        self.flush_backlog();
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => self.lagged(n),
                    Err(broadcast::error::RecvError::Closed) => hub_open = false,
                },
                Some(r) = replies.recv() => {
                    self.backlog.reply(r.topic, r.payload);
                    self.flush_backlog();
                }
                _ = tick.tick() => {
                    self.heartbeat.beat();
                    self.drain();
                    self.flush_backlog();
                    self.publish_counters();
                }
                Ok(()) = store_health.changed() => {
                    let failed = !store_health.borrow_and_update().ok;
                    if failed != self.status.store.is_some() {
                        // The retained status says so while it lasts (`store: "failed"`), as far as MQTT can.
                        self.status.store = failed.then_some("failed");
                        if self.connected {
                            let now = Status { seq: self.birth_seq, time: Utc::now(), ..self.status.clone() };
                            self.publish_json(self.topics.status(), &now, QoS::AtLeastOnce, true, Track::Untracked);
                        }
                    }
                }
            }
        }
        self.shutdown(&mut net, net_task, stop_net).await;
        if let Some(intake) = intake {
            let _ = tokio::time::timeout(Duration::from_secs(2), intake).await;
        }
    }

    fn set_link(&self, state: LinkState, broker: Option<String>, error: Option<String>) {
        self.link.send_modify(|l| {
            if l.state != state {
                l.since = Utc::now();
            }
            l.state = state;
            if let Some(b) = broker {
                l.broker = b;
            }
            if error.is_some() || state == LinkState::Connected {
                l.last_error = error;
            }
            l.birth_seq = self.birth_seq;
            l.delivery = self.counters;
        });
    }

    /// Refreshes the counters in the link status when they changed.
    fn publish_counters(&mut self) {
        self.counters.vitals_shed = self.backlog.vitals_shed;
        self.counters.replies_dropped = self.backlog.replies_dropped;
        self.counters.parked = self.backlog.len() as u64;
        let counters = self.counters;
        self.link.send_if_modified(|l| {
            let changed = l.delivery != counters;
            l.delivery = counters;
            changed
        });
    }

    /// The publisher fell behind the hub and missed `n` events. Alarm and session events are not lost (they are
    /// in the outbox); missed vitals are shed (the next second brings new ones); retained state is re-parked only
    /// for the beds whose state changed since the last event seen ([`Hub::retained_since`]) and only where it
    /// differs from what was last parked. Never
    /// a republish of every bed, never a store read per bed: that is what made a lag feed on itself.
    fn lagged(&mut self, n: u64) {
        self.counters.hub_events_missed += n;
        self.backlog.vitals_shed += n;
        tracing::warn!(missed = n, "MQTT publisher lagged behind the hub; re-sending only changed retained state");
        let (changed, upto) = self.hub.retained_since(self.hub_seen);
        self.hub_seen = upto;
        for bed in changed {
            let id = bed.bed.to_string();
            if let Some(a) = &bed.alarms {
                self.park_retained_json(self.topics.alarms(&id), &payload::alarms(a), true);
            }
            if let Some(s) = &bed.session {
                self.park_retained_json(self.topics.session(&id), &payload::session(s), true);
            }
            if !bed.devices.is_empty() {
                let map = self.devices.entry(id.clone()).or_default();
                map.extend(bed.devices);
                self.park_device(&id, true);
            }
        }
        self.drain();
        self.flush_backlog();
        self.publish_counters();
    }

    /// Parks a retained payload (latest wins per topic). With `only_if_changed`, a payload identical to the last
    /// one parked for the topic is skipped.
    fn park_retained_json<T: serde::Serialize>(&mut self, topic: String, body: &T, only_if_changed: bool) {
        let bytes = match serde_json::to_vec(body) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, %topic, "cannot encode an MQTT payload");
                return;
            }
        };
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            h.finish()
        };
        let previous = self.retained_hash.insert(topic.clone(), hash);
        if only_if_changed && previous == Some(hash) {
            return;
        }
        self.backlog.retained(topic, bytes);
    }

    /// Sends parked publishes while rumqttc's request channel has room (outbox events go first, in `drain`).
    fn flush_backlog(&mut self) {
        if !self.connected || self.backlog.is_empty() {
            return;
        }
        let client = &self.client;
        let fifo = &mut self.fifo;
        self.backlog.flush(|p| match client.try_publish(p.topic.clone(), p.qos, p.retain, p.payload.clone()) {
            Ok(()) => {
                fifo.push_back(Track::Untracked);
                true
            }
            Err(_) => false,
        });
    }

    /// Sets an outbox row aside that the broker can never take, so it does not block every event behind it.
    fn quarantine(&mut self, id: i64, reason: &str) {
        tracing::error!(
            id,
            reason,
            "outbox event quarantined: the broker cannot take it; it stays in the store's event log"
        );
        if let Err(e) = self.store.quarantine(id, reason, Utc::now()) {
            tracing::error!(error = %e, id, "cannot mark the outbox event quarantined");
        }
        self.counters.quarantined += 1;
        self.last_sent = self.last_sent.max(id);
        self.publish_counters();
    }

    fn on_net(&mut self, n: Net) {
        match n {
            Net::Connected { broker, seq, session_present } => {
                self.connected = true;
                self.counters.connections += 1;
                self.birth_seq = seq;
                self.set_link(LinkState::Connected, Some(broker), None);
                let birth = Status { state: "online", seq, time: Utc::now(), reason: None, ..self.status.clone() };
                self.publish_json(self.topics.status(), &birth, QoS::AtLeastOnce, true, Track::Untracked);
                self.publish_discovery();
                if self.commands_here {
                    if let Err(e) = self.client.try_subscribe(self.topics.command_filter(), QoS::AtMostOnce) {
                        tracing::error!(error = %e, "cannot subscribe to MQTT commands");
                    }
                }
                tracing::debug!(session_present, "publishing snapshots and the outbox");
                self.publish_snapshots();
                self.drain();
                self.flush_backlog();
            }
            Net::Sent(pkid) => {
                self.counters.publishes += 1;
                match self.fifo.pop_front() {
                    Some(Track::Outbox(id)) if pkid != 0 => {
                        self.inflight.insert(pkid, id);
                    }
                    Some(Track::Offline) => self.offline_pkid = Some(pkid),
                    Some(_) => {}
                    None => {
                        if !self.warned_fifo {
                            tracing::warn!(
                                pkid,
                                "MQTT publish without a queued entry (delivery tracking resets on reconnect)"
                            );
                            self.warned_fifo = true;
                        }
                    }
                }
            }
            Net::PubAck(pkid) => {
                if self.offline_pkid == Some(pkid) {
                    self.offline_acked = true;
                }
                if let Some(id) = self.inflight.remove(&pkid) {
                    self.counters.acknowledged += 1;
                    self.acked.push(id);
                    self.unacked.remove(&id);
                }
            }
            Net::Message(p) => {
                if let Some((bed, sender)) = self.topics.command_target(&p.topic) {
                    let h = self.handler.clone();
                    let sender = sender.map(str::to_owned);
                    let info = command::ResponseInfo { retained: p.retain, sender, ..Default::default() };
                    self.tracker.spawn(h.handle(bed.to_owned(), p.payload.to_vec(), info));
                }
            }
            Net::Lost { broker, error, refused, dropped } => {
                for _ in 0..dropped.min(self.fifo.len()) {
                    self.fifo.pop_front();
                }
                if self.connected {
                    tracing::warn!(
                        unacknowledged = self.unacked.len(),
                        "MQTT connection lost; the outbox will be re-sent"
                    );
                }
                self.connected = false;
                self.backlog.shed_vitals();
                self.inflight.clear();
                self.unacked.clear();
                self.last_sent = 0;
                self.offline_pkid = None;
                self.set_link(
                    if refused { LinkState::Refused } else { LinkState::Connecting },
                    Some(broker),
                    Some(error),
                );
            }
            Net::Closed => {}
        }
    }

    fn on_hub(&mut self, ev: &HubEvent) {
        self.hub_seen = self.hub_seen.max(ev.id);
        match &ev.event {
            Event::Vitals(v) => {
                // Only while connected: vitals are of the moment, a reconnect does not want old ones.
                if self.connected {
                    match serde_json::to_vec(&payload::VitalsPayload(v)) {
                        Ok(bytes) => self.send_vitals(self.topics.vitals(&v.bed), bytes),
                        Err(e) => tracing::error!(error = %e, "cannot encode a vitals payload"),
                    }
                }
            }
            Event::Alarm(_) | Event::Session(_) => self.drain(),
            Event::Alarms(a) => self.park_retained_json(self.topics.alarms(&a.bed), &payload::alarms(a), false),
            Event::Device(d) => {
                self.devices.entry(d.bed.to_string()).or_default().insert(d.source.clone(), Arc::new(d.clone()));
                self.park_device(&d.bed, false);
            }
        }
    }

    /// Vitals go through the local link when the broker is in this process, else they are parked for TCP. A
    /// message the local link refuses (its router stopped or stuck) is shed and counted, and the failure logged:
    /// TCP would reach the same router.
    fn send_vitals(&mut self, topic: String, bytes: Vec<u8>) {
        let Some(local) = &self.local else { return self.backlog.vitals(topic, bytes) };
        let sent = local.lock().unwrap_or_else(|e| e.into_inner()).publish(topic, bytes);
        match sent {
            Ok(()) => {
                self.counters.publishes += 1;
                if std::mem::take(&mut self.local_failing) {
                    tracing::info!("the embedded broker takes vitals again");
                }
            }
            Err(e) => {
                self.backlog.vitals_shed += 1;
                if !std::mem::replace(&mut self.local_failing, true) {
                    tracing::error!(error = %e, "vitals are being shed: the embedded broker does not take them");
                }
            }
        }
    }

    fn park_device(&mut self, bed: &str, only_if_changed: bool) {
        let sources: Vec<DeviceStatus> =
            self.devices.get(bed).map(|m| m.values().map(|d| DeviceStatus::clone(d)).collect()).unwrap_or_default();
        let time = sources.iter().map(|d| d.time).max().unwrap_or_else(Utc::now);
        self.park_retained_json(self.topics.device(bed), &payload::device(bed, time, &sources), only_if_changed);
    }

    /// Home Assistant discovery configs for every bed, retained: on every connect, so a broker that lost its
    /// retained messages (a restart of the embedded broker, a failover) has them again.
    fn publish_discovery(&mut self) {
        let Some(discovery) = self.discovery.clone() else { return };
        for bed in self.hub.beds() {
            for (topic, config) in discovery.bed(&bed) {
                // Parked like the other retained state: flushed under the publisher's flow control.
                self.park_retained_json(topic, &config, false);
            }
        }
    }

    /// Retained state for every bed, parked for the new connection (a failover broker may not have it): from the
    /// hub when it has it, else from the store (after a restart). Once per connection, one payload per topic.
    fn publish_snapshots(&mut self) {
        let snapshot = self.hub.snapshot();
        for bed in snapshot.beds {
            let id = bed.info.id.to_string();
            let alarms = match bed.alarms {
                Some(a) => Some(payload::alarms(&a)),
                None => match self.store.latest_alarms(&id) {
                    Ok(Some(a)) => Some(payload::alarms(&a)),
                    Ok(None) => {
                        let last = self.store.next_bed_seq(&id).map(|n| n - 1).unwrap_or(0);
                        Some(payload::no_alarms(&id, Utc::now(), last))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, bed = %id, "cannot read the latest alarms");
                        None
                    }
                },
            };
            if let Some(a) = alarms {
                self.park_retained_json(self.topics.alarms(&id), &a, false);
            }
            let session = bed.session.or_else(|| self.store.latest_session(&id).ok().flatten());
            if let Some(s) = session {
                self.park_retained_json(self.topics.session(&id), &payload::session(&s), false);
            }
            if self.devices.get(&id).is_some_and(|m| !m.is_empty()) {
                self.park_device(&id, false);
            }
        }
    }

    /// Marks acknowledged outbox rows delivered, in one transaction.
    fn flush_acks(&mut self) {
        if self.acked.is_empty() {
            return;
        }
        // Not awaited: a mark lost to a crash or a failed disk only means the event is sent once more.
        self.store.mark_delivered_background(std::mem::take(&mut self.acked), Utc::now());
    }

    /// Sends outbox rows not yet sent, keeping at most WINDOW unacknowledged.
    fn drain(&mut self) {
        self.flush_acks();
        self.outbox_more = true;
        while self.connected && self.unacked.len() < WINDOW {
            let room = WINDOW - self.unacked.len();
            let items = match self.store.pending_after(self.last_sent, room) {
                Ok(items) => items,
                Err(StoreError::Corrupt { id, reason }) => {
                    self.quarantine(id, &format!("unreadable outbox row: {reason}"));
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    return;
                }
            };
            if items.is_empty() {
                self.outbox_more = false;
                return;
            }
            for item in items {
                let (topic, body, retain) = match &item.event {
                    Event::Alarm(a) => (self.topics.alarm(&a.bed), payload::alarm(a), false),
                    // Retained only if it is still the bed's latest session event: a replayed older one must not
                    // overwrite the present state a late subscriber gets.
                    Event::Session(s) => {
                        let latest = self.store.latest_session(&s.bed).ok().flatten();
                        (self.topics.session(&s.bed), payload::session(s), latest.as_ref() == Some(s))
                    }
                    other => {
                        tracing::error!(id = item.id, kind = ?std::mem::discriminant(other), "unexpected outbox event; skipped");
                        let _ = self.store.mark_delivered(&[item.id], Utc::now());
                        self.last_sent = item.id;
                        continue;
                    }
                };
                let bytes = match serde_json::to_vec(&body) {
                    Ok(b) => b,
                    Err(e) => {
                        self.quarantine(item.id, &format!("cannot encode: {e}"));
                        continue;
                    }
                };
                if topic.len() + bytes.len() > MAX_PUBLISH_BYTES {
                    let reason = format!(
                        "{} bytes exceed the broker's limit of {MAX_PUBLISH_BYTES} per publish",
                        topic.len() + bytes.len()
                    );
                    self.quarantine(item.id, &reason);
                    continue;
                }
                if !self.publish(topic, bytes, QoS::AtLeastOnce, retain, Track::Outbox(item.id)) {
                    return;
                }
                self.unacked.insert(item.id);
                self.last_sent = item.id;
            }
        }
    }

    fn publish_json<T: serde::Serialize>(
        &mut self,
        topic: String,
        body: &T,
        qos: QoS,
        retain: bool,
        track: Track,
    ) -> bool {
        match serde_json::to_vec(body) {
            Ok(bytes) => self.publish(topic, bytes, qos, retain, track),
            Err(e) => {
                tracing::error!(error = %e, %topic, "cannot encode an MQTT payload");
                false
            }
        }
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>, qos: QoS, retain: bool, track: Track) -> bool {
        match self.client.try_publish(topic, qos, retain, payload) {
            Ok(()) => {
                self.fifo.push_back(track);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "MQTT request queue full; will retry");
                false
            }
        }
    }

    async fn shutdown(
        mut self,
        net: &mut mpsc::UnboundedReceiver<Net>,
        net_task: JoinHandle<()>,
        stop_net: CancellationToken,
    ) {
        self.tracker.close();
        if self.connected {
            let offline = Status {
                state: "offline",
                seq: self.birth_seq,
                time: Utc::now(),
                reason: Some("shutdown"),
                ..self.status.clone()
            };
            self.publish_json(self.topics.status(), &offline, QoS::AtLeastOnce, true, Track::Offline);
            let deadline = tokio::time::sleep(OFFLINE_DEADLINE);
            tokio::pin!(deadline);
            while !self.offline_acked && self.connected {
                tokio::select! {
                    _ = &mut deadline => {
                        tracing::warn!("the broker did not acknowledge the offline status in time");
                        break;
                    }
                    n = net.recv() => match n {
                        Some(n) => self.on_net(n),
                        None => break,
                    },
                }
            }
            if self.connected && self.client.try_disconnect().is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(n) = net.recv().await {
                        if matches!(n, Net::Closed) {
                            break;
                        }
                        self.on_net(n);
                    }
                })
                .await;
            }
        }
        self.flush_acks();
        stop_net.cancel();
        let _ = net_task.await;
        self.set_link(LinkState::Stopped, None, None);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tracker.wait()).await;
        tracing::info!(pending = self.store.pending_count().unwrap_or(0), "MQTT publisher stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_start_at_an_eighth_to_a_quarter_second_never_exceed_one_second_and_are_jittered() {
        // Fixed numbers, not the implementation's formula: attempt 0 waits 125-250 ms, attempt 1 125-500 ms,
        // attempt 2 and later 0.5-1 s. A broker that is back is reached within a second.
        let bounds = [(125, 250), (250, 500)];
        for exp in 0..40u32 {
            let (lo, hi) = bounds.get(exp as usize).copied().unwrap_or((500, 1000));
            for _ in 0..50 {
                let d = backoff_delay(exp).as_millis();
                assert!(d >= lo && d <= hi, "attempt {exp}: {d} ms not in {lo}..={hi}");
            }
        }
        let spread: std::collections::HashSet<Duration> = (0..50).map(|_| backoff_delay(5)).collect();
        assert!(spread.len() > 1, "delays are randomised");
    }

    #[test]
    fn after_a_refusal_the_delay_starts_at_one_second_and_stays_under_thirty() {
        for exp in 0..40u32 {
            let d = refused_delay(exp);
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(30), "attempt {exp}: {d:?}");
        }
        assert!(refused_delay(10) >= Duration::from_secs(15), "a refusal that persists is retried slowly");
    }
}
