//! The embedded broker for the demo and small single-machine installations: rumqttd, bound on
//! `mqtt.host:mqtt.port`. Why rumqttd and not rmqtt, and its limits: `docs/decisions/0001-embedded-broker.md`.
//!
//! Clients never talk to rumqttd directly: it listens on a private loopback port that accepts only a random
//! per-process secret, and Vigil's gate ([`super::gate`]) owns `mqtt.host:mqtt.port`, signs clients in with
//! `[[users]]` names and passwords and enforces topic rights. Vigil binds the public address itself first, to turn
//! "port in use" into a clear error naming the setting, and waits until rumqttd accepts connections before
//! returning. rumqttd keeps retained messages and sessions in memory only and has no stop API: the broker lives
//! until the process exits. Installations that need persistence across restarts or TLS use an external Mosquitto
//! (`mqtt.mode = "external"`, `docs/mqtt-api.md`).
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
    let secrets = SECRETS.get()?.lock().unwrap_or_else(|e| e.into_inner());
    secrets.get(&port).map(|(addr, s)| (*addr, (INTERNAL_USER.to_owned(), s.clone())))
}

const INTERNAL_USER: &str = "vigil-internal";
static SECRETS: OnceLock<Mutex<HashMap<u16, (SocketAddr, String)>>> = OnceLock::new();

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
    let (inner, thread) = loop {
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
    SECRETS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(addr.port(), (inner, secret));
    if demo {
        tracing::warn!(%addr, "embedded MQTT broker: DEMO: clients without credentials may connect (loopback only)");
    }
    tracing::info!(%addr, "embedded MQTT broker listening (clients sign in with [[users]] names and passwords)");
    Ok(Broker { addr, thread, gate: gate_thread, stats })
}

/// Starts rumqttd on a private loopback port that accepts only `secret`; returns once it accepts connections.
fn start_private(secret: &str) -> Result<(SocketAddr, JoinHandle<()>), MqttError> {
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
    let thread = std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(broker_config);
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
            Ok(true) => return Ok((inner, thread)),
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
