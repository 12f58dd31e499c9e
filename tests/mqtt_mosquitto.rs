//! The delivery guarantees against a real Mosquitto that each test starts on a free port with a generated
//! config (persistence on). Every test skips, saying why, when `mosquitto` (or `openssl`) is not installed.

mod mqtt_support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mqtt_support::*;
use tokio_util::sync::CancellationToken;
use vigil::mqtt::{self, LinkState};
use vigil::store::Store;

const T: Duration = Duration::from_secs(15);

fn external(port: u16, client_id: &str, more: &str) -> String {
    format!(
        "mode = \"external\"\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"{client_id}\"\nkeep_alive_s = 2\n{more}"
    )
}

/// Captured log lines of this test binary (a global subscriber: tasks run on other threads).
fn log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("vigil=debug")
            .with_writer(move || LogWriter(w.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);
impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        std::io::stderr().write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks exactly-once after de-duplication and contiguous `bed_seq` per bed; returns how many duplicates arrived.
fn check_exactly_once(msgs: &[Msg], expected_per_bed: &BTreeMap<String, u64>) -> usize {
    let mut unique = HashSet::new();
    let mut per_bed: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut dups = 0;
    for m in msgs.iter().filter(|m| m.topic.ends_with("/alarm")) {
        let key = (m.json["alarm_id"].as_str().unwrap().to_owned(), m.json["seq"].as_u64().unwrap());
        if unique.insert(key) {
            per_bed
                .entry(m.json["bed"].as_str().unwrap().to_owned())
                .or_default()
                .insert(m.json["bed_seq"].as_u64().unwrap());
        } else {
            dups += 1;
        }
    }
    for (bed, n) in expected_per_bed {
        let got = per_bed.get(bed).cloned().unwrap_or_default();
        let want: BTreeSet<u64> = (1..=*n).collect();
        assert_eq!(got, want, "bed {bed}: every bed_seq from 1 to {n} exactly once after de-duplication");
    }
    dups
}

async fn collect_alarms(sub: &mut Subscriber, want: usize, within: Duration) -> Vec<Msg> {
    let mut msgs = std::mem::take(&mut sub.backlog);
    let deadline = tokio::time::Instant::now() + within;
    let unique = |msgs: &Vec<Msg>| {
        msgs.iter()
            .filter(|m| m.topic.ends_with("/alarm"))
            .map(|m| (m.json["alarm_id"].to_string(), m.json["seq"].to_string()))
            .collect::<HashSet<_>>()
            .len()
    };
    while unique(&msgs) < want {
        match tokio::time::timeout_at(deadline, sub.rx.recv()).await {
            Ok(Some(m)) => msgs.push(m),
            _ => break,
        }
    }
    msgs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_alarm_event_arrives_exactly_once_after_deduplication_with_contiguous_bed_seq_across_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut mosq) = Mosquitto::start(dir.path(), "") else { return };
    let cfg = config(dir.path(), &external(mosq.port, "vigil-m1", ""), "");
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), cancel.clone()).unwrap();
    let mut sub = Subscriber::connect(mosq.port, "it-m1", &format!("{BASE}/bed/+/alarm"), true).await;

    let total = 60u32;
    let mut per_bed = BTreeMap::new();
    for i in 0..total {
        let bed = if i % 2 == 0 { "chair-1" } else { "chair-2" };
        emit_alarm(&store, &hub, bed, &format!("{bed}-a{}", i / 10), i % 10 + 1);
        *per_bed.entry(bed.to_owned()).or_insert(0u64) += 1;
        if i == 20 {
            // Mid-stream: the broker goes away for a while and comes back (persistence keeps the subscriber's
            // session and its queued messages).
            mosq.stop();
        }
        if i == 40 {
            mosq.restart();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let msgs = collect_alarms(&mut sub, total as usize, Duration::from_secs(40)).await;
    let dups = check_exactly_once(&msgs, &per_bed);
    eprintln!("received {} alarm messages, {dups} duplicates removed by (alarm_id, seq)", msgs.len());
    let deadline = tokio::time::Instant::now() + T;
    while store.pending_count().unwrap() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.pending_count().unwrap(), 0, "every outbox row acknowledged after the restart");
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_ten_times_the_in_flight_window_is_pulled_by_the_acknowledgements_not_only_by_the_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mosq) = Mosquitto::start(dir.path(), "") else { return };
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    // Stored while no publisher runs, as after a long broker outage: 640 rows, ten in-flight windows of 64.
    let total = 640u32;
    for i in 0..total {
        emit_alarm(&store, &hub, "chair-1", &format!("chair-1-a{}", i / 2), i % 2 + 1);
    }
    let mut sub = Subscriber::connect(mosq.port, "it-m-backlog", &format!("{BASE}/bed/+/alarm"), true).await;
    let cfg = config(dir.path(), &external(mosq.port, "vigil-m-backlog", ""), "");
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), cancel.clone()).unwrap();
    // The once-a-second heartbeat alone sends one window a second (ten seconds); each window's PUBACKs send the
    // next one at once.
    let msgs = collect_alarms(&mut sub, total as usize, Duration::from_secs(5)).await;
    check_exactly_once(&msgs, &BTreeMap::from([("chair-1".to_owned(), u64::from(total))]));
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

/// Not a test on its own: the publisher process the SIGKILL test starts and kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process for publisher_killed_with_sigkill…; run by that test"]
async fn helper_publisher_process() {
    let (Ok(dir), Ok(port)) = (std::env::var("VIGIL_TEST_DIR"), std::env::var("VIGIL_TEST_PORT")) else {
        eprintln!("helper: needs VIGIL_TEST_DIR and VIGIL_TEST_PORT");
        return;
    };
    let dir = Path::new(&dir);
    let cfg = config(dir, &external(port.parse().unwrap(), "vigil-killed", ""), "");
    let store = Store::open(&dir.join("vigil.db")).unwrap();
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub(), store, cancel).unwrap();
    let _ = m.task.await;
}

/// The helper process; killed (SIGKILL) when dropped, so a failing test leaves nothing behind.
struct Helper(std::process::Child);

impl Helper {
    fn sigkill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.sigkill();
    }
}

fn start_helper(dir: &Path, port: u16) -> Helper {
    Helper(
        Process::new(std::env::current_exe().unwrap())
            .args(["--exact", "helper_publisher_process", "--ignored", "--nocapture", "--test-threads=1"])
            .env("VIGIL_TEST_DIR", dir)
            .env("VIGIL_TEST_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_killed_with_sigkill_leaves_its_last_will_and_after_a_restart_replays_the_outbox_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mosq) = Mosquitto::start(dir.path(), "") else { return };
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let beds_hub = hub(); // stands in for the bed tasks: nothing listens to it
    let mut sub = Subscriber::connect(mosq.port, "it-m2", &format!("{BASE}/#"), true).await;

    let mut child = start_helper(dir.path(), mosq.port);
    let online = sub.expect("/status", T, |m| m.json["state"] == "online").await;
    let seq = online.json["seq"].as_u64().unwrap();

    let total = 30u32;
    for i in 0..total {
        emit_alarm(&store, &beds_hub, "chair-1", &format!("chair-1-a{}", i / 5), i % 5 + 1);
        if i == 15 {
            child.sigkill(); // no clean disconnect: the broker sends the last will
            let will = sub.expect("/status", T, |m| m.json["state"] == "offline").await;
            assert_eq!(will.json["reason"], "connection-lost");
            assert_eq!(will.json["seq"], seq, "the will carries the birth's sequence number");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _child = start_helper(dir.path(), mosq.port);
    let again = sub.expect("/status", T, |m| m.json["state"] == "online").await;
    assert_eq!(again.json["seq"].as_u64().unwrap(), seq + 1, "birth sequence survives the restart");

    let msgs = collect_alarms(&mut sub, total as usize, Duration::from_secs(30)).await;
    let dups = check_exactly_once(&msgs, &BTreeMap::from([("chair-1".to_owned(), total as u64)]));
    eprintln!("received {} alarm messages, {dups} duplicates removed", msgs.len());

    // A subscriber arriving now sees the present state at once, from retained messages.
    let mut late = Subscriber::connect(mosq.port, "it-m2-late", &format!("{BASE}/bed/chair-1/alarms"), false).await;
    let snap = late.expect("/alarms", T, |m| m.json["bed_seq"] == total).await;
    assert!(snap.retain);
    assert_eq!(snap.json["alarms"][0]["bed_seq"], total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_error_in_the_log_and_in_the_link_status_and_the_right_one_connects() {
    let log = log();
    let dir = tempfile::tempdir().unwrap();
    if mosquitto_binary().is_none() {
        return;
    }
    let pwfile = dir.path().join("passwd");
    let ok = Process::new("mosquitto_passwd").arg("-b").arg("-c").arg(&pwfile).args(["vigil", "s3cret"]).status();
    if !ok.is_ok_and(|s| s.success()) {
        mqtt_support::skip("mosquitto_passwd is not installed (apt-get install mosquitto)");
        return;
    }
    let extra = format!("allow_anonymous false\npassword_file {}\n", pwfile.display());
    let Some(mosq) = Mosquitto::start(dir.path(), &extra) else { return };
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();

    let bad = config(dir.path(), &external(mosq.port, "vigil-pw", "username = \"vigil\"\npassword = \"guess\""), "");
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(bad, hub(), store.clone(), cancel.clone()).unwrap();
    let mut link = m.link.clone();
    let status =
        tokio::time::timeout(T, link.wait_for(|l| l.state == LinkState::Refused)).await.unwrap().unwrap().clone();
    let err = status.last_error.unwrap();
    assert!(err.starts_with("mqtt.username / mqtt.password: the broker at 127.0.0.1:"), "{err}");
    assert!(err.contains("refused Vigil's credentials"), "{err}");
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(logged.contains("refused Vigil's credentials"), "the log says so too");
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();

    let good = config(dir.path(), &external(mosq.port, "vigil-pw", "username = \"vigil\"\npassword = \"s3cret\""), "");
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(good, hub(), store, cancel.clone()).unwrap();
    let mut link = m.link.clone();
    tokio::time::timeout(T, link.wait_for(|l| l.state == LinkState::Connected)).await.unwrap().unwrap();
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_fails_over_to_the_next_broker_in_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mosq) = Mosquitto::start(dir.path(), "") else { return };
    let dead = free_port();
    let more = format!("failover = [\"127.0.0.1:{}\"]", mosq.port);
    let cfg = config(dir.path(), &external(dead, "vigil-fo", &more), "");
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), cancel.clone()).unwrap();
    let mut link = m.link.clone();
    let l = tokio::time::timeout(T, link.wait_for(|l| l.state == LinkState::Connected)).await.unwrap().unwrap().clone();
    assert_eq!(l.broker, format!("127.0.0.1:{}", mosq.port));
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

/// Runs `openssl` with whitespace-separated arguments in `dir`.
fn openssl(dir: &Path, args: &str) -> bool {
    Process::new("openssl")
        .current_dir(dir)
        .args(args.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A throwaway CA, a server certificate for localhost/127.0.0.1 and a client certificate, in `dir`, file names
/// starting with `p`.
fn make_pki(dir: &Path, p: &str) -> bool {
    let server_ext =
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
    std::fs::write(dir.join("server.ext"), server_ext).unwrap();
    std::fs::write(dir.join("client.ext"), "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n").unwrap();
    let sign = |name: &str, ext: &str| {
        format!("x509 -req -in {p}{name}.csr -CA {p}ca.pem -CAkey {p}ca.key -CAcreateserial -days 2 -extfile {ext} -out {p}{name}.pem")
    };
    openssl(
        dir,
        &format!("req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=VigilTestCA -keyout {p}ca.key -out {p}ca.pem"),
    ) && openssl(
        dir,
        &format!("req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout {p}server.key -out {p}server.csr"),
    ) && openssl(dir, &sign("server", "server.ext"))
        && openssl(
            dir,
            &format!("req -newkey rsa:2048 -nodes -subj /CN=vigil -keyout {p}client.key -out {p}client.csr"),
        )
        && openssl(dir, &sign("client", "client.ext"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_events_flow_over_mutual_tls_with_a_throwaway_ca_and_a_wrong_ca_is_a_clear_tls_error() {
    let _log = log();
    let dir = tempfile::tempdir().unwrap();
    if mosquitto_binary().is_none() {
        return;
    }
    if !make_pki(dir.path(), "") || !make_pki(dir.path(), "other-") {
        mqtt_support::skip("openssl is not installed or failed (apt-get install openssl)");
        return;
    }
    let tls_port = free_port();
    let d = dir.path().display();
    let extra = format!(
        "listener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
         require_certificate true\n"
    );
    let Some(mosq) = Mosquitto::start(dir.path(), &extra) else { return };
    assert!(wait_for_port(tls_port, T));
    let tls = |ca: &str| {
        format!("[mqtt.tls]\nca_file = \"{d}/{ca}\"\ncert_file = \"{d}/client.pem\"\nkey_file = \"{d}/client.key\"")
    };
    let cfg = config(dir.path(), &external(tls_port, "vigil-tls", &tls("ca.pem")), "");
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), cancel.clone()).unwrap();
    // The subscriber uses the plain listener of the same broker.
    let mut sub = Subscriber::connect(mosq.port, "it-tls", &format!("{BASE}/#"), false).await;
    sub.expect("/status", T, |m| m.json["state"] == "online").await;
    emit_alarm(&store, &hub, "chair-1", "chair-1-a1", 1);
    let a = sub.expect("/bed/chair-1/alarm", T, |_| true).await;
    assert_eq!(a.json["bed_seq"], 1);
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();

    let wrong = config(dir.path(), &external(tls_port, "vigil-tls-wrong", &tls("other-ca.pem")), "");
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(wrong, hub, store, cancel.clone()).unwrap();
    let mut link = m.link.clone();
    let l =
        tokio::time::timeout(T, link.wait_for(|l| l.last_error.as_deref().is_some_and(|e| e.starts_with("mqtt.tls"))))
            .await
            .unwrap()
            .unwrap()
            .clone();
    assert_ne!(l.state, LinkState::Connected);
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt5_command_is_answered_on_its_response_topic_with_its_correlation_data() {
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient as C5, Event as E5, MqttOptions as O5};

    let dir = tempfile::tempdir().unwrap();
    let Some(mosq) = Mosquitto::start(dir.path(), "") else { return };
    let cfg = config(dir.path(), &external(mosq.port, "vigil-v5", ""), &users());
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let mut seen = fake_bed(hub.clone(), store.clone(), "chair-1");
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), cancel.clone()).unwrap();
    let mut alarms = Subscriber::connect(mosq.port, "it-v5-alarms", &format!("{BASE}/bed/+/alarm"), false).await;
    emit_alarm(&store, &hub, "chair-1", "chair-1-a1", 1);
    alarms.expect("/alarm", T, |_| true).await;

    // An MQTT 5 integrator: subscribes to its own reply topic, sends the command with response topic and
    // correlation data, and no reply_to in the payload.
    let mut o = O5::new("it-v5-app", "127.0.0.1", mosq.port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = C5::new(o, 10);
    let reply_topic = format!("{BASE}/reply/v5-app");
    client.subscribe(reply_topic.clone(), Q5::AtLeastOnce).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let poller = tokio::spawn(async move {
        let mut sent = false;
        loop {
            match el.poll().await {
                Ok(E5::Incoming(P5::SubAck(_))) if !sent => {
                    sent = true;
                    let _ = tx.send(None);
                }
                Ok(E5::Incoming(P5::Publish(p))) => {
                    let _ = tx.send(Some(p));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    assert!(tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap().is_none(), "subscribed");
    // The intake connection subscribes shortly after the publisher connects; retry until a reply comes.
    let props = PublishProperties {
        response_topic: Some(reply_topic.clone()),
        correlation_data: Some(bytes::Bytes::from_static(b"corr-7")),
        ..Default::default()
    };
    // Mosquitto here is open (no ACL): the topic names the sender, as a broker ACL pinned to %u would enforce.
    let payload = r#"{"command":"acknowledge","alarm_id":"chair-1-a1"}"#;
    let mut reply = None;
    for _ in 0..20 {
        client
            .publish_with_properties(format!("{BASE}/cmd/chair-1/nina"), Q5::AtLeastOnce, false, payload, props.clone())
            .await
            .unwrap();
        if let Ok(Some(Some(p))) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            reply = Some(p);
            break;
        }
    }
    let reply = reply.expect("a reply on the MQTT 5 response topic");
    assert_eq!(reply.properties.and_then(|p| p.correlation_data).as_deref(), Some(&b"corr-7"[..]));
    let json: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(tokio::time::timeout(T, seen.recv()).await.unwrap().unwrap().actor, "nina");
    alarms.expect("/alarm", T, |m| m.json["state"] == "acknowledged").await;
    poller.abort();
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_broker_is_shown_down_within_five_seconds_and_an_alarm_raised_meanwhile_arrives_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mosq) = Mosquitto::start(dir.path(), "") else { return };
    // The default keep-alive: no keep_alive_s in the config.
    let mqtt_cfg =
        format!("mode = \"external\"\nhost = \"127.0.0.1\"\nport = {}\nclient_id = \"vigil-hung\"", mosq.port);
    let cfg = config(dir.path(), &mqtt_cfg, "");
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), cancel.clone()).unwrap();
    let mut link = m.link.clone();
    tokio::time::timeout(T, link.wait_for(|l| l.state == LinkState::Connected)).await.unwrap().unwrap();

    mosq.pause();
    // Keep-alive 2 s: the unanswered ping is noticed at the next one, 4 s at most; 5 s is the target.
    let shown_down = tokio::time::timeout(Duration::from_secs(5), link.wait_for(|l| l.state != LinkState::Connected))
        .await
        .map(|r| r.map(|l| l.clone()));
    assert!(shown_down.is_ok(), "a hung broker is shown down within 5 s: {:?}", *m.link.borrow());
    let ev = emit_alarm(&store, &hub, "chair-1", "chair-1-h1", 1);

    mosq.resume();
    tokio::time::timeout(T, link.wait_for(|l| l.state == LinkState::Connected)).await.unwrap().unwrap();
    let mut sub = Subscriber::connect(mosq.port, "it-hung", &format!("{BASE}/bed/+/alarms"), false).await;
    let snap = sub.expect("/bed/chair-1/alarms", T, |m| m.json["bed_seq"] == ev.bed_seq).await;
    assert_eq!(snap.json["alarms"][0]["alarm_id"], "chair-1-h1");
    let deadline = tokio::time::Instant::now() + T;
    while store.pending_count().unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the alarm raised during the hang is acknowledged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_generated_acl_mosquitto_pins_each_nurses_commands_to_her_own_topic_and_drops_forgeries() {
    let dir = tempfile::tempdir().unwrap();
    if mosquitto_binary().is_none() {
        return;
    }
    let pwfile = dir.path().join("passwd");
    for (i, (user, pw)) in
        [("vigil", "s3cret"), ("nina", "anin"), ("victor", "rotciv"), ("ada", "ada")].iter().enumerate()
    {
        let mut cmd = Process::new("mosquitto_passwd");
        cmd.arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        let ok = cmd.arg(&pwfile).args([user, pw]).status();
        if !ok.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: mosquitto_passwd is not installed (apt-get install mosquitto)");
            return;
        }
    }
    let cfg = config(dir.path(), &external(0, "vigil-acl", "username = \"vigil\"\npassword = \"s3cret\""), &users());
    std::fs::write(dir.path().join("acl"), vigil::mqtt::acl::mosquitto_acl(&cfg, "test.toml")).unwrap();
    let extra = format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}\n",
        pwfile.display(),
        dir.path().join("acl").display()
    );
    let Some(mosq) = Mosquitto::start(dir.path(), &extra) else { return };
    let cfg =
        config(dir.path(), &external(mosq.port, "vigil-acl", "username = \"vigil\"\npassword = \"s3cret\""), &users());
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let mut seen = fake_bed(hub.clone(), store.clone(), "chair-1");
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), cancel.clone()).unwrap();
    let mut sub = Subscriber::connect_as(mosq.port, "it-acl", &format!("{BASE}/#"), false, VICTOR).await;
    sub.expect("/status", T, |m| m.json["state"] == "online").await;
    assert!(connack(mosq.port, None).await != Ok(rumqttc::ConnectReturnCode::Success), "anonymous refused");

    // Forgeries: Mosquitto (MQTT 3.1.1) acknowledges them but delivers them to nobody.
    publish_once_as(mosq.port, VICTOR, &format!("{BASE}/bed/chair-1/alarm"), r#"{"alarm_id":"forged"}"#).await;
    publish_once_as(mosq.port, NINA, &format!("{BASE}/cmd/chair-1/ada"), r#"{"command":"acknowledge"}"#).await;
    publish_once_as(mosq.port, VICTOR, &format!("{BASE}/cmd/chair-1/victor"), r#"{"command":"acknowledge"}"#).await;
    // The intake connection subscribes shortly after the publisher connects: retry the real command until it lands.
    let mut req = None;
    for _ in 0..20 {
        publish_once_as(mosq.port, NINA, &format!("{BASE}/cmd/chair-1/nina"), r#"{"command":"acknowledge"}"#).await;
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(500), seen.recv()).await {
            req = Some(r);
            break;
        }
    }
    assert_eq!(req.expect("the nurse's command reached the bed").actor, "nina");
    let got = sub.collect_for(Duration::from_millis(500)).await;
    assert!(!got.iter().any(|m| m.json["alarm_id"] == "forged"), "{got:?}");
    assert!(!got.iter().any(|m| m.topic.ends_with("/cmd/chair-1/ada") || m.topic.ends_with("/victor")), "{got:?}");
    while let Ok(r) = seen.try_recv() {
        assert_eq!(r.actor, "nina", "only the nurse's own commands reach the bed");
    }
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}
