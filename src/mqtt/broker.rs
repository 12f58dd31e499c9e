//! The embedded broker for the demo and small single-machine installations: rumqttd, bound on
//! `mqtt.host:mqtt.port`. Why rumqttd and not rmqtt, and its limits: `docs/decisions/0001-embedded-broker.md`.
//!
//! Clients never talk to rumqttd directly: it listens on a private loopback port that accepts only a random
//! per-process secret, and Vigil's gate ([`super::gate`]) owns `mqtt.host:mqtt.port`, signs clients in with
//! `[[users]]` names and passwords and enforces topic rights. Vigil binds the public address itself first, to turn
//! "port in use" into a clear error naming the setting, and waits until rumqttd accepts connections before
//! returning. rumqttd keeps retained messages and sessions in memory only and has no stop API: the broker lives
//! until the process exits. Installations that need persistence across restarts or TLS use an external Mosquitto
//! (`mqtt.mode = "external"`, `docs/mqtt-api.md`). Vigil's publisher also gets an in-process link into the
//! router, for vitals ([`super::local_link`]).
//!
//! Limits (set here and in the gate): payloads up to [`MAX_PAYLOAD_BYTES`]; 200 in-flight QoS 1 messages and 200
//! queued outgoing packets per connection; at most [`gate::MAX_CLIENTS`] client connections; commit logs of at most
//! 4 segments of 4 MiB per subscription filter. rumqttd keeps every message a filter matched until its log is full
//! (16 MiB: about 3 s of a 5,000-bed ward's vitals on `+/vitals`, hours of its alarms on `+/alarm`); a subscriber
//! further behind than that skips ahead to the oldest kept message, which is logged as a warning. Larger logs
//! cost memory in every ward, since a busy filter's log is always full (64 MiB was 13 KB per bed at 5,000).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use super::local_link::LocalLink;
use super::{gate, MqttError};
use crate::config::{Config, MqttMode};

/// Largest payload the embedded broker accepts (a vitals payload is about 2 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// A running embedded broker.
#[derive(Debug)]
pub struct Broker {
    addr: SocketAddr,
    thread: JoinHandle<()>,
    gate: JoinHandle<()>,
    stats: Arc<gate::GateStats>,
}

impl Broker {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// False once the broker thread has stopped (it only stops on a fatal error).
    pub fn is_running(&self) -> bool {
        !self.thread.is_finished() && !self.gate.is_finished()
    }

    /// The gate's counters: refused sign-ins, refused publishes, connections refused because the gate was full.
    pub fn stats(&self) -> &gate::GateStats {
        &self.stats
    }
}

/// Resolves `mqtt.host:mqtt.port` to one address.
pub(crate) fn resolve(host: &str, port: u16) -> Result<SocketAddr, MqttError> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| MqttError::Config { key: "mqtt.host", reason: format!("cannot resolve '{host}': {e}") })?
        .next()
        .ok_or_else(|| MqttError::Config { key: "mqtt.host", reason: format!("'{host}' resolves to no address") })
}

/// Where Vigil's own publisher reaches the embedded broker started in this process for public port `port`: the
/// private address and its secret credentials. Vigil's connection bypasses the gate, so a client flood that
/// fills the gate's connection slots cannot keep Vigil from reconnecting.
pub(crate) fn internal(port: u16) -> Option<(SocketAddr, (String, String))> {
    let registry = INTERNAL.get()?.lock().unwrap_or_else(|e| e.into_inner());
    registry.get(&port).map(|i| (i.addr, (INTERNAL_USER.to_owned(), i.secret.clone())))
}

/// The in-process link into the embedded broker started in this process for public port `port`, for vitals
/// ([`super::local_link`]).
pub(crate) fn local_link(port: u16) -> Option<Arc<Mutex<LocalLink>>> {
    let registry = INTERNAL.get()?.lock().unwrap_or_else(|e| e.into_inner());
    registry.get(&port).map(|i| i.link.clone())
}

const INTERNAL_USER: &str = "vigil-internal";
/// The client id of the local link: only Vigil's own service credentials can name it (the gate prefixes every
/// other client's id), so no client can take it over.
const LOCAL_LINK_CLIENT: &str = "vigil-internal-vitals";

/// What Vigil's own publisher needs to reach an embedded broker.
struct Internal {
    addr: SocketAddr,
    secret: String,
    link: Arc<Mutex<LocalLink>>,
}

static INTERNAL: OnceLock<Mutex<HashMap<u16, Internal>>> = OnceLock::new();

/// Whether the configuration is the loopback demo: demo actions on, the embedded broker, a loopback `mqtt.host`.
/// Only then may MQTT clients connect without a `[[users]]` name and password.
pub fn is_loopback_demo(config: &Config) -> bool {
    let loopback = config.mqtt.host == "localhost"
        || config.mqtt.host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false);
    config.dashboard.demo_actions_without_sign_in && config.mqtt.mode == MqttMode::Embedded && loopback
}

/// Starts the embedded broker for `config.mqtt.host:port` and returns once it accepts connections.
///
/// rumqttd itself listens on a private loopback port and accepts only a random per-process secret; clients reach
/// it through the gate on `mqtt.host:mqtt.port` ([`super::gate`]), which signs them in and enforces topic rights.
pub fn start(config: &Config) -> Result<Broker, MqttError> {
    let cfg = &config.mqtt;
    let addr = resolve(&cfg.host, cfg.port)?;
    // Bind first: a port in use becomes an error naming the setting. The gate keeps this listener.
    let public = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(MqttError::PortInUse { addr }),
        Err(e) => {
            return Err(MqttError::Config {
                key: "mqtt.host",
                reason: format!("cannot listen on {addr}: {e} (set mqtt.host and mqtt.port)"),
            })
        }
    };
    let secret = crate::dashboard::auth::random_token();
    // rumqttd cannot bind port 0: pick a free port, release it and let rumqttd bind it. Another process may take
    // it in between, so try a few times.
    let mut attempt = 0;
    let (inner, thread, link) = loop {
        attempt += 1;
        match start_private(&secret) {
            Ok(x) => break x,
            Err(e) if attempt >= 5 => return Err(e),
            Err(_) => continue,
        }
    };

    let demo = is_loopback_demo(config);
    let mut service = vec![(INTERNAL_USER.to_owned(), secret.clone())];
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        service.push((u.clone(), p.clone()));
    }
    let topics = super::Topics::from_config(config);
    let policy = gate::Policy {
        base: topics.base().to_owned(),
        discovery: config.mqtt.discovery_prefix.clone(),
        beds: config.beds.iter().map(|b| b.id.clone()).collect(),
        users: config.users.clone(),
        demo,
        service,
        inner,
        secret: secret.clone(),
    };
    let stats = Arc::new(gate::GateStats::default());
    let gate_stats = stats.clone();
    let gate_thread = std::thread::Builder::new()
        .name("mqtt-gate".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "MQTT gate: cannot start its runtime"),
            };
            if let Err(e) = rt.block_on(gate::serve(public, policy, gate_stats)) {
                tracing::error!(error = %e, "MQTT gate stopped");
            }
        })
        .map_err(|e| MqttError::Config { key: "mqtt.mode", reason: format!("cannot start the gate thread: {e}") })?;
    INTERNAL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(addr.port(), Internal { addr: inner, secret, link: Arc::new(Mutex::new(link)) });
    if demo {
        tracing::warn!(%addr, "embedded MQTT broker: DEMO: clients without credentials may connect (loopback only)");
    }
    tracing::info!(%addr, "embedded MQTT broker listening (clients sign in with [[users]] names and passwords)");
    Ok(Broker { addr, thread, gate: gate_thread, stats })
}

/// Starts rumqttd on a private loopback port that accepts only `secret`; returns once it accepts connections,
/// with a local link into its router.
fn start_private(secret: &str) -> Result<(SocketAddr, JoinHandle<()>, LocalLink), MqttError> {
    let inner = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| MqttError::Config { key: "mqtt.mode", reason: format!("cannot pick a private port: {e}") })?;

    let mut connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PAYLOAD_BYTES,
        max_inflight_count: 200,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let expected = secret.to_owned();
    connections.set_auth_handler(move |_client: String, _user: String, password: String| {
        let ok: bool = password.as_bytes().ct_eq(expected.as_bytes()).into();
        async move { ok }
    });
    let server = rumqttd::ServerSettings {
        name: "vigil-v4".into(),
        listen: inner,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let router = rumqttd::RouterConfig {
        max_connections: gate::MAX_CLIENTS + 16,
        max_outgoing_packet_count: 200,
        max_segment_size: 4 * 1024 * 1024, // see the module's doc
        max_segment_count: 4,
        ..Default::default()
    };
    let broker_config =
        rumqttd::Config { id: 0, router, v4: Some(HashMap::from([("1".to_owned(), server)])), ..Default::default() };
    // `Broker::new` starts the router, so the local link can be made before the listeners start.
    let mut broker = rumqttd::Broker::new(broker_config);
    let link = broker.link(LOCAL_LINK_CLIENT).map_err(|e| MqttError::Config {
        key: "mqtt.mode",
        reason: format!("the embedded broker refused Vigil's local link: {e}"),
    })?;
    let link = LocalLink::new(link.0, link.1);
    let thread = std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| MqttError::Config { key: "mqtt.mode", reason: format!("cannot start the broker thread: {e}") })?;

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if thread.is_finished() {
            return Err(MqttError::Config {
                key: "mqtt.mode",
                reason: format!("the embedded broker could not listen on its private port {inner}"),
            });
        }
        match probe(inner, secret) {
            Ok(true) => return Ok((inner, thread, link)),
            // Something else answers on that port: not ours.
            Ok(false) => {
                return Err(MqttError::Config {
                    key: "mqtt.mode",
                    reason: format!("another program took the private port {inner}"),
                })
            }
            Err(_) => {}
        }
        if Instant::now() > deadline {
            return Err(MqttError::Config {
                key: "mqtt.port",
                reason: format!("the embedded broker did not start listening on {inner} within 10 s"),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Signs in to the private broker with the secret: `Ok(true)` when it is ours and ready.
fn probe(inner: SocketAddr, secret: &str) -> std::io::Result<bool> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&inner, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let connect = gate::connect_packet("vigil-ready-probe", INTERNAL_USER, secret.as_bytes());
    s.write_all(&connect)?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack)?;
    Ok(ack == [0x20, 0x02, 0x00, 0x00])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_vigil_hands_its_local_link_reaches_a_subscriber_on_the_public_port() {
        let mut config = Config::embedded_default();
        config.mqtt.host = "127.0.0.1".into();
        config.dashboard.demo_actions_without_sign_in = true;
        config.mqtt.port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert!(is_loopback_demo(&config), "an anonymous subscriber may sign in");
        let broker = start(&config).unwrap();
        let topic = super::super::Topics::from_config(&config).vitals(&config.beds[0].id);

        let mut options = MqttOptions::new("local-link-test", "127.0.0.1", config.mqtt.port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(options, 10);
        client.subscribe(topic.clone(), QoS::AtMostOnce).await.unwrap();
        let link = local_link(broker.addr().port()).expect("the broker registered its local link");
        let received = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.poll().await.unwrap() {
                    Event::Incoming(Packet::SubAck(_)) => {
                        link.lock().unwrap().publish(topic.clone(), b"{\"bed\":1}".to_vec()).unwrap();
                    }
                    Event::Incoming(Packet::Publish(p)) => return p,
                    _ => {}
                }
            }
        })
        .await
        .expect("the message arrived");
        assert_eq!(received.topic, topic);
        assert_eq!(&received.payload[..], b"{\"bed\":1}");
        assert_eq!(link.lock().unwrap().queued(), 0, "the router took the queue");
    }
}
