//! The embedded broker's front door: every MQTT client of the embedded broker connects here, never to rumqttd.
//!
//! rumqttd 0.20 can check a CONNECT's username and password (`ConnectionSettings::external_auth`) but has no topic
//! rights at all, and tells its subscribers nothing about who published a message. So Vigil runs rumqttd on a
//! private loopback port that only accepts a random per-process secret, and this gate listens on
//! `mqtt.host:mqtt.port`. For each client connection it:
//!
//! - reads the CONNECT (MQTT 3.1.1 only; others get CONNACK "unacceptable protocol version"), within 10 s;
//! - signs the client in with a `[[users]]` name and password, checked against the same argon2 hashes as the
//!   dashboard (on the process's hashing threads, [`crate::auth::HashPool`]; a failed sign-in waits
//!   [`FAILURE_DELAY`] and counts towards a [`crate::auth::Lockout`]: the dashboard's rules, the gate's own
//!   counters). A client without a
//!   username is refused (CONNACK 5, "not authorised") unless Vigil runs as the loopback demo
//!   (`dashboard.demo_actions_without_sign_in`, embedded broker, loopback `mqtt.host`);
//! - rewrites the CONNECT before passing it on: the password becomes the private secret, and the client id gets
//!   the prefix `u:{user}:` (an empty client id, which asks the server for one, becomes a random `auto-…`), so no
//!   client can take over Vigil's own client id (a client id with `/`, `+`, `#` or
//!   `$`, which rumqttd would refuse in a way that breaks later connections with that id, is refused here);
//! - checks every PUBLISH (and the CONNECT's last will) against the topic rights below, and closes the connection
//!   of a client that publishes where it may not. The message never reaches the broker, so no subscriber gets it.
//!
//! Topic rights on the embedded broker:
//! - Vigil itself (the private secret, or `mqtt.username`/`mqtt.password` when set) may publish anywhere.
//! - `nurse` and `admin` may publish only on `{base}/cmd/{bed}/{their own name}` for a configured bed: the topic
//!   names the sender, and the gate pins it to the signed-in account, so the command's actor is the connection's
//!   identity. Which command a role may send is Vigil's rule (`crate::auth::required_role`), answered on `reply/`.
//! - `viewer` may publish nothing.
//! - The loopback demo's anonymous clients may publish only on `{base}/cmd/{bed}` (they act as user `demo`).
//! - Reading ([`Policy::readable`]): every account reads `{base}/status` and `{base}/bed/#` (and
//!   `{mqtt.discovery_prefix}/#` when Home Assistant discovery is on); `nurse` and `admin`
//!   (who send commands) and the demo's anonymous clients also read `{base}/reply/#`; nobody but Vigil reads
//!   `{base}/cmd/#` (who sent what) or anything outside `{base}`. A SUBSCRIBE filter that cannot match any
//!   readable topic gets the SUBACK failure code 0x80 (the others in the same SUBSCRIBE are granted as usual); a
//!   broader filter (`{base}/#`) is granted, and each message the broker sends on it is delivered only when its
//!   topic is readable: the gate acknowledges the others to the broker itself (PUBACK, or PUBREC then PUBCOMP), so
//!   the client never sees them. It sends those acknowledgements in delivery order, after the client's own for
//!   every earlier message ([`AckQueue`]): rumqttd closes a connection whose acknowledgements come out of order,
//!   and the client would miss whatever was published until it reconnected.
//!
//! Limits: at most [`MAX_CLIENTS`] client connections at once (more are closed at accept, so Vigil's own
//! connection, which never waits for a slot, keeps working); packets over [`super::broker::MAX_PAYLOAD_BYTES`] plus
//! headers close the connection; publishes are possible only on the bounded set of command topics, so clients
//! cannot grow the broker's memory with new topics.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::auth::Lockout;
use crate::config::{Role, UserConfig};

/// How many client connections the gate serves at once.
pub const MAX_CLIENTS: usize = 256;
/// A refused sign-in waits this long before its CONNACK.
pub const FAILURE_DELAY: Duration = Duration::from_secs(1);
/// A client must send its CONNECT within this time.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest packet the gate forwards (payload limit plus room for topic and properties).
pub const MAX_PACKET_BYTES: usize = super::broker::MAX_PAYLOAD_BYTES + 64 * 1024;

/// CONNACK return codes (MQTT 3.1.1, 3.2.2.3).
const UNACCEPTABLE_PROTOCOL: u8 = 1;
const IDENTIFIER_REJECTED: u8 = 2;
const BAD_CREDENTIALS: u8 = 4;
const NOT_AUTHORISED: u8 = 5;

/// Who a connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rights {
    /// Vigil itself: publishes everywhere.
    Service,
    /// A `[[users]]` account.
    User {
        /// Sign-in name.
        name: String,
        /// Role.
        role: Role,
    },
    /// An anonymous client of the loopback demo.
    Demo,
}

/// What the gate needs to decide.
pub(crate) struct Policy {
    /// `{prefix}/{site}/{ward}`.
    pub base: String,
    /// `mqtt.discovery_prefix`: Home Assistant discovery configs, readable by every account like the bed data.
    pub discovery: Option<String>,
    /// Configured bed ids.
    pub beds: HashSet<String>,
    /// `[[users]]`.
    pub users: Vec<UserConfig>,
    /// Anonymous clients allowed (the loopback demo).
    pub demo: bool,
    /// Accounts with Vigil's own rights: the private secret and the configured `mqtt.username`/`mqtt.password`.
    pub service: Vec<(String, String)>,
    /// The private broker.
    pub inner: SocketAddr,
    /// The password the private broker accepts.
    pub secret: String,
}

impl Policy {
    /// Whether `rights` may publish on `topic`.
    pub fn may_publish(&self, rights: &Rights, topic: &str) -> bool {
        let Some(rest) = topic.strip_prefix(&self.base).and_then(|t| t.strip_prefix("/cmd/")) else {
            return matches!(rights, Rights::Service);
        };
        match rights {
            Rights::Service => true,
            Rights::User { name, role } => {
                *role >= Role::Nurse
                    && rest.split_once('/').is_some_and(|(bed, user)| self.beds.contains(bed) && user == name)
            }
            Rights::Demo => self.beds.contains(rest),
        }
    }

    /// The filters an account may read through (`None`: everything, Vigil itself).
    pub fn readable(&self, rights: &Rights) -> Option<Vec<String>> {
        let base = &self.base;
        let mut filters = vec![format!("{base}/status"), format!("{base}/bed/#")];
        if let Some(prefix) = &self.discovery {
            filters.push(format!("{}/#", prefix.trim_end_matches('/')));
        }
        match rights {
            Rights::Service => return None,
            Rights::User { role, .. } if *role < Role::Nurse => {}
            Rights::User { .. } | Rights::Demo => filters.push(format!("{base}/reply/#")),
        }
        Some(filters)
    }

    fn service(&self, user: &str, password: &[u8]) -> bool {
        // Compare every account in constant time; a match anywhere wins.
        let mut found = false;
        for (u, p) in &self.service {
            let ok: bool = (u.as_bytes().ct_eq(user.as_bytes()) & p.as_bytes().ct_eq(password)).into();
            found |= ok;
        }
        found
    }
}

/// Counters, for logs and the status page.
#[derive(Debug, Default)]
pub struct GateStats {
    /// Clients refused at CONNECT (no or wrong credentials, locked out, wrong protocol).
    pub refused_connects: AtomicU64,
    /// Connections closed for publishing where they may not.
    pub refused_publishes: AtomicU64,
    /// Connections closed at accept because [`MAX_CLIENTS`] were open.
    pub refused_full: AtomicU64,
    /// Subscription filters refused (SUBACK 0x80) because they cannot match any topic the account may read.
    pub refused_subscriptions: AtomicU64,
}

struct Gate {
    policy: Policy,
    clients: Arc<Semaphore>,
    lockout: Lockout,
    stats: Arc<GateStats>,
}

/// Serves client connections on `listener` until the process ends.
pub(crate) async fn serve(listener: std::net::TcpListener, policy: Policy, stats: Arc<GateStats>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let gate =
        Arc::new(Gate { policy, clients: Arc::new(Semaphore::new(MAX_CLIENTS)), lockout: Lockout::default(), stats });
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "MQTT gate: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let gate = gate.clone();
        tokio::spawn(async move {
            if let Err(e) = gate.client(socket, peer).await {
                tracing::debug!(%peer, error = %e, "MQTT gate: connection ended");
            }
        });
    }
}

/// One packet: the first header byte and the body after the remaining length.
async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut first = [0u8; 1];
    if r.read(&mut first).await? == 0 {
        return Ok(None);
    }
    let mut len: usize = 0;
    for i in 0..4 {
        let b = r.read_u8().await?;
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if len > MAX_PACKET_BYTES {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("packet of {len} bytes is too large")));
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).await?;
            return Ok(Some((first[0], body)));
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "malformed remaining length"))
}

fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(header);
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A parsed MQTT 3.1.1 CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Connect {
    proto: Vec<u8>,
    level: u8,
    flags: u8,
    keep_alive: u16,
    client_id: String,
    will: Option<(String, Vec<u8>)>,
    username: Option<String>,
    password: Option<Vec<u8>>,
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        (self.0.len() >= n).then(|| {
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            a
        })
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n.into())
    }
    fn string(&mut self) -> Option<String> {
        self.bytes().and_then(|b| std::str::from_utf8(b).ok()).map(str::to_owned)
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

impl Connect {
    /// Parses a CONNECT body; `Err(code)` is the CONNACK code to refuse it with.
    pub fn parse(body: &[u8]) -> Result<Connect, u8> {
        let mut c = Cursor(body);
        let proto = c.bytes().ok_or(UNACCEPTABLE_PROTOCOL)?.to_vec();
        let level = c.u8().ok_or(UNACCEPTABLE_PROTOCOL)?;
        if proto != b"MQTT" || level != 4 {
            return Err(UNACCEPTABLE_PROTOCOL);
        }
        let flags = c.u8().ok_or(NOT_AUTHORISED)?;
        let keep_alive = c.u16().ok_or(NOT_AUTHORISED)?;
        let client_id = c.string().ok_or(NOT_AUTHORISED)?;
        let will = if flags & 0x04 != 0 {
            Some((c.string().ok_or(NOT_AUTHORISED)?, c.bytes().ok_or(NOT_AUTHORISED)?.to_vec()))
        } else {
            None
        };
        let username = if flags & 0x80 != 0 { Some(c.string().ok_or(NOT_AUTHORISED)?) } else { None };
        let password = if flags & 0x40 != 0 { Some(c.bytes().ok_or(NOT_AUTHORISED)?.to_vec()) } else { None };
        Ok(Connect { proto, level, flags, keep_alive, client_id, will, username, password })
    }

    /// The CONNECT body with `client_id`, `username` and `password` replaced.
    fn encode(&self, client_id: &str, username: &str, password: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, &self.proto);
        out.push(self.level);
        out.push((self.flags & 0b0011_1110) | 0x80 | 0x40);
        out.extend_from_slice(&self.keep_alive.to_be_bytes());
        put_bytes(&mut out, client_id.as_bytes());
        if let Some((topic, msg)) = &self.will {
            put_bytes(&mut out, topic.as_bytes());
            put_bytes(&mut out, msg);
        }
        put_bytes(&mut out, username.as_bytes());
        put_bytes(&mut out, password);
        out
    }
}

/// A complete clean-session MQTT 3.1.1 CONNECT packet, keep-alive 10 s.
pub(crate) fn connect_packet(client_id: &str, username: &str, password: &[u8]) -> Vec<u8> {
    let c = Connect {
        proto: b"MQTT".to_vec(),
        level: 4,
        flags: 0x02,
        keep_alive: 10,
        client_id: String::new(),
        will: None,
        username: None,
        password: None,
    };
    frame(0x10, &c.encode(client_id, username, password))
}

/// The topic of a PUBLISH body.
fn publish_topic(body: &[u8]) -> Option<&str> {
    let mut c = Cursor(body);
    std::str::from_utf8(c.bytes()?).ok()
}

/// At most 128 characters of attacker-chosen text, with control characters escaped, for a log line.
fn printable(s: &str) -> String {
    s.chars().take(128).flat_map(char::escape_debug).collect()
}

impl Gate {
    async fn client(self: Arc<Self>, mut socket: TcpStream, peer: SocketAddr) -> io::Result<()> {
        let Ok(_slot) = self.clients.clone().try_acquire_owned() else {
            self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, max = MAX_CLIENTS, "MQTT gate: too many connections, closing this one");
            return Ok(());
        };
        let _ = socket.set_nodelay(true);
        let first = tokio::time::timeout(CONNECT_TIMEOUT, read_packet(&mut socket))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no CONNECT within 10 s"))??;
        let Some((header, body)) = first else { return Ok(()) };
        if header >> 4 != 1 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the first packet is not CONNECT"));
        }
        let connect = match Connect::parse(&body) {
            Ok(c) => c,
            Err(code) => return self.refuse(&mut socket, peer, None, code, "not an MQTT 3.1.1 CONNECT").await,
        };
        if connect.client_id.len() > 128 || connect.client_id.contains(['/', '+', '#', '$']) {
            let why = "client id longer than 128 bytes or with '/', '+', '#' or '$'";
            return self.refuse(&mut socket, peer, connect.username.as_deref(), IDENTIFIER_REJECTED, why).await;
        }
        let rights = match self.sign_in(&connect, peer.ip()).await {
            Ok(r) => r,
            Err((code, why)) => {
                return self.refuse(&mut socket, peer, connect.username.as_deref(), code, why).await;
            }
        };
        if let Some((topic, _)) = &connect.will {
            if !self.policy.may_publish(&rights, topic) {
                let why = "its last will is on a topic it may not publish on";
                return self.refuse(&mut socket, peer, connect.username.as_deref(), NOT_AUTHORISED, why).await;
            }
        }
        // An empty client id asks the server for one (MQTT 3.1.1, 3.1.3.1; mosquitto_pub and mosquitto_sub send
        // it): each such connection gets its own random id, or two of them would take over each other's session.
        let own_id = if connect.client_id.is_empty() {
            if connect.flags & 0x02 == 0 {
                let why = "an empty client id needs a clean session";
                return self.refuse(&mut socket, peer, connect.username.as_deref(), IDENTIFIER_REJECTED, why).await;
            }
            format!("auto-{}", &crate::dashboard::auth::random_token()[..16])
        } else {
            connect.client_id.clone()
        };
        let (client_id, username) = match &rights {
            Rights::Service => (connect.client_id.clone(), connect.username.clone().unwrap_or_default()),
            Rights::User { name, .. } => (format!("u:{name}:{own_id}"), name.clone()),
            Rights::Demo => (format!("u:demo:{own_id}"), "demo".to_owned()),
        };
        let who = match &rights {
            Rights::Service => "vigil".to_owned(),
            Rights::User { name, .. } => name.clone(),
            Rights::Demo => "demo".to_owned(),
        };
        let mut inner = TcpStream::connect(self.policy.inner).await?;
        let _ = inner.set_nodelay(true);
        inner.write_all(&frame(header, &connect.encode(&client_id, &username, self.policy.secret.as_bytes()))).await?;
        if rights != Rights::Service {
            tracing::info!(%peer, user = %printable(&who), "MQTT client signed in");
        }
        let readable = self.policy.readable(&rights);
        let (from_client, to_client) = socket.into_split();
        let mut from_client = tokio::io::BufReader::new(from_client);
        let (from_broker, to_broker) = inner.into_split();
        let relay = Relay {
            to_client: tokio::sync::Mutex::new(to_client),
            to_broker: tokio::sync::Mutex::new(ToBroker {
                socket: to_broker,
                delivered: AckQueue::default(),
                released: AckQueue::default(),
            }),
            readable,
            held: std::sync::Mutex::new(Held::default()),
        };
        let downstream = relay.downstream(tokio::io::BufReader::new(from_broker));
        let upstream = async {
            while let Some((header, body)) = read_packet(&mut from_client).await? {
                match header >> 4 {
                    1 => return Err(io::Error::new(io::ErrorKind::InvalidData, "a second CONNECT")),
                    3 => {
                        let topic = publish_topic(&body).unwrap_or("");
                        if !self.policy.may_publish(&rights, topic) {
                            self.stats.refused_publishes.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                %peer,
                                user = %printable(&who),
                                topic = %printable(topic),
                                "MQTT gate: publish refused (no right to this topic), closing the connection"
                            );
                            return Ok(());
                        }
                    }
                    8 => {
                        let Some(subscribe) = relay.subscribe(&body) else {
                            return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed SUBSCRIBE"));
                        };
                        if !subscribe.refused.is_empty() {
                            self.stats
                                .refused_subscriptions
                                .fetch_add(subscribe.refused.len() as u64, Ordering::Relaxed);
                            let shown: Vec<String> = subscribe.refused.iter().map(|f| printable(f)).collect();
                            tracing::warn!(%peer, user = %printable(&who), filters = ?shown, "MQTT gate: subscription refused (no right to read these topics)");
                        }
                        match subscribe.forward {
                            Some(body) => relay.to_broker.lock().await.send(&frame(header, &body)).await?,
                            None => relay.to_client.lock().await.write_all(&subscribe.suback).await?,
                        }
                        continue;
                    }
                    // PUBACK, PUBREC, PUBCOMP: the gate's own acknowledgements that waited for this one follow it.
                    4 | 5 | 7 if body.len() >= 2 => {
                        let id = u16::from_be_bytes([body[0], body[1]]);
                        let mut out = frame(header, &body);
                        let mut to_broker = relay.to_broker.lock().await;
                        match header >> 4 {
                            7 => to_broker.released.acknowledged(id, &mut out),
                            _ => to_broker.delivered.acknowledged(id, &mut out),
                        }
                        to_broker.send(&out).await?;
                        continue;
                    }
                    _ => {}
                }
                relay.to_broker.lock().await.send(&frame(header, &body)).await?;
            }
            Ok::<(), io::Error>(())
        };
        tokio::select! {
            r = downstream => r,
            r = upstream => r,
        }
    }

    async fn refuse(
        &self,
        socket: &mut TcpStream,
        peer: SocketAddr,
        user: Option<&str>,
        code: u8,
        why: &str,
    ) -> io::Result<()> {
        self.stats.refused_connects.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, user = %printable(user.unwrap_or("")), reason = why, "MQTT client refused");
        socket.write_all(&[0x20, 0x02, 0x00, code]).await?;
        socket.shutdown().await
    }

    async fn sign_in(&self, c: &Connect, ip: IpAddr) -> Result<Rights, (u8, &'static str)> {
        let Some(user) = c.username.as_deref() else {
            return if self.policy.demo { Ok(Rights::Demo) } else { Err((NOT_AUTHORISED, "no username")) };
        };
        let password = c.password.as_deref().unwrap_or_default();
        if self.policy.service(user, password) {
            return Ok(Rights::Service);
        }
        let Ok(attempt) = self.lockout.begin(user, ip) else {
            tokio::time::sleep(FAILURE_DELAY).await;
            return Err((BAD_CREDENTIALS, "locked out after repeated failures"));
        };
        let Ok(password) = std::str::from_utf8(password) else {
            tokio::time::sleep(FAILURE_DELAY).await;
            return Err((BAD_CREDENTIALS, "unknown user or wrong password"));
        };
        let (users, user, password) = (self.policy.users.clone(), user.to_owned(), password.to_owned());
        let checked = crate::auth::HashPool::shared()
            .run(move || crate::auth::authenticate(&users, &user, &password).map(|u| (u.name.clone(), u.role)))
            .await;
        match checked {
            None => Err((NOT_AUTHORISED, "busy: too many sign-ins at once")),
            Some(Ok((name, role))) => {
                attempt.succeeded();
                Ok(Rights::User { name, role })
            }
            _ => {
                tokio::time::sleep(FAILURE_DELAY).await;
                Err((BAD_CREDENTIALS, "unknown user or wrong password"))
            }
        }
    }
}

/// What the gate holds back for one connection.
#[derive(Default)]
struct Held {
    /// SUBSCRIBEs forwarded without some of their filters: packet id → for each filter of the original, `true`
    /// where it was refused (its SUBACK code becomes 0x80).
    partial: std::collections::HashMap<u16, Vec<bool>>,
    /// QoS 2 messages withheld from the client, whose PUBREL the gate answers itself.
    withheld_qos2: HashSet<u16>,
}

/// The broker's acknowledgements of one kind (PUBACK and PUBREC, or PUBCOMP) that the client still owes, in the
/// order rumqttd expects them (`Outgoing::register_ack` in rumqttd 0.20 disconnects on any other order).
#[derive(Debug, Default)]
struct AckQueue(VecDeque<(u16, Option<[u8; 4]>)>);

impl AckQueue {
    /// A message sent on to the client, which acknowledges it itself.
    fn forwarded(&mut self, id: u16) {
        self.0.push_back((id, None));
    }

    /// A message withheld from the client: the gate's own `ack` goes into `out` once every earlier one is sent.
    fn withheld(&mut self, id: u16, ack: [u8; 4], out: &mut Vec<u8>) {
        self.0.push_back((id, Some(ack)));
        self.release(out);
    }

    /// The client acknowledged `id` (its packet is already in `out`): the withheld ones it was waiting for follow.
    fn acknowledged(&mut self, id: u16, out: &mut Vec<u8>) {
        if let Some(i) = self.0.iter().position(|(held, ack)| *held == id && ack.is_none()) {
            self.0.remove(i);
        }
        self.release(out);
    }

    fn release(&mut self, out: &mut Vec<u8>) {
        while let Some((_, Some(ack))) = self.0.front() {
            out.extend_from_slice(ack);
            self.0.pop_front();
        }
    }
}

/// The connection to the broker, with what the client owes it.
struct ToBroker {
    socket: tokio::net::tcp::OwnedWriteHalf,
    /// PUBACK (QoS 1) and PUBREC (QoS 2): rumqttd keeps both in one in-flight queue.
    delivered: AckQueue,
    /// PUBCOMP, for the PUBRELs it sent.
    released: AckQueue,
}

impl ToBroker {
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.socket.write_all(bytes).await
    }
}

/// One client connection's two directions, with the read rights applied.
struct Relay {
    to_client: tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>,
    to_broker: tokio::sync::Mutex<ToBroker>,
    /// `None`: reads everything.
    readable: Option<Vec<String>>,
    held: std::sync::Mutex<Held>,
}

/// A SUBSCRIBE after the read rights: what to forward (`None`: nothing is granted, answer `suback` at once).
struct Subscribe {
    forward: Option<Vec<u8>>,
    suback: Vec<u8>,
    refused: Vec<String>,
}

impl Relay {
    fn may_read(&self, topic: &str) -> bool {
        self.readable.as_ref().is_none_or(|r| r.iter().any(|f| super::filter::matches(f, topic)))
    }

    fn may_subscribe(&self, filter: &str) -> bool {
        self.readable.as_ref().is_none_or(|r| r.iter().any(|f| super::filter::overlap(f, filter)))
    }

    /// Splits a SUBSCRIBE body into granted and refused filters; `None` when it is malformed.
    fn subscribe(&self, body: &[u8]) -> Option<Subscribe> {
        let mut c = Cursor(body);
        let id = c.u16()?;
        let mut granted = id.to_be_bytes().to_vec();
        let (mut mask, mut refused) = (Vec::new(), Vec::new());
        while !c.0.is_empty() {
            let filter = c.string()?;
            let qos = c.u8()?;
            let ok = self.may_subscribe(&filter);
            mask.push(!ok);
            if ok {
                put_bytes(&mut granted, filter.as_bytes());
                granted.push(qos);
            } else {
                refused.push(filter);
            }
        }
        if mask.is_empty() {
            return None;
        }
        let mut codes = id.to_be_bytes().to_vec();
        codes.extend(mask.iter().map(|_| 0x80));
        let suback = frame(0x90, &codes);
        if refused.len() == mask.len() {
            return Some(Subscribe { forward: None, suback, refused });
        }
        if !refused.is_empty() {
            self.held.lock().unwrap_or_else(|e| e.into_inner()).partial.insert(id, mask);
        }
        Some(Subscribe { forward: Some(granted), suback, refused })
    }

    /// Broker to client, packet by packet: messages on unreadable topics are acknowledged here and dropped, and
    /// SUBACKs of partly refused SUBSCRIBEs get their 0x80 codes back.
    /// Forwards the broker's packets to the client, minus what it may not read. rumqttd sets no TCP_NODELAY on
    /// its sockets, so each small publish after the first waits for this side's ACK; acknowledging at once
    /// (TCP_QUICKACK, which the kernel clears again after a while, hence after every packet) keeps that wait at
    /// a loopback round trip instead of the delayed-ACK timer's 40 ms.
    async fn downstream(&self, mut from_broker: tokio::io::BufReader<OwnedReadHalf>) -> io::Result<()> {
        while let Some((header, body)) = read_packet(&mut from_broker).await? {
            let _ = socket2::SockRef::from(from_broker.get_ref().as_ref()).set_tcp_quickack(true);
            match header >> 4 {
                3 => {
                    let qos = (header >> 1) & 0x03;
                    let topic_len = body.get(..2).map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
                    let id = body.get(2 + topic_len..4 + topic_len).map(|b| u16::from_be_bytes([b[0], b[1]]));
                    let readable = self.may_read(publish_topic(&body).unwrap_or(""));
                    match (qos, id) {
                        (1 | 2, Some(id)) if readable => self.to_broker.lock().await.delivered.forwarded(id),
                        (1 | 2, Some(id)) => {
                            let [hi, lo] = id.to_be_bytes();
                            let ack = if qos == 1 { [0x40, 0x02, hi, lo] } else { [0x50, 0x02, hi, lo] };
                            if qos == 2 {
                                self.held.lock().unwrap_or_else(|e| e.into_inner()).withheld_qos2.insert(id);
                            }
                            let mut out = Vec::new();
                            let mut to_broker = self.to_broker.lock().await;
                            to_broker.delivered.withheld(id, ack, &mut out);
                            to_broker.send(&out).await?;
                        }
                        _ => {}
                    }
                    if !readable {
                        continue;
                    }
                }
                6 if body.len() == 2 => {
                    let id = u16::from_be_bytes([body[0], body[1]]);
                    let withheld = self.held.lock().unwrap_or_else(|e| e.into_inner()).withheld_qos2.remove(&id);
                    let mut to_broker = self.to_broker.lock().await;
                    if withheld {
                        let mut out = Vec::new();
                        to_broker.released.withheld(id, [0x70, 0x02, body[0], body[1]], &mut out);
                        to_broker.send(&out).await?;
                        continue;
                    }
                    to_broker.released.forwarded(id);
                }
                9 if body.len() >= 2 => {
                    let id = u16::from_be_bytes([body[0], body[1]]);
                    let mask = self.held.lock().unwrap_or_else(|e| e.into_inner()).partial.remove(&id);
                    if let Some(mask) = mask {
                        let mut granted = body[2..].iter();
                        let mut codes = body[..2].to_vec();
                        codes.extend(
                            mask.iter().map(|refused| if *refused { 0x80 } else { *granted.next().unwrap_or(&0x80) }),
                        );
                        self.to_client.lock().await.write_all(&frame(header, &codes)).await?;
                        continue;
                    }
                }
                _ => {}
            }
            self.to_client.lock().await.write_all(&frame(header, &body)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            base: "v/s/w".into(),
            discovery: None,
            beds: HashSet::from(["chair-1".to_owned()]),
            users: Vec::new(),
            demo: false,
            service: vec![("vigil".into(), "s".into())],
            inner: "127.0.0.1:1".parse().unwrap(),
            secret: "s".into(),
        }
    }

    #[test]
    fn users_publish_only_commands_on_their_own_topic_and_viewers_nothing() {
        let p = policy();
        let nina = Rights::User { name: "nina".into(), role: Role::Nurse };
        let victor = Rights::User { name: "victor".into(), role: Role::Viewer };
        assert!(p.may_publish(&nina, "v/s/w/cmd/chair-1/nina"));
        assert!(!p.may_publish(&nina, "v/s/w/cmd/chair-1/ada"), "not under another user's name");
        assert!(!p.may_publish(&nina, "v/s/w/cmd/chair-1"), "not the anonymous demo topic");
        assert!(!p.may_publish(&nina, "v/s/w/cmd/chair-9/nina"), "not for an unknown bed");
        assert!(!p.may_publish(&nina, "v/s/w/bed/chair-1/alarm"));
        assert!(!p.may_publish(&nina, "v/s/w/status"));
        assert!(!p.may_publish(&nina, "elsewhere"));
        assert!(!p.may_publish(&victor, "v/s/w/cmd/chair-1/victor"));
        assert!(p.may_publish(&Rights::Demo, "v/s/w/cmd/chair-1"));
        assert!(!p.may_publish(&Rights::Demo, "v/s/w/bed/chair-1/alarms"));
        assert!(p.may_publish(&Rights::Service, "v/s/w/bed/chair-1/alarm"));
    }

    #[test]
    fn a_connect_is_rewritten_with_the_new_client_id_and_secret_and_keeps_its_will() {
        let c = Connect {
            proto: b"MQTT".to_vec(),
            level: 4,
            flags: 0x02 | 0x04 | 0x80 | 0x40,
            keep_alive: 30,
            client_id: "abc".into(),
            will: Some(("t".into(), b"gone".to_vec())),
            username: Some("nina".into()),
            password: Some(b"pw".to_vec()),
        };
        let again = Connect::parse(&c.encode("u:nina:abc", "nina", b"secret")).unwrap();
        assert_eq!(again.client_id, "u:nina:abc");
        assert_eq!(again.password.as_deref(), Some(&b"secret"[..]));
        assert_eq!(again.will, c.will);
        assert_eq!(again.keep_alive, 30);
        assert_eq!(again.flags & 0x02, 0x02, "clean session kept");
    }

    #[test]
    fn home_assistant_discovery_configs_are_readable_by_every_account_when_enabled() {
        let viewer = Rights::User { name: "victor".into(), role: Role::Viewer };
        assert!(!policy().readable(&viewer).unwrap().iter().any(|f| f.starts_with("homeassistant")));
        let with = Policy { discovery: Some("homeassistant/".into()), ..policy() };
        assert!(with.readable(&viewer).unwrap().contains(&"homeassistant/#".to_owned()));
        assert!(!with.may_publish(&viewer, "homeassistant/sensor/x/config"));
    }

    #[test]
    fn a_withheld_message_is_acknowledged_only_after_the_client_acknowledged_every_earlier_one() {
        let mut q = AckQueue::default();
        let mut out = Vec::new();
        q.forwarded(1);
        q.forwarded(2);
        q.withheld(3, [0x40, 2, 0, 3], &mut out);
        assert!(out.is_empty(), "1 and 2 are still owed by the client");
        q.acknowledged(1, &mut out);
        assert!(out.is_empty());
        q.forwarded(4);
        q.acknowledged(2, &mut out);
        assert_eq!(out, [0x40, 2, 0, 3], "3 follows 2 at once");
        q.withheld(5, [0x40, 2, 0, 5], &mut out);
        assert_eq!(out.len(), 4, "5 waits for 4");
        q.acknowledged(4, &mut out);
        assert_eq!(out[4..], [0x40, 2, 0, 5]);
        q.withheld(6, [0x40, 2, 0, 6], &mut out);
        assert_eq!(out[8..], [0x40, 2, 0, 6], "nothing owed: at once");
        assert!(q.0.is_empty());
    }

    #[test]
    fn service_accounts_match_only_with_both_name_and_password() {
        let p = policy();
        assert!(p.service("vigil", b"s"));
        assert!(!p.service("vigil", b"x"));
        assert!(!p.service("nina", b"s"));
    }
}
