//! The embedded broker for the demo and small single-machine installations: rumqttd, bound on
//! `mqtt.host:mqtt.port`. Why rumqttd and not rmqtt, and its limits: `docs/decisions/0001-embedded-broker.md`.
//!
//! rumqttd binds inside its own thread and only logs a bind failure, so Vigil binds the address itself first to
//! turn "port in use" into a clear error naming the setting, then waits until the broker accepts connections
//! before returning. rumqttd keeps retained messages and sessions in memory only and has no stop API: the broker
//! lives until the process exits. Installations that need persistence across restarts, TLS or ACLs use an
//! external Mosquitto (`mqtt.mode = "external"`, `docs/mqtt-api.md`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::MqttError;
use crate::config::MqttConfig;

/// Largest payload the embedded broker accepts (a vitals payload is about 2 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// A running embedded broker.
#[derive(Debug)]
pub struct Broker {
    addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl Broker {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// False once the broker thread has stopped (it only stops on a fatal error).
    pub fn is_running(&self) -> bool {
        !self.thread.is_finished()
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

/// Starts the embedded broker on `cfg.host:cfg.port` and returns once it accepts connections.
pub fn start(cfg: &MqttConfig) -> Result<Broker, MqttError> {
    let addr = resolve(&cfg.host, cfg.port)?;
    // Bind first: rumqttd would only log the failure from its own thread.
    match TcpListener::bind(addr) {
        Ok(l) => drop(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(MqttError::PortInUse { addr }),
        Err(e) => {
            return Err(MqttError::Config {
                key: "mqtt.host",
                reason: format!("cannot listen on {addr}: {e} (set mqtt.host and mqtt.port)"),
            })
        }
    }

    let auth = match (&cfg.username, &cfg.password) {
        (Some(u), Some(p)) => Some(HashMap::from([(u.clone(), p.clone())])),
        _ => None,
    };
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PAYLOAD_BYTES,
        max_inflight_count: 200,
        auth,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "vigil-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let router = rumqttd::RouterConfig {
        max_connections: 1000,
        max_outgoing_packet_count: 200,
        max_segment_size: 16 * 1024 * 1024,
        max_segment_count: 4,
        ..Default::default()
    };
    let config =
        rumqttd::Config { id: 0, router, v4: Some(HashMap::from([("1".to_owned(), server)])), ..Default::default() };
    let thread = std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| MqttError::Config { key: "mqtt.mode", reason: format!("cannot start the broker thread: {e}") })?;

    let probe =
        if addr.ip().is_unspecified() { SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()) } else { addr };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if thread.is_finished() {
            // Another process took the port between our check and rumqttd's bind.
            return Err(MqttError::PortInUse { addr });
        }
        if TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok() {
            tracing::info!(%addr, "embedded MQTT broker listening");
            return Ok(Broker { addr, thread });
        }
        if Instant::now() > deadline {
            return Err(MqttError::Config {
                key: "mqtt.port",
                reason: format!("the embedded broker did not start listening on {addr} within 10 s"),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
