//! Typed configuration. Every field is documented here and in `config/vigil.toml`; every error names the file,
//! the key path and the reason (`beds[2].sources[0].baud: 9601 is not a standard rate`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The shipped starting point for a ward (`config/vigil.toml`, printed by `vigil print-default-config`): six
/// simulated chairs, embedded broker and dashboard on loopback, no action without sign-in.
pub const DEFAULT_CONFIG: &str = include_str!("../config/vigil.toml");

/// The built-in demo (`config/demo.toml`), run when no `--config` is given: like [`DEFAULT_CONFIG`] with demo
/// actions and anonymous MQTT clients allowed on loopback.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrong type.
    #[error("{file}: {path}: {reason}")]
    Parse {
        /// The file.
        file: String,
        /// Key path, e.g. `mqtt` or `beds[0].sources[1].baud`.
        path: String,
        /// Why.
        reason: String,
    },
    /// A value that parses but makes no sense.
    #[error("{file}: {path}: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// Key path.
        path: String,
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    /// The key path the error is about.
    pub fn path(&self) -> &str {
        match self {
            ConfigError::Read { .. } => "",
            ConfigError::Parse { path, .. } | ConfigError::Invalid { path, .. } => path,
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where Vigil runs; part of every MQTT topic.
    pub site: SiteConfig,
    /// The MQTT broker and topic tree.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// The ward dashboard.
    #[serde(default)]
    pub dashboard: DashboardConfig,
    /// The durable event store.
    #[serde(default)]
    pub store: StoreConfig,
    /// Optional HL7/MLLP listener shared by all beds with `kind = "mllp"` sources.
    #[serde(default)]
    pub mllp: Option<MllpConfig>,
    /// Users who may sign in to the dashboard or send MQTT commands.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// The chairs.
    #[serde(default)]
    pub beds: Vec<BedConfig>,
    /// Prometheus metrics (`GET /metrics`) and who may read them.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The scheduled self-test of the alarm path (`vigil self-test` runs one by hand).
    #[serde(default)]
    pub selftest: SelfTestConfig,
    /// Notification targets (webhooks, e-mail) and escalation chains (`docs/notifications.md`).
    #[serde(default)]
    pub notify: crate::notify::config::NotifyConfig,
    /// The directory relative paths are resolved against (the config file's directory). Not a TOML key.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Site and ward names, used in topics and on the dashboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Site name, a topic segment: `demo-clinic`.
    pub name: String,
    /// Ward name, a topic segment: `ketamine-suite`.
    pub ward: String,
}

/// Whether Vigil runs its own broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MqttMode {
    /// Start the embedded broker on `host:port` and publish to it.
    #[default]
    Embedded,
    /// Publish to a broker someone else runs (Mosquitto).
    External,
    /// No MQTT at all (dashboard only).
    Disabled,
}

/// MQTT settings. Its `Debug` output never shows the password.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `embedded` (default), `external` or `disabled`.
    #[serde(default)]
    pub mode: MqttMode,
    /// Broker host (embedded: the address to bind). Default `127.0.0.1`.
    #[serde(default = "default_mqtt_host")]
    pub host: String,
    /// Broker port. Default 1883.
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// More brokers to fail over to, as `host:port`, tried in order after `host:port`.
    #[serde(default)]
    pub failover: Vec<String>,
    /// Topic prefix, versioned. Default `vigil/v1`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Stable client id (persistent session). Default `vigil`.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Username for an external broker.
    #[serde(default)]
    pub username: Option<String>,
    /// Vigil's own password: for an external broker, or the embedded broker's account with Vigil's rights. Prefer
    /// `password_file` or `password_env`, which keep it out of the configuration file.
    #[serde(default)]
    pub password: Option<String>,
    /// A file whose content (without the trailing newline) is `password`; relative to the config file.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An environment variable whose value is `password`.
    #[serde(default)]
    pub password_env: Option<String>,
    /// TLS for an external broker.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Keep-alive in seconds. Default 2: Vigil pings the broker this often and gives up on a broker that has not
    /// answered by the next ping, so a hung broker is shown down within twice this (4 s); the broker likewise
    /// publishes Vigil's last will 1.5 times this after Vigil goes silent.
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Home Assistant MQTT discovery: the discovery prefix (`homeassistant`) under which Vigil publishes one
    /// retained device per bed with SpO2, pulse, heart rate, NIBP and alarm-state sensors, on every connect
    /// (docs/mqtt-api.md, "Home Assistant"). Default: none (no discovery messages).
    #[serde(default)]
    pub discovery_prefix: Option<String>,
}

/// TLS files for an external broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// Optional client certificate (PEM) for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// Dashboard settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    #[serde(default = "default_dashboard_listen")]
    pub listen: String,
    /// Let anyone see the ward without signing in (actions still need sign-in). Default true.
    #[serde(default = "default_true")]
    pub read_only_without_sign_in: bool,
    /// Allow actions without sign-in. Honoured only while `listen` is a loopback address (the embedded demo);
    /// Vigil says so at start-up. Default false.
    #[serde(default)]
    pub demo_actions_without_sign_in: bool,
    /// Host names (with or without `:port`) the dashboard answers to, besides the listen address and the
    /// loopback names (`localhost`, `127.0.0.1`, `[::1]`), which are always allowed. A request with any other
    /// `Host` header gets 421 on every route, so a DNS-rebinding page can neither read nor act. Set it to the
    /// names nurses type (`["vigil.ward.example"]`) when the dashboard listens on the network. Default empty.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Serve HTTPS instead of HTTP: the certificate and key files (PEM). With it the session cookie is `Secure`.
    /// Default: none (plain HTTP; check-config warns when `listen` is not loopback).
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
    /// Reverse proxies (addresses or CIDR blocks) whose `X-Forwarded-For` and `X-Forwarded-Proto` headers are
    /// believed: the client address for the sign-in lockout, and whether the browser used HTTPS (then the session
    /// cookie is `Secure`). From any other peer both headers are ignored. Default empty (none believed).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// A session with no request for this long ends (sign in again), seconds. Default 1800 (30 min, the NIST SP
    /// 800-63B AAL2 inactivity limit; docs/sources.md). Between 60 and 43200.
    #[serde(default = "default_session_idle_s")]
    pub session_idle_s: u64,
    /// A session ends this long after sign-in whatever the activity, seconds. Default 43200 (12 h, one long
    /// clinical shift and the NIST SP 800-63B AAL2 limit). At least `session_idle_s`, at most 86400.
    #[serde(default = "default_session_max_s")]
    pub session_max_s: u64,
}

/// TLS for one of Vigil's own listeners (`dashboard.tls`, `mllp.tls`). Paths are relative to the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// PEM certificate chain, the listener's own certificate first.
    pub cert_file: PathBuf,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates. When set, every client must present a certificate signed by one of them (mutual
    /// TLS): for MLLP, the monitors' or gateway's certificates. Default: no client certificate asked for.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// Store settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file, relative to the working directory. Default `vigil.db`.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Days of vitals, events and sessions kept. Default 30.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

/// Prometheus metrics. `GET /metrics` is served on the dashboard listener, and on `listen` when set. Counts,
/// link states and alarm conditions per bed are operational data, not patient data, but they tell an outsider
/// how busy the ward is: only peers in `allow` may read them without a token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A second address serving only `/metrics`, `/healthz` and `/readyz` (for a scraper on another network than
    /// the nurses'), e.g. `"10.1.9.4:9464"`. Default: none (the dashboard listener serves them).
    #[serde(default)]
    pub listen: Option<String>,
    /// Peers that may read `/metrics` without a token: addresses (`"10.1.9.20"`) and CIDR blocks
    /// (`"10.1.9.0/24"`). Default: loopback only.
    #[serde(default)]
    pub allow: Vec<String>,
    /// A file (relative to the config file) holding a bearer token: a scraper outside `allow` that sends
    /// `Authorization: Bearer <token>` may read `/metrics` too. Default: none (outside `allow` gets 403).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// The scheduled self-test: a marked test alarm (`test: true`) sent through the whole alarm path of one bed
/// (engine, store, MQTT, dashboard), each hop confirmed. A failed run raises the technical alarm
/// `selftest_failed` (medium) on that bed; the next passing run ends it (docs/operations.md, "Self-test").
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTestConfig {
    /// How often to run it: a number and a unit, `s`, `m`, `h` or `d` (`"12h"`), at least `"1s"`. The first run
    /// is one period after start. Default: none (only by hand).
    #[serde(default)]
    pub every: Option<String>,
    /// The bed the scheduled self-test uses. Default: the first bed.
    #[serde(default)]
    pub bed: Option<String>,
}

impl SelfTestConfig {
    /// The period of the scheduled self-test, when there is one (validated at load).
    pub fn period(&self) -> Option<std::time::Duration> {
        self.every.as_deref().and_then(|e| parse_period(e).ok())
    }
}

/// `"12h"`, `"30m"`, `"45s"`, `"1d"`: a whole number and one unit.
pub fn parse_period(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("'{text}' is not a period like \"12h\" (s, m, h or d)"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{text}' is not a period like \"12h\" (s, m, h or d)")),
    };
    match n.checked_mul(scale) {
        Some(secs) if (1..=366 * 86_400).contains(&secs) => Ok(std::time::Duration::from_secs(secs)),
        _ => Err(format!("'{text}' must be between 1s and 366d")),
    }
}

/// HL7/MLLP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllpConfig {
    /// Address to listen on. Default `127.0.0.1:2575` (loopback: set it to the ward network's address, with
    /// `allow`, to take messages from monitors).
    #[serde(default = "default_mllp_listen")]
    pub listen: String,
    /// Peers that may connect: addresses (`"10.1.3.7"`) and CIDR blocks (`"10.1.2.0/24"`). Connections from any
    /// other address are closed at accept, counted and logged. Default: loopback only (`127.0.0.0/8`, `::1`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Largest message accepted, bytes. Default 1 MiB.
    #[serde(default = "default_mllp_max_message")]
    pub max_message_bytes: usize,
    /// A connection silent this long is closed, seconds. Default 300.
    #[serde(default = "default_mllp_idle_timeout_s")]
    pub idle_timeout_s: u64,
    /// Connections served at once (one per monitor); more are closed at once, so a connection storm cannot
    /// exhaust file descriptors. Each holds at most `max_message_bytes` of buffer. Default 1024, at most 65536.
    #[serde(default = "default_mllp_max_connections")]
    pub max_connections: usize,
    /// MLLP over TLS: the listener's certificate and key, and optionally `client_ca_file` to require client
    /// certificates from the monitors. The peer allow-list still applies, before the handshake. Default: none.
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
}

/// A role: what a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// See the ward.
    Viewer,
    /// Acknowledge, pause audio, run sessions.
    Nurse,
    /// Everything a nurse can, plus limit overrides.
    Admin,
}

/// A user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Sign-in name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Argon2 PHC string (`vigil hash-password` makes one).
    pub password_hash: String,
}

/// One chair.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BedConfig {
    /// Stable id, a topic segment: `chair-1`.
    pub id: String,
    /// Label on the dashboard. Default: the id.
    #[serde(default)]
    pub label: Option<String>,
    /// Alarm profile: a name under `config/profiles/` or a path to a profile file. Default `ketamine-chair`.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Where the bed's readings come from.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

impl BedConfig {
    /// The label, or the id when none is set.
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.id)
    }
}

/// How bytes reach Vigil.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A serial port (RS-232, USB adapter, pty).
    Serial,
    /// A serial device server (Moxa, Lantronix, Digi) in "TCP server" mode: the device's serial bytes over a raw
    /// TCP connection that Vigil opens to `address`.
    Tcp,
    /// Philips IntelliVue Data Export over the monitor's LAN interface: UDP to `address` (port 24105).
    Udp,
    /// HL7 over the shared MLLP listener, matched by `device_id`.
    Mllp,
    /// The bundled simulator, in-process.
    Simulated,
}

/// Which protocol the device speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// Masimo Rad-8 / Radical-7 ASCII 1.
    Masimo,
    /// Nonin data format #8.
    Nonin,
    /// HL7 v2 ORU^R01 (IHE PCD-01), MLLP-framed.
    Hl7,
    /// GE Datex-Ohmeda S/5 Datex Record Interface (DRI) records.
    S5,
    /// Philips IntelliVue Data Export over the MIB/RS-232 port (115200 8N1): Vigil associates and polls.
    Intellivue,
}

impl DeviceKind {
    /// Config name.
    pub const fn name(self) -> &'static str {
        match self {
            DeviceKind::Masimo => "masimo",
            DeviceKind::Nonin => "nonin",
            DeviceKind::Hl7 => "hl7",
            DeviceKind::S5 => "s5",
            DeviceKind::Intellivue => "intellivue",
        }
    }
}

impl SourceKind {
    /// Config name.
    pub const fn name(self) -> &'static str {
        match self {
            SourceKind::Serial => "serial",
            SourceKind::Tcp => "tcp",
            SourceKind::Udp => "udp",
            SourceKind::Mllp => "mllp",
            SourceKind::Simulated => "simulated",
        }
    }
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity (8N1 devices: Masimo, Nonin).
    #[default]
    None,
    /// Even.
    Even,
    /// Odd.
    Odd,
}

impl Parity {
    /// Config name.
    pub const fn name(self) -> &'static str {
        match self {
            Parity::None => "none",
            Parity::Even => "even",
            Parity::Odd => "odd",
        }
    }
}

impl FlowControl {
    /// Config name.
    pub const fn name(self) -> &'static str {
        match self {
            FlowControl::None => "none",
            FlowControl::Software => "software",
            FlowControl::Hardware => "hardware",
        }
    }
}

/// Serial flow control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FlowControl {
    /// None.
    #[default]
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

/// Which physiological records an S/5 source asks the monitor for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum S5Interval {
    /// The displayed values, every 5 s.
    #[default]
    #[serde(rename = "display")]
    Display,
    /// The monitor's 10-second trend, every 10 s.
    #[serde(rename = "10s")]
    Trend10s,
    /// The monitor's 60-second trend, every 60 s.
    #[serde(rename = "60s")]
    Trend60s,
}

impl S5Interval {
    /// Seconds between two records.
    pub fn period_s(self) -> u64 {
        match self {
            S5Interval::Display => 5,
            S5Interval::Trend10s => 10,
            S5Interval::Trend60s => 60,
        }
    }
}

/// One source of readings for a bed. Which keys apply depends on `kind`; a key that does not apply is an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `serial`, `tcp`, `mllp` or `simulated`.
    pub kind: SourceKind,
    /// `masimo`, `nonin`, `hl7`, `s5` or `intellivue`.
    pub device: DeviceKind,
    /// serial: device path (`/dev/ttyUSB0`).
    #[serde(default)]
    pub path: Option<String>,
    /// tcp: the device server's `host:port` (a Moxa NPort's first port is 4001). udp: the IntelliVue monitor's
    /// `host:24105`; leave it out to associate with the monitor whose connect indication arrives (`discover_listen`,
    /// `monitor_ip`).
    #[serde(default)]
    pub address: Option<String>,
    /// udp without `address`: where to listen for the connect indications IntelliVue monitors broadcast. Default
    /// `0.0.0.0:24005` (the monitors' broadcast port); several sources may listen on the same port.
    #[serde(default)]
    pub discover_listen: Option<String>,
    /// udp without `address`: associate only with the monitor whose connect indication names this IPv4 address
    /// (default: the first monitor heard). Set it when more than one monitor is on the network.
    #[serde(default)]
    pub monitor_ip: Option<std::net::Ipv4Addr>,
    /// serial: baud rate. Default 19200 for s5, 115200 for intellivue (the MIB/RS-232 port's rate), 9600
    /// otherwise.
    #[serde(default)]
    pub baud: Option<u32>,
    /// serial: parity. Default even for s5, none otherwise.
    #[serde(default)]
    pub parity: Option<Parity>,
    /// serial: data bits, 5 to 8. Default 8.
    #[serde(default)]
    pub data_bits: Option<u8>,
    /// serial: stop bits, 1 or 2. Default 1.
    #[serde(default)]
    pub stop_bits: Option<u8>,
    /// serial: flow control. Default hardware (RTS/CTS) for s5, none otherwise.
    #[serde(default)]
    pub flow_control: Option<FlowControl>,
    /// serial + nonin: send the format-selection handshake for data format #8 at open. Default false.
    #[serde(default)]
    pub nonin_select_format: Option<bool>,
    /// mllp: the device's MSH-3 id (EUI-64) that maps its messages to this bed.
    #[serde(default)]
    pub device_id: Option<String>,
    /// mllp: the only peer address this device's messages are accepted from (`"10.1.2.31"`). Messages with its
    /// device id from any other address are answered AR and counted. Default: any allowed peer.
    #[serde(default)]
    pub peer: Option<String>,
    /// simulated: scenario name (`vigil-sim --list-scenarios`).
    #[serde(default)]
    pub scenario: Option<String>,
    /// simulated: random seed. Default 1.
    #[serde(default)]
    pub seed: Option<u64>,
    /// simulated: time speed-up factor. Default 1.0.
    #[serde(default)]
    pub speed: Option<f64>,
    /// simulated: which patient of a multi-bed scenario this bed plays. Default 0.
    #[serde(default)]
    pub patient: Option<usize>,
    /// serial, tcp and mllp: seconds without a frame (after the first one, or after the link came up) before the
    /// source counts as disconnected (`monitor_disconnected`). Default from the device's update period: 5 for
    /// masimo and nonin (a frame a second), 10 for hl7 and intellivue (polled every second, but an association
    /// takes a few seconds to come up), 15 for s5 (a record every 5 s; 30 with `s5_interval = "10s"`, 180 with
    /// `"60s"`: three records). Set it high for a monitor that only sends spot readings. A tcp source also reconnects after this
    /// long without a frame, and an s5 source repeats its requests.
    #[serde(default)]
    pub silence_alarm_s: Option<u64>,
    /// serial and tcp + s5: which physiological records to ask the monitor for: `"display"` (the displayed
    /// values every 5 s, the default), `"10s"` or `"60s"` (the monitor's 10- or 60-second trend, every 10 or 60
    /// s). A trend record comes once per period, so Vigil's alarms see a change up to that much later: keep
    /// `"display"` for alarming, and use a trend only where a monitor or a site wants the trend values.
    #[serde(default)]
    pub s5_interval: Option<S5Interval>,
}

/// The serial link a device kind is known to use: baud rates, parity, data bits and flow control, with the
/// source of the fact, for `check-config`'s warnings. `None` where the device sets no fixed link (HL7 over RS-232
/// is whatever the gateway is set to).
pub struct DeviceLink {
    /// Baud rates the device offers.
    pub bauds: &'static [u32],
    /// Parity.
    pub parity: Parity,
    /// Data bits.
    pub data_bits: u8,
    /// Flow control.
    pub flow_control: FlowControl,
    /// Where the settings come from, for the warning text.
    pub source: &'static str,
}

impl DeviceKind {
    /// The device's serial link (docs/devices.md), if it has a fixed one.
    pub const fn link(self) -> Option<DeviceLink> {
        match self {
            DeviceKind::Masimo => Some(DeviceLink {
                bauds: &[9600],
                parity: Parity::None,
                data_bits: 8,
                flow_control: FlowControl::None,
                source: "Masimo serial ASCII 1 runs at 9600 8N1 without flow control",
            }),
            DeviceKind::Nonin => Some(DeviceLink {
                bauds: &[9600],
                parity: Parity::None,
                data_bits: 8,
                flow_control: FlowControl::None,
                source: "Nonin data format #8 runs at 9600 8N1 without flow control",
            }),
            DeviceKind::S5 => Some(DeviceLink {
                bauds: &[19200, 9600],
                parity: Parity::Even,
                data_bits: 8,
                flow_control: FlowControl::Hardware,
                source: "the S/5 computer interface runs at 19200 (or 9600) 8E1 with RTS/CTS",
            }),
            DeviceKind::Intellivue => Some(DeviceLink {
                bauds: &[115_200],
                parity: Parity::None,
                data_bits: 8,
                flow_control: FlowControl::None,
                source: "the IntelliVue MIB/RS-232 port runs at 115200 8N1 without flow control",
            }),
            DeviceKind::Hl7 => None,
        }
    }
}

/// Warnings for a serial source whose link settings differ from what its device uses: the port opens, but the
/// bytes arrive garbled (wrong baud or parity) or not at all (flow control), and the source only ever counts bad
/// frames.
pub fn link_warnings(at: &str, src: &SourceConfig) -> Vec<(String, String)> {
    let Some(link) = src.device.link() else { return Vec::new() };
    let device = src.device.name();
    let mut out = Vec::new();
    if !link.bauds.contains(&src.baud()) {
        let expected: Vec<String> = link.bauds.iter().map(u32::to_string).collect();
        out.push((
            format!("{at}.baud"),
            format!(
                "{} is not a rate device = \"{device}\" uses ({}): {}",
                src.baud(),
                expected.join(" or "),
                link.source
            ),
        ));
    }
    if src.parity() != link.parity {
        out.push((
            format!("{at}.parity"),
            format!(
                "parity = \"{}\", but {}: bytes would fail the parity check or decode wrong",
                src.parity().name(),
                link.source
            ),
        ));
    }
    if src.data_bits.unwrap_or(8) != link.data_bits {
        out.push((format!("{at}.data_bits"), format!("{} data bits, but {}", src.data_bits.unwrap_or(8), link.source)));
    }
    if src.flow_control() != link.flow_control {
        out.push((
            format!("{at}.flow_control"),
            format!("flow_control = \"{}\", but {}", src.flow_control().name(), link.source),
        ));
    }
    out
}

/// Serial baud rates a monitor can use.
pub const STANDARD_BAUD_RATES: [u32; 12] =
    [300, 600, 1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200, 230400];

impl SourceConfig {
    /// Baud rate with its per-device default.
    pub fn baud(&self) -> u32 {
        self.baud.unwrap_or(match self.device {
            DeviceKind::S5 => 19200,
            DeviceKind::Intellivue => 115_200,
            DeviceKind::Masimo | DeviceKind::Nonin | DeviceKind::Hl7 => 9600,
        })
    }
    /// Parity with its per-device default.
    pub fn parity(&self) -> Parity {
        self.parity.unwrap_or(match self.device {
            DeviceKind::S5 => Parity::Even,
            _ => Parity::None,
        })
    }
    /// Flow control with its per-device default.
    pub fn flow_control(&self) -> FlowControl {
        self.flow_control.unwrap_or(match self.device {
            DeviceKind::S5 => FlowControl::Hardware,
            _ => FlowControl::None,
        })
    }
    /// Seconds of silence before `monitor_disconnected`, with its per-device default.
    pub fn silence_alarm_s(&self) -> u64 {
        self.silence_alarm_s.unwrap_or(match self.device {
            DeviceKind::Masimo | DeviceKind::Nonin => 5,
            DeviceKind::Hl7 | DeviceKind::Intellivue => 10,
            // Three record periods: 15 s for the displayed values.
            DeviceKind::S5 => self.s5_interval().period_s() * 3,
        })
    }
    /// The S/5 records asked for, with the default.
    pub fn s5_interval(&self) -> S5Interval {
        self.s5_interval.unwrap_or_default()
    }
    /// Seed with its default.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(1)
    }
    /// Speed with its default.
    pub fn speed(&self) -> f64 {
        self.speed.unwrap_or(1.0)
    }
}

fn default_mqtt_host() -> String {
    "127.0.0.1".into()
}
fn default_mqtt_port() -> u16 {
    1883
}
fn default_topic_prefix() -> String {
    "vigil/v1".into()
}
fn default_client_id() -> String {
    "vigil".into()
}
fn default_keep_alive_s() -> u64 {
    2
}
fn default_dashboard_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_session_idle_s() -> u64 {
    1800
}
fn default_session_max_s() -> u64 {
    12 * 3600
}
fn default_true() -> bool {
    true
}
fn default_store_path() -> PathBuf {
    PathBuf::from("vigil.db")
}
fn default_retention_days() -> u32 {
    30
}
fn default_mllp_listen() -> String {
    "127.0.0.1:2575".into()
}
fn default_mllp_max_message() -> usize {
    1 << 20
}
fn default_mllp_idle_timeout_s() -> u64 {
    300
}
fn default_mllp_max_connections() -> usize {
    1024
}
fn default_profile() -> String {
    "ketamine-chair".into()
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("mode", &self.mode)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("failover", &self.failover)
            .field("topic_prefix", &self.topic_prefix)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .field("tls", &self.tls)
            .field("keep_alive_s", &self.keep_alive_s)
            .field("discovery_prefix", &self.discovery_prefix)
            .finish()
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            mode: MqttMode::default(),
            host: default_mqtt_host(),
            port: default_mqtt_port(),
            failover: Vec::new(),
            topic_prefix: default_topic_prefix(),
            client_id: default_client_id(),
            username: None,
            password: None,
            password_file: None,
            password_env: None,
            tls: None,
            keep_alive_s: default_keep_alive_s(),
            discovery_prefix: None,
        }
    }
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            listen: default_dashboard_listen(),
            read_only_without_sign_in: true,
            demo_actions_without_sign_in: false,
            allowed_hosts: Vec::new(),
            tls: None,
            trusted_proxies: Vec::new(),
            session_idle_s: default_session_idle_s(),
            session_max_s: default_session_max_s(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { path: default_store_path(), retention_days: default_retention_days() }
    }
}

impl Default for MllpConfig {
    fn default() -> Self {
        MllpConfig {
            listen: default_mllp_listen(),
            allow: Vec::new(),
            max_message_bytes: default_mllp_max_message(),
            idle_timeout_s: default_mllp_idle_timeout_s(),
            max_connections: default_mllp_max_connections(),
            tls: None,
        }
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, &file, &base)
    }

    /// The embedded default configuration, relative paths resolved against the working directory.
    pub fn embedded_default() -> Config {
        Config::parse(DEFAULT_CONFIG, "<embedded config/vigil.toml>", Path::new("."))
            .expect("the embedded default configuration is valid (tested)")
    }

    /// The built-in demo, relative paths resolved against the working directory.
    pub fn demo() -> Config {
        Config::parse(DEMO_CONFIG, "<built-in config/demo.toml>", Path::new("."))
            .expect("the built-in demo configuration is valid (tested)")
    }

    /// Parses and validates TOML text. `file` names the source in errors.
    pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut config: Config =
            from_toml(text).map_err(|(path, reason)| ConfigError::Parse { file: file.to_owned(), path, reason })?;
        config.base_dir = base_dir.to_path_buf();
        config.validate().map_err(|(path, reason)| ConfigError::Invalid { file: file.to_owned(), path, reason })?;
        config.resolve_secrets().map_err(|(path, reason)| ConfigError::Invalid {
            file: file.to_owned(),
            path,
            reason,
        })?;
        Ok(config)
    }

    /// Reads `mqtt.password_file` or `mqtt.password_env` into `mqtt.password` (at most one of the three).
    fn resolve_secrets(&mut self) -> Result<(), (String, String)> {
        let m = &self.mqtt;
        let given = [m.password.is_some(), m.password_file.is_some(), m.password_env.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(("mqtt.password".into(), "give only one of password, password_file and password_env".into()));
        }
        if let Some(file) = &m.password_file {
            let full = self.resolve(file);
            let text = std::fs::read_to_string(&full)
                .map_err(|e| ("mqtt.password_file".to_owned(), format!("cannot read '{}': {e}", full.display())))?;
            let pw = text.trim_end_matches(['\r', '\n']).to_owned();
            if pw.is_empty() {
                return Err(("mqtt.password_file".into(), format!("'{}' is empty", full.display())));
            }
            self.mqtt.password = Some(pw);
        } else if let Some(var) = &m.password_env {
            let pw = std::env::var(var)
                .map_err(|_| ("mqtt.password_env".to_owned(), format!("the environment variable {var} is not set")))?;
            self.mqtt.password = Some(pw);
        }
        if self.mqtt.password.is_some() != self.mqtt.username.is_some() {
            return Err(("mqtt.username".into(), "give both username and a password, or neither".into()));
        }
        let base = self.base_dir.clone();
        self.notify.resolve_secrets(&base)
    }

    /// Settings that work but weaken the installation, each with its key path; `vigil check-config` prints them
    /// and `vigil run` logs them at start.
    pub fn warnings(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let loopback = |host: &str| {
            host == "localhost"
                || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        };
        for (i, u) in self.users.iter().enumerate() {
            let at = format!("users[{i}].password_hash");
            if EXAMPLE_HASHES.contains(&u.password_hash.as_str()) {
                out.push((at.clone(), "is the documented example hash (of \"nurse-demo\"): anyone can sign in".into()));
            }
            if let Some(why) = weak_hash(&u.password_hash) {
                out.push((at, why));
            }
        }
        let m = &self.mqtt;
        if m.mode == MqttMode::External && m.password.is_some() && m.tls.is_none() {
            let hosts = std::iter::once(m.host.as_str())
                .chain(m.failover.iter().map(|f| f.rsplit_once(':').map_or(f.as_str(), |(h, _)| h)));
            if let Some(h) = hosts.into_iter().find(|h| !loopback(h)) {
                out.push((
                    "mqtt.tls".into(),
                    format!(
                        "Vigil's MQTT password goes to {h} in plaintext: set [mqtt.tls] for a broker off this host"
                    ),
                ));
            }
        }
        if m.mode == MqttMode::Embedded && !loopback(&m.host) {
            out.push((
                "mqtt.host".into(),
                format!(
                    "the embedded broker listens on {} without TLS: [[users]] passwords cross the network in clear; \
                     prefer an external Mosquitto with TLS (docs/security.md)",
                    m.host
                ),
            ));
        }
        if let Ok(addr) = self.dashboard.listen.parse::<SocketAddr>() {
            if !addr.ip().is_loopback() && self.dashboard.allowed_hosts.is_empty() {
                out.push((
                    "dashboard.allowed_hosts".into(),
                    format!(
                        "the dashboard listens on {addr} but no host names are allowed: browsers reaching it by name get \
                         421; list the names nurses use"
                    ),
                ));
            }
            if !addr.ip().is_loopback() && self.dashboard.tls.is_none() {
                out.push((
                    "dashboard.tls".into(),
                    format!(
                        "the dashboard listens on {addr} without TLS: passwords and session cookies cross the network \
                         in clear; set [dashboard.tls] or keep it on loopback behind a TLS proxy (docs/security.md)"
                    ),
                ));
            }
            if !addr.ip().is_loopback() && self.dashboard.read_only_without_sign_in {
                out.push((
                    "dashboard.read_only_without_sign_in".into(),
                    format!("anyone who reaches {addr} sees the ward without signing in"),
                ));
            }
        }
        if let Some(mllp) = &self.mllp {
            if let Ok(addr) = mllp.listen.parse::<SocketAddr>() {
                if !addr.ip().is_loopback() && mllp.allow.is_empty() {
                    out.push((
                        "mllp.allow".into(),
                        format!("MLLP listens on {addr} without an allow-list: only loopback peers are accepted"),
                    ));
                }
            }
            if let Ok(addr) = mllp.listen.parse::<SocketAddr>() {
                if !addr.ip().is_loopback() && mllp.tls.is_none() {
                    out.push((
                        "mllp.tls".into(),
                        format!("MLLP listens on {addr} without TLS: vitals cross the network in clear"),
                    ));
                }
            }
            for (i, a) in mllp.allow.iter().enumerate() {
                if parse_peer_block(a).is_ok_and(|n| n.prefix_len() == 0) {
                    out.push((format!("mllp.allow[{i}]"), format!("'{a}' lets every address send vitals")));
                }
            }
        }
        for (b, bed) in self.beds.iter().enumerate() {
            for (s, src) in bed.sources.iter().enumerate() {
                if src.kind == SourceKind::Serial {
                    out.extend(link_warnings(&format!("beds[{b}].sources[{s}]"), src));
                }
            }
        }
        out
    }

    /// Resolves a path from the config against the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        topic_segment("site.name", &self.site.name)?;
        topic_segment("site.ward", &self.site.ward)?;
        if self.mqtt.topic_prefix.is_empty() || self.mqtt.topic_prefix.contains(['#', '+']) {
            return Err(("mqtt.topic_prefix".into(), "must be non-empty and contain no MQTT wildcards".into()));
        }
        if let Some(prefix) = &self.mqtt.discovery_prefix {
            if prefix.trim_matches('/').is_empty() || prefix.contains(['#', '+']) {
                return Err((
                    "mqtt.discovery_prefix".into(),
                    format!("'{prefix}' must be a topic prefix without MQTT wildcards, e.g. \"homeassistant\""),
                ));
            }
        }
        if self.mqtt.client_id.is_empty() {
            return Err(("mqtt.client_id".into(), "must not be empty".into()));
        }
        if self.mqtt.client_id.starts_with("u:") {
            return Err((
                "mqtt.client_id".into(),
                "must not start with 'u:' (the embedded broker's user clients)".into(),
            ));
        }
        if self.mqtt.mode == MqttMode::Embedded && self.mqtt.tls.is_some() {
            return Err(("mqtt.tls".into(), "TLS applies to external brokers only (mode = \"external\")".into()));
        }
        for (i, f) in self.mqtt.failover.iter().enumerate() {
            if f.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
                return Err((format!("mqtt.failover[{i}]"), format!("'{f}' is not host:port")));
            }
        }
        socket_addr("dashboard.listen", &self.dashboard.listen)?;
        let d = &self.dashboard;
        for (i, p) in d.trusted_proxies.iter().enumerate() {
            parse_peer_block(p).map_err(|reason| (format!("dashboard.trusted_proxies[{i}]"), reason))?;
        }
        if !(60..=43_200).contains(&d.session_idle_s) {
            return Err((
                "dashboard.session_idle_s".into(),
                format!("{} is not between 60 and 43200", d.session_idle_s),
            ));
        }
        if !(d.session_idle_s..=86_400).contains(&d.session_max_s) {
            return Err((
                "dashboard.session_max_s".into(),
                format!("{} is not between session_idle_s ({}) and 86400", d.session_max_s, d.session_idle_s),
            ));
        }
        if let Some(l) = &self.metrics.listen {
            socket_addr("metrics.listen", l)?;
        }
        for (i, a) in self.metrics.allow.iter().enumerate() {
            parse_peer_block(a).map_err(|reason| (format!("metrics.allow[{i}]"), reason))?;
        }
        if let Some(m) = &self.mllp {
            socket_addr("mllp.listen", &m.listen)?;
            for (i, a) in m.allow.iter().enumerate() {
                parse_peer_block(a).map_err(|reason| (format!("mllp.allow[{i}]"), reason))?;
            }
            if m.max_message_bytes < 1024 {
                return Err(("mllp.max_message_bytes".into(), "must be at least 1024".into()));
            }
            if !(1..=65_536).contains(&m.max_connections) {
                return Err((
                    "mllp.max_connections".into(),
                    format!("{} is not between 1 and 65536", m.max_connections),
                ));
            }
        }
        let mut names = HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            if !names.insert(u.name.as_str()) {
                return Err((format!("users[{i}].name"), format!("'{}' is defined twice", u.name)));
            }
            // The name is a topic segment (`cmd/{bed}/{user}`) and part of the broker client id.
            if u.name.is_empty()
                || u.name.len() > 64
                || u.name.contains(['/', '+', '#', '$', ':'])
                || u.name.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err((
                    format!("users[{i}].name"),
                    format!("'{}' must be 1 to 64 characters without '/', '+', '#', '$', ':' or spaces", u.name),
                ));
            }
            if !u.password_hash.starts_with("$argon2")
                || argon2::password_hash::PasswordHash::new(&u.password_hash).is_err()
            {
                return Err((
                    format!("users[{i}].password_hash"),
                    "must be an argon2 PHC string (make one with `vigil hash-password`)".into(),
                ));
            }
        }
        if let Some(every) = &self.selftest.every {
            parse_period(every).map_err(|reason| ("selftest.every".to_owned(), reason))?;
        }
        if let Some(bed) = &self.selftest.bed {
            if !self.beds.iter().any(|b| &b.id == bed) {
                return Err(("selftest.bed".into(), format!("'{bed}' is not one of the beds")));
            }
        } else if self.selftest.every.is_some() && self.beds.is_empty() {
            return Err(("selftest.every".into(), "needs at least one bed to test".into()));
        }
        let mut bed_ids = HashSet::new();
        let mut device_ids = HashSet::new();
        for (b, bed) in self.beds.iter().enumerate() {
            topic_segment(&format!("beds[{b}].id"), &bed.id)?;
            if !bed_ids.insert(bed.id.as_str()) {
                return Err((format!("beds[{b}].id"), format!("'{}' is used by another bed", bed.id)));
            }
            if let Err(e) = crate::alarm::Profile::resolve(&bed.profile, &self.base_dir) {
                return Err((format!("beds[{b}].profile"), e.to_string()));
            }
            for (s, src) in bed.sources.iter().enumerate() {
                let at = format!("beds[{b}].sources[{s}]");
                self.validate_source(&at, src)?;
                if let Some(id) = &src.device_id {
                    if !device_ids.insert(id.to_ascii_uppercase()) {
                        return Err((format!("{at}.device_id"), format!("'{id}' is used by another source")));
                    }
                }
            }
        }
        let beds: Vec<&str> = self.beds.iter().map(|b| b.id.as_str()).collect();
        self.notify.validate(&beds)
    }

    fn validate_source(&self, at: &str, src: &SourceConfig) -> Result<(), (String, String)> {
        let kind = src.kind.name();
        let not_for = |key: &str, present: bool| -> Result<(), (String, String)> {
            if present {
                Err((format!("{at}.{key}"), format!("does not apply to kind = \"{kind}\"")))
            } else {
                Ok(())
            }
        };
        if src.kind != SourceKind::Udp {
            not_for("discover_listen", src.discover_listen.is_some())?;
            not_for("monitor_ip", src.monitor_ip.is_some())?;
        }
        if src.s5_interval.is_some() {
            if src.device != DeviceKind::S5 {
                return Err((format!("{at}.s5_interval"), "applies to device = \"s5\" only".into()));
            }
            not_for("s5_interval", !matches!(src.kind, SourceKind::Serial | SourceKind::Tcp))?;
        }
        let serial_keys = [
            ("path", src.path.is_some()),
            ("baud", src.baud.is_some()),
            ("parity", src.parity.is_some()),
            ("data_bits", src.data_bits.is_some()),
            ("stop_bits", src.stop_bits.is_some()),
            ("flow_control", src.flow_control.is_some()),
            ("nonin_select_format", src.nonin_select_format.is_some()),
        ];
        let sim_keys = [
            ("scenario", src.scenario.is_some()),
            ("seed", src.seed.is_some()),
            ("speed", src.speed.is_some()),
            ("patient", src.patient.is_some()),
        ];
        match src.kind {
            SourceKind::Serial => {
                for (k, present) in sim_keys {
                    not_for(k, present)?;
                }
                not_for("address", src.address.is_some())?;
                not_for("peer", src.peer.is_some())?;
                not_for("device_id", src.device_id.is_some() && src.device != DeviceKind::Hl7)?;
                match &src.path {
                    None => return Err((format!("{at}.path"), "is required for kind = \"serial\"".into())),
                    Some(p) if p.is_empty() => return Err((format!("{at}.path"), "must not be empty".into())),
                    _ => {}
                }
                if let Some(b) = src.baud {
                    if !STANDARD_BAUD_RATES.contains(&b) {
                        return Err((format!("{at}.baud"), format!("{b} is not a standard rate")));
                    }
                }
                if let Some(d) = src.data_bits {
                    if !(5..=8).contains(&d) {
                        return Err((format!("{at}.data_bits"), format!("{d} is not 5, 6, 7 or 8")));
                    }
                }
                if let Some(s) = src.stop_bits {
                    if !(1..=2).contains(&s) {
                        return Err((format!("{at}.stop_bits"), format!("{s} is not 1 or 2")));
                    }
                }
                if src.nonin_select_format.is_some() && src.device != DeviceKind::Nonin {
                    return Err((format!("{at}.nonin_select_format"), "applies to device = \"nonin\" only".into()));
                }
            }
            SourceKind::Tcp => {
                for (k, present) in serial_keys.into_iter().chain(sim_keys) {
                    if present {
                        return Err((
                            format!("{at}.{k}"),
                            "does not apply to kind = \"tcp\" (the device server's own settings hold the serial \
                             side; see docs/devices.md)"
                                .into(),
                        ));
                    }
                }
                not_for("peer", src.peer.is_some())?;
                not_for("device_id", src.device_id.is_some() && src.device != DeviceKind::Hl7)?;
                match src.address.as_deref() {
                    None => return Err((format!("{at}.address"), "is required for kind = \"tcp\" (host:port)".into())),
                    Some(a) => {
                        let port = a.rsplit_once(':').and_then(|(h, p)| (!h.is_empty()).then_some(p));
                        if port.and_then(|p| p.parse::<u16>().ok()).is_none_or(|p| p == 0) {
                            return Err((
                                format!("{at}.address"),
                                format!("'{a}' is not host:port like 10.1.2.40:4001"),
                            ));
                        }
                    }
                }
            }
            SourceKind::Udp => {
                for (k, present) in serial_keys.into_iter().chain(sim_keys) {
                    not_for(k, present)?;
                }
                not_for("peer", src.peer.is_some())?;
                not_for("device_id", src.device_id.is_some())?;
                if src.device != DeviceKind::Intellivue {
                    return Err((
                        format!("{at}.device"),
                        "kind = \"udp\" is the IntelliVue LAN interface: use device = \"intellivue\"".into(),
                    ));
                }
                if let Some(address) = src.address.as_deref() {
                    not_for("discover_listen", src.discover_listen.is_some())?;
                    not_for("monitor_ip", src.monitor_ip.is_some())?;
                    let port = address.rsplit_once(':').filter(|(h, _)| !h.is_empty());
                    if port.and_then(|(_, p)| p.parse::<u16>().ok()).is_none_or(|p| p == 0) {
                        return Err((
                            format!("{at}.address"),
                            "is the monitor's host:port, like 10.1.2.50:24105 (or leave it out to wait for the \
                             monitor's connect indication)"
                                .into(),
                        ));
                    }
                } else if let Some(listen) = src.discover_listen.as_deref() {
                    if listen.parse::<std::net::SocketAddr>().is_err() {
                        return Err((
                            format!("{at}.discover_listen"),
                            format!("'{listen}' is not ip:port like 0.0.0.0:24005"),
                        ));
                    }
                }
            }
            SourceKind::Mllp => {
                for (k, present) in serial_keys.into_iter().chain(sim_keys) {
                    not_for(k, present)?;
                }
                not_for("address", src.address.is_some())?;
                if src.device != DeviceKind::Hl7 {
                    return Err((
                        format!("{at}.device"),
                        "kind = \"mllp\" carries HL7 only: use device = \"hl7\"".into(),
                    ));
                }
                match &src.device_id {
                    None => {
                        return Err((
                            format!("{at}.device_id"),
                            "is required for kind = \"mllp\" (the device's MSH-3 id)".into(),
                        ))
                    }
                    Some(id) if id.trim().is_empty() => {
                        return Err((format!("{at}.device_id"), "must not be empty".into()))
                    }
                    _ => {}
                }
                if let Some(p) = &src.peer {
                    p.parse::<std::net::IpAddr>()
                        .map_err(|_| (format!("{at}.peer"), format!("'{p}' is not an IP address like 10.1.2.31")))?;
                }
                if self.mllp.is_none() {
                    return Err((
                        format!("{at}.kind"),
                        "an mllp source needs an [mllp] section with the listen address".into(),
                    ));
                }
            }
            SourceKind::Simulated => {
                for (k, present) in serial_keys {
                    not_for(k, present)?;
                }
                not_for("address", src.address.is_some())?;
                not_for("peer", src.peer.is_some())?;
                not_for("device_id", src.device_id.is_some())?;
                if src.device == DeviceKind::Intellivue {
                    return Err((
                        format!("{at}.device"),
                        "the in-process simulator has no intellivue personality: run `vigil-sim --device intellivue --output pty` and use a serial source".into(),
                    ));
                }
                if let Some(speed) = src.speed {
                    if !(speed.is_finite() && speed > 0.0 && speed <= 1000.0) {
                        return Err((format!("{at}.speed"), format!("{speed} is not between 0 and 1000")));
                    }
                }
                let scenario = src.scenario.as_deref().unwrap_or("calm-session");
                if !vigil_sim::scenario_names().contains(&scenario) {
                    return Err((
                        format!("{at}.scenario"),
                        format!("unknown scenario '{scenario}' (known: {})", vigil_sim::scenario_names().join(", ")),
                    ));
                }
            }
        }
        if let Some(s) = src.silence_alarm_s {
            if !(1..=3600).contains(&s) {
                return Err((format!("{at}.silence_alarm_s"), format!("{s} is not between 1 and 3600")));
            }
        }
        Ok(())
    }
}

/// Deserialises TOML into `T`; an error comes with the key path it is about (`beds[2].sources[0].baud`, `site.ward`
/// for a missing key, `(syntax)` for a TOML syntax error) and a one-line reason. Shared by every file Vigil reads.
pub fn from_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, (String, String)> {
    let de = toml::Deserializer::parse(text).map_err(|e| (String::from("(syntax)"), one_line(&e.to_string())))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let reason = one_line(e.into_inner().message());
        // A missing key is reported at its parent; name the key itself.
        let missing = reason.strip_prefix("missing field `").and_then(|r| r.split('`').next());
        let path = match (path.as_str(), missing) {
            (".", Some(key)) => key.to_owned(),
            (".", None) => String::from("(top level)"),
            (_, Some(key)) => format!("{path}.{key}"),
            (_, None) => path,
        };
        (path, reason)
    })
}

fn topic_segment(path: &str, value: &str) -> Result<(), (String, String)> {
    if value.is_empty() || value.contains(['/', '#', '+']) || value.chars().any(char::is_whitespace) {
        return Err((
            path.into(),
            format!("'{value}' must be a non-empty topic segment without '/', '#', '+' or spaces"),
        ));
    }
    Ok(())
}

/// Password hashes published in Vigil's own documentation and examples: never for real use.
pub const EXAMPLE_HASHES: [&str; 1] =
    ["$argon2id$v=19$m=19456,t=2,p=1$hboFs2kgyvxMUnp+lH9tAg$iDx7IFdbB97Gj/O95kOIdIeWQgxZC4+mJV18mBy5DhA"];

/// Why an argon2 PHC string is weaker (or costlier) than Vigil's default (argon2id, m=19456 KiB, t=2, p=1).
fn weak_hash(phc: &str) -> Option<String> {
    let parsed = argon2::password_hash::PasswordHash::new(phc).ok()?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Some(format!("uses {}: use argon2id (`vigil hash-password`)", parsed.algorithm));
    }
    let param = |k: &str| parsed.params.get_decimal(k).unwrap_or(0);
    let (m, t) = (param("m"), param("t"));
    if m < 19_456 || t < 2 {
        return Some(format!("argon2 parameters m={m} KiB, t={t} are weaker than m=19456, t=2: hash it again"));
    }
    if m > 262_144 {
        return Some(format!("argon2 m={m} KiB makes every sign-in use over 256 MiB: hash it again"));
    }
    None
}

/// An `mllp.allow` entry: an address (`10.1.3.7`, one host) or a CIDR block (`10.1.2.0/24`).
pub fn parse_peer_block(value: &str) -> Result<ipnet::IpNet, String> {
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("'{value}' is not an address (10.1.3.7) or a CIDR block (10.1.2.0/24)"))
}

fn socket_addr(path: &str, value: &str) -> Result<SocketAddr, (String, String)> {
    value.parse::<SocketAddr>().map_err(|_| (path.into(), format!("'{value}' is not an address like 127.0.0.1:8080")))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
