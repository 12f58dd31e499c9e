//! Shared helpers for the MQTT tests: free ports, a real Mosquitto started on a generated config, a real
//! rumqttc subscriber, a fake bed that answers commands like a bed task, and event builders that go through the
//! store and the hub in the order a bed task uses (store first, then hub).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use vigil::config::Config;
use vigil::event::{
    AlarmEvent, AlarmKind, AlarmPhase, AlarmState, BedAlarms, Command, Event, SessionEvent, SessionPhase, VitalValue,
    VitalsUpdate,
};
use vigil::hub::{BedCommand, BedInfo, Hub};
use vigil::store::Store;
use vigil::vitals::{Parameter, ValueStatus};

pub const SITE: &str = "test-site";
pub const WARD: &str = "ward-a";
pub const BASE: &str = "vigil/v1/test-site/ward-a";

/// A port nobody listens on (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts TCP connections on the port.
pub fn wait_for_port(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// The mosquitto binary, or `None` with the reason printed (the caller skips).
pub fn mosquitto_binary() -> Option<PathBuf> {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/local/bin/mosquitto"] {
        if Path::new(p).exists() {
            return Some(p.into());
        }
    }
    if let Ok(out) = Process::new("which").arg("mosquitto").output() {
        let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && !s.is_empty() {
            return Some(s.into());
        }
    }
    skip("mosquitto is not installed (apt-get install mosquitto; CI installs it)");
    None
}

/// Reports a test that cannot run because a dependency is missing. Under `CI=true` that is a failure (CI installs
/// every dependency, so a missing one is a broken pipeline, not a pass). Locally the line goes straight to the
/// process's stderr, past libtest's capture, so `cargo test` shows it next to the test's `ok`.
pub fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("CI=true and a test dependency is missing: {reason}");
    }
    use std::io::Write;
    let name = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr(), "SKIPPED {name}: {reason}");
}

/// A real Mosquitto on a free port with persistence on, started and stopped by the test.
pub struct Mosquitto {
    pub port: u16,
    pub dir: PathBuf,
    binary: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts Mosquitto with `extra` appended to the generated config (listener lines are ours).
    pub fn start(dir: &Path, extra: &str) -> Option<Mosquitto> {
        let binary = mosquitto_binary()?;
        let port = free_port();
        // Mosquitto started as root drops to its own user: let it write its persistence file and read our files.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644));
        }
        let conf = dir.join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\npersistence true\npersistence_location {}/\nautosave_interval 1\n\
             log_dest file {}/mosquitto.log\nlog_type all\nmax_queued_messages 10000\n{extra}\n",
            dir.display(),
            dir.display()
        );
        let text = if extra.contains("allow_anonymous") { text } else { format!("{text}allow_anonymous true\n") };
        std::fs::write(&conf, text).unwrap();
        let mut m = Mosquitto { port, dir: dir.to_path_buf(), binary, child: None };
        m.spawn();
        Some(m)
    }

    fn spawn(&mut self) {
        let child = Process::new(&self.binary)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        assert!(wait_for_port(self.port, Duration::from_secs(10)), "mosquitto listens on {}", self.port);
    }

    /// Stops it with SIGTERM (Mosquitto saves its persistence file) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Process::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Freezes it with SIGSTOP: the TCP connections stay open but nothing is answered (a hung broker).
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            let _ = Process::new("kill").arg("-STOP").arg(child.id().to_string()).status();
        }
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&self) {
        if let Some(child) = &self.child {
            let _ = Process::new("kill").arg("-CONT").arg(child.id().to_string()).status();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A config for tests: one bed `chair-1` (and `chair-2`), the given MQTT section body, the store in `dir`.
pub fn config(dir: &Path, mqtt: &str, extra: &str) -> Arc<Config> {
    let text = format!(
        "[site]\nname = \"{SITE}\"\nward = \"{WARD}\"\n[mqtt]\n{mqtt}\n[store]\npath = \"{}\"\n{extra}\n\
         [[beds]]\nid = \"chair-1\"\n[[beds]]\nid = \"chair-2\"\n",
        dir.join("vigil.db").display()
    );
    Arc::new(Config::parse(&text, "test.toml", dir).unwrap())
}

pub fn hub() -> Arc<Hub> {
    let beds = ["chair-1", "chair-2"]
        .iter()
        .map(|b| BedInfo { id: (*b).into(), label: b.to_string(), profile: "ketamine-chair".into() })
        .collect();
    Hub::new(SITE, WARD, beds)
}

/// A `users` section with a nurse, a viewer and an admin; passwords are the names reversed.
pub fn users() -> String {
    let mut s = String::new();
    for (name, role) in [("nina", "nurse"), ("victor", "viewer"), ("ada", "admin")] {
        let pw: String = name.chars().rev().collect();
        s.push_str(&format!(
            "[[users]]\nname = \"{name}\"\nrole = \"{role}\"\npassword_hash = \"{}\"\n",
            vigil::auth::hash_password(&pw).unwrap()
        ));
    }
    s
}

pub fn alarm_event(bed: &str, alarm_id: &str, seq: u32, bed_seq: u64) -> AlarmEvent {
    let mut evidence = Map::new();
    evidence.insert("window_s".into(), 15.into());
    AlarmEvent {
        time: Utc::now(),
        bed: bed.into(),
        alarm_id: alarm_id.into(),
        seq,
        bed_seq,
        kind: AlarmKind::Threshold,
        source: vigil::event::AlarmSource::Vigil,
        condition: "spo2_low".into(),
        parameter: Some(Parameter::Spo2),
        priority: Priority::High,
        phase: if seq == 1 { AlarmPhase::Start } else { AlarmPhase::Update },
        state: AlarmState::Active,
        value: Some(85.0),
        limit: Some(88.0),
        evidence,
        message: "SpO2 85 < 88".into(),
        by: None,
        audio_paused_until: None,
        test: false,
    }
}

pub use vigil::event::Priority;

/// Appends an alarm event (with the next bed_seq) and its bed snapshot as a bed task would, then announces them.
pub fn emit_alarm(store: &Store, hub: &Hub, bed: &str, alarm_id: &str, seq: u32) -> AlarmEvent {
    let bed_seq = store.next_bed_seq(bed).unwrap();
    let ev = alarm_event(bed, alarm_id, seq, bed_seq);
    let snapshot = BedAlarms { bed: bed.into(), time: ev.time, bed_seq, alarms: vec![ev.clone()] };
    store.append(&[Event::Alarm(ev.clone()), Event::Alarms(snapshot.clone())]).unwrap();
    hub.publish(Event::Alarm(ev.clone()));
    hub.publish(Event::Alarms(snapshot));
    ev
}

pub fn vitals(bed: &str) -> VitalsUpdate {
    let time = Utc::now();
    VitalsUpdate {
        bed: bed.into(),
        time,
        values: vec![
            VitalValue { parameter: Parameter::Spo2, value: Some(97.0), status: ValueStatus::Valid, time },
            VitalValue { parameter: Parameter::Pr, value: None, status: ValueStatus::Unavailable, time },
        ],
        other: Vec::new(),
    }
}

pub fn session(bed: &str, action: &str) -> SessionEvent {
    SessionEvent {
        session_seq: 1,
        time: Utc::now(),
        bed: bed.into(),
        session_id: "s-1".into(),
        action: action.into(),
        phase: SessionPhase::PreInfusion,
        started: Some(Utc::now()),
        infusion_started: None,
        patient: Some("P-042".into()),
        baseline: None,
        detail: None,
        by: Some("nina".into()),
    }
}

/// A fake bed task: acknowledges by emitting an `acknowledged` update of the alarm (stored, then announced).
pub fn fake_bed(hub: Arc<Hub>, store: Store, bed: &str) -> mpsc::Receiver<vigil::event::CommandRequest> {
    let (tx, mut rx) = mpsc::channel::<BedCommand>(8);
    let (seen_tx, seen_rx) = mpsc::channel(16);
    hub.register_bed(bed.into(), tx);
    let bed = bed.to_owned();
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            let _ = seen_tx.send(vigil::event::CommandRequest::clone(&cmd.request)).await;
            let answer = match &cmd.request.command {
                Command::Acknowledge { alarm_id } => {
                    let bed_seq = store.next_bed_seq(&bed).unwrap();
                    let mut ev = alarm_event(&bed, alarm_id.as_deref().unwrap_or("chair-1-a1"), 2, bed_seq);
                    ev.phase = AlarmPhase::Update;
                    ev.state = AlarmState::Acknowledged;
                    ev.by = Some(cmd.request.actor.clone());
                    let events = vec![Event::Alarm(ev)];
                    store.append(&events).unwrap();
                    for e in &events {
                        hub.publish(e.clone());
                    }
                    Ok(events)
                }
                Command::SessionEnd => Err(vigil::hub::CommandError::Refused("no session is running".into())),
                _ => Ok(Vec::new()),
            };
            // Like the real bed task: every command a bed answers is recorded once, by the bed.
            let outcome = answer.as_ref().map(|_| ()).map_err(|e| e.to_string());
            store.record_action(chrono::Utc::now(), &cmd.request.actor, &bed, &cmd.request.command, outcome).unwrap();
            let _ = cmd.reply.send(answer);
        }
    });
    seen_rx
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub retain: bool,
    pub json: Value,
}

/// A real MQTT subscriber (rumqttc) on `filter`, QoS 1.
pub struct Subscriber {
    pub client: AsyncClient,
    pub rx: mpsc::UnboundedReceiver<Msg>,
    pub backlog: Vec<Msg>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// `persistent`: clean_session false with a fixed id, so the broker queues QoS 1 messages while it is away.
    pub async fn connect(port: u16, id: &str, filter: &str, persistent: bool) -> Subscriber {
        Subscriber::connect_as(port, id, filter, persistent, None).await
    }

    /// [`Subscriber::connect`] signed in as `creds` (name, password).
    pub async fn connect_as(
        port: u16,
        id: &str,
        filter: &str,
        persistent: bool,
        creds: Option<(&str, &str)>,
    ) -> Subscriber {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5)).set_clean_session(!persistent).set_max_packet_size(1 << 20, 1 << 20);
        if let Some((u, p)) = creds {
            o.set_credentials(u, p);
        }
        let (client, mut el) = AsyncClient::new(o, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = mpsc::channel(1);
        let c2 = client.clone();
        let filter = filter.to_owned();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        let _ = c2.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        let json = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        let _ = tx.send(Msg { topic: p.topic.clone(), retain: p.retain, json });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx.recv()).await.expect("subscribed within 10 s");
        Subscriber { client, rx, backlog: Vec::new(), task }
    }

    /// The first message (received earlier and not yet taken, or arriving within `within`) whose topic ends with
    /// `suffix` and that satisfies `pred`. Other messages are kept for later calls.
    pub async fn expect(&mut self, suffix: &str, within: Duration, pred: impl Fn(&Msg) -> bool) -> Msg {
        let matches = |m: &Msg| m.topic.ends_with(suffix) && pred(m);
        if let Some(i) = self.backlog.iter().position(matches) {
            return self.backlog.remove(i);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) if matches(&m) => return m,
                Ok(Some(m)) => self.backlog.push(m),
                _ => panic!("no message on *{suffix} matching within {within:?}; got {:#?}", self.backlog),
            }
        }
    }

    /// Everything received within `d`.
    pub async fn collect_for(&mut self, d: Duration) -> Vec<Msg> {
        let deadline = tokio::time::Instant::now() + d;
        let mut out = std::mem::take(&mut self.backlog);
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            out.push(m);
        }
        out
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes one message with a throwaway client and waits for the PUBACK.
pub async fn publish_once(port: u16, topic: &str, payload: &str) {
    publish_once_as(port, None, topic, payload).await
}

/// [`publish_once`] signed in as `creds` (name, password).
pub async fn publish_once_as(port: u16, creds: Option<(&str, &str)>, topic: &str, payload: &str) {
    let mut o = MqttOptions::new(format!("pub-{}", rand_suffix()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    let (client, mut el) = AsyncClient::new(o, 10);
    client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).await.unwrap();
    // Stops at the PUBACK, or at the first connection error (the embedded broker's gate closes the connection of
    // a client that publishes where it may not): no reconnect, so nothing is sent twice.
    let acked = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match el.poll().await {
                Ok(MqttEvent::Incoming(Packet::PubAck(_))) => return true,
                Err(_) => return false,
                Ok(_) => {}
            }
        }
    })
    .await;
    if acked == Ok(true) {
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
    }
}

/// The nurse's, viewer's and admin's broker credentials from [`users`].
pub const NINA: Option<(&str, &str)> = Some(("nina", "anin"));
pub const VICTOR: Option<(&str, &str)> = Some(("victor", "rotciv"));
pub const ADA: Option<(&str, &str)> = Some(("ada", "ada"));

/// The CONNACK a client gets (or the error instead), signed in as `creds`.
pub async fn connack(port: u16, creds: Option<(&str, &str)>) -> Result<rumqttc::ConnectReturnCode, String> {
    let mut o = MqttOptions::new(format!("probe-{}", rand_suffix()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    let (_c, mut el) = AsyncClient::new(o, 10);
    match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
        Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(a)))) => Ok(a.code),
        Ok(Err(rumqttc::ConnectionError::ConnectionRefused(code))) => Ok(code),
        other => Err(format!("{other:?}")),
    }
}

pub fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos() as u64 ^ (std::process::id() as u64) << 32
}

/// A tmpfs of a fixed size mounted for the test (needs root or CAP_SYS_ADMIN); `None` with a visible skip
/// otherwise. Unmounted (lazily) when dropped.
pub struct SmallDisk {
    pub dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Process::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)");
            return None;
        }
        Some(SmallDisk { dir })
    }

    /// Fills the file system to the last byte with `filler`.
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.path().join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&[0u8]).is_ok() {}
        let _ = f.sync_all();
    }

    /// Frees the space again.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// A hand-driven MQTT 3.1.1 client on a raw socket: it acknowledges nothing unless told to, so a test controls
/// exactly which acknowledgements the broker has seen.
pub struct RawClient {
    socket: tokio::net::TcpStream,
}

/// One MQTT packet: its first byte and its body.
#[derive(Debug)]
pub struct RawPacket {
    pub header: u8,
    pub body: Vec<u8>,
}

impl RawPacket {
    /// A PUBLISH's topic and, for QoS 1 and 2, its packet id.
    pub fn publish(&self) -> Option<(String, Option<u16>)> {
        if self.header >> 4 != 3 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([self.body[0], self.body[1]]));
        let topic = String::from_utf8_lossy(&self.body[2..2 + len]).into_owned();
        let id = ((self.header >> 1) & 3 > 0).then(|| u16::from_be_bytes([self.body[2 + len], self.body[3 + len]]));
        Some((topic, id))
    }
}

fn raw_frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut n = body.len();
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn raw_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl RawClient {
    /// Connects anonymously with a clean session and subscribes to `filter` at QoS 1; returns after the SUBACK.
    pub async fn subscribe(port: u16, client_id: &str, filter: &str) -> RawClient {
        use tokio::io::AsyncWriteExt;
        let socket = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut c = RawClient { socket };
        let mut connect = Vec::new();
        raw_string(&mut connect, "MQTT");
        connect.extend_from_slice(&[4, 0x02, 0, 30]);
        raw_string(&mut connect, client_id);
        c.socket.write_all(&raw_frame(0x10, &connect)).await.unwrap();
        let ack = c.next(Duration::from_secs(10)).await.expect("a CONNACK");
        assert_eq!((ack.header, ack.body.as_slice()), (0x20, &[0u8, 0][..]), "connection accepted");
        let mut sub = vec![0, 1];
        raw_string(&mut sub, filter);
        sub.push(1);
        c.socket.write_all(&raw_frame(0x82, &sub)).await.unwrap();
        c
    }

    /// The next packet within `within`; `None` when the connection closed or nothing came.
    pub async fn next(&mut self, within: Duration) -> Option<RawPacket> {
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(within, async {
            let header = self.socket.read_u8().await.ok()?;
            let (mut len, mut shift) = (0usize, 0);
            loop {
                let b = self.socket.read_u8().await.ok()?;
                len |= usize::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            let mut body = vec![0; len];
            self.socket.read_exact(&mut body).await.ok()?;
            Some(RawPacket { header, body })
        })
        .await
        .ok()
        .flatten()
    }

    /// Sends PUBACK for `id`.
    pub async fn puback(&mut self, id: u16) {
        use tokio::io::AsyncWriteExt;
        let [hi, lo] = id.to_be_bytes();
        self.socket.write_all(&[0x40, 2, hi, lo]).await.unwrap();
    }

    /// Sends PINGREQ and waits for the PINGRESP, taking every packet before it; `false` when the connection is gone.
    pub async fn ping(&mut self) -> bool {
        use tokio::io::AsyncWriteExt;
        if self.socket.write_all(&[0xc0, 0]).await.is_err() {
            return false;
        }
        while let Some(p) = self.next(Duration::from_secs(5)).await {
            if p.header == 0xd0 {
                return true;
            }
        }
        false
    }
}
