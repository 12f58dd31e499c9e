//! Running Vigil like infrastructure: `/metrics`, `/healthz`, `/readyz` and the systemd notifications, against the
//! real daemon (in-process, or the built binary) over real sockets.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use vigil::config::Config;

const BEDS: &str = r#"
[[beds]]
id = "chair-1"
[[beds.sources]]
kind = "serial"
device = "masimo"
path = "/nonexistent/vigil-test-tty"

[[beds]]
id = "chair-2"
[[beds.sources]]
kind = "simulated"
device = "masimo"
scenario = "desaturation"
seed = 3
speed = 10
"#;

fn config(dir: &std::path::Path, mqtt: &str, extra: &str) -> Config {
    let text = format!(
        r#"
[site]
name = "ops-site"
ward = "ops-ward"
[mqtt]
mode = "{mqtt}"
host = "127.0.0.1"
port = {port}
client_id = "vigil-ops-test"
[dashboard]
listen = "127.0.0.1:0"
[store]
path = "{db}"
{extra}
{BEDS}
"#,
        port = free_port(),
        db = dir.join("vigil.db").display(),
    );
    Config::parse(&text, "ops.toml", dir).unwrap()
}

/// GET with extra header lines; returns (status code, body).
async fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

/// A config file for the built binary (MQTT disabled, the two beds) in `dir`: its path, the dashboard address
/// and the text.
fn binary_config(dir: &std::path::Path) -> (std::path::PathBuf, String, String) {
    let path = dir.join("vigil.toml");
    let dashboard = format!("127.0.0.1:{}", free_port());
    let text = format!(
        "[site]\nname = \"s\"\nward = \"w\"\n[mqtt]\nmode = \"disabled\"\n[dashboard]\nlisten = \"{dashboard}\"\n\
         [store]\npath = \"{}\"\n{BEDS}",
        dir.join("vigil.db").display()
    );
    std::fs::write(&path, &text).unwrap();
    (path, dashboard, text)
}

/// A child daemon that is killed if the test fails before it stops it.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits until `/readyz` answers 200: every bed task beats and the broker (if any) is connected.
async fn wait_ready(dashboard: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get(dashboard, "/readyz", "").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "not ready within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Samples of a Prometheus text exposition: `name{labels}` → value. (CI parses the same output with the
/// reference Python parser, `.ci/suites/60-operations.sh`.)
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| v.parse().ok().map(|v| (k.to_owned(), v))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_name_each_bed_and_source_and_the_alarm_figures_move_when_a_bed_alarms() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let running = vigil::start(config(dir.path(), "embedded", ""), shutdown.clone()).await.unwrap();
    let dashboard = running.dashboard;
    let daemon = tokio::spawn(running.wait());
    wait_ready(dashboard).await;

    let (code, first) = get(dashboard, "/metrics", "").await;
    assert_eq!(code, 200, "{first}");
    let before = samples(&first);
    for bed in ["chair-1", "chair-2"] {
        for family in
            ["vigil_bed_vitals_updates_total", "vigil_alarm_events_total", "vigil_bed_task_heartbeat_age_seconds"]
        {
            assert!(
                before.keys().any(|k| k.starts_with(family) && k.contains(&format!("bed=\"{bed}\""))),
                "{family} for {bed}: {first}"
            );
        }
    }
    assert!(first.contains("# TYPE vigil_store_commit_duration_seconds histogram"), "{first}");
    assert!(first.contains("# TYPE process_resident_memory_bytes gauge"), "{first}");
    assert!(
        before
            .keys()
            .any(|k| k.starts_with("vigil_source_connected{bed=\"chair-1\",source=\"chair-1/0\",kind=\"serial\"")),
        "{first}"
    );
    let starts = |s: &BTreeMap<String, f64>| s.get(r#"vigil_alarm_events_total{bed="chair-2",phase="start"}"#).copied();
    let spo2 = r#"vigil_alarms_active{bed="chair-2",priority="high",kind="threshold",condition="spo2_low"}"#;
    assert!(!before.contains_key(spo2), "no SpO2 alarm before the desaturation");

    // The scenario desaturates at 60 s of its time (6 s at speed 10); the SpO2 alarm follows within seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let after = loop {
        let (_, text) = get(dashboard, "/metrics", "").await;
        let now = samples(&text);
        if now.get(spo2) == Some(&1.0) || tokio::time::Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(after.get(spo2), Some(&1.0), "the SpO2 alarm shows as active: {after:?}");
    assert!(starts(&after) > starts(&before), "alarm starts counted: {:?} then {:?}", starts(&before), starts(&after));
    assert!(
        after[r#"vigil_bed_vitals_updates_total{bed="chair-2"}"#]
            > before[r#"vigil_bed_vitals_updates_total{bed="chair-2"}"#]
    );
    // chair-1's serial port does not exist: a technical alarm, and the source is not connected.
    assert!(after
        .keys()
        .any(|k| k.starts_with(r#"vigil_alarms_active{bed="chair-1""#) && k.contains("monitor_disconnected")));
    assert_eq!(after[r#"vigil_source_connected{bed="chair-1",source="chair-1/0",kind="serial",device="masimo"}"#], 0.0);
    assert_eq!(after["vigil_mqtt_connected"], 1.0);
    assert!(after["vigil_mqtt_outbox_acknowledged_total"] >= 1.0, "the alarms went to the broker");

    // OpenMetrics on request.
    let (code, om) = get(dashboard, "/metrics", "Accept: application/openmetrics-text; version=1.0.0\r\n").await;
    assert_eq!(code, 200);
    assert!(om.trim_end().ends_with("# EOF"), "{om}");

    let (code, ready) = get(dashboard, "/readyz", "").await;
    assert_eq!(code, 200, "{ready}");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["checks"]["bed chair-2"]["ok"], true, "{ready}");
    assert_eq!(ready["checks"]["store"]["detail"], "writable", "{ready}");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(8), daemon).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_refused_off_the_allow_list_and_served_with_the_bearer_token_on_their_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("metrics.token"), "s3cret-scrape-token-0123\n").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let extra = format!("[metrics]\nlisten = \"{listen}\"\nallow = [\"10.9.9.9\"]\ntoken_file = \"metrics.token\"\n");
    let shutdown = CancellationToken::new();
    let running = vigil::start(config(dir.path(), "disabled", &extra), shutdown.clone()).await.unwrap();
    let dashboard = running.dashboard;
    let daemon = tokio::spawn(running.wait());
    let own: SocketAddr = listen.parse().unwrap();
    for addr in [dashboard, own] {
        let (code, body) = get(addr, "/metrics", "").await;
        assert_eq!(code, 403, "loopback is not in metrics.allow here: {body}");
        let (code, _) = get(addr, "/metrics", "Authorization: Bearer wrong-token-wrong-token\r\n").await;
        assert_eq!(code, 403);
        let (code, body) = get(addr, "/metrics", "Authorization: Bearer s3cret-scrape-token-0123\r\n").await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("vigil_bed_vitals_updates_total{bed=\"chair-2\"}"), "{body}");
        assert!(!body.contains("vigil_mqtt_connected"), "no MQTT figures with MQTT disabled");
        let (code, body) = get(addr, "/healthz", "").await;
        assert_eq!((code, body.contains("\"status\":\"ok\"")), (200, true), "{body}");
    }
    // The metrics listener serves no pages.
    assert_eq!(get(own, "/", "").await.0, 404);
    assert_eq!(get(own, "/api/snapshot", "").await.0, 404);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(8), daemon).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_naming_the_broker_while_it_is_unreachable_and_healthz_stays_200() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let running = vigil::start(config(dir.path(), "external", ""), shutdown.clone()).await.unwrap();
    let dashboard = running.dashboard;
    let daemon = tokio::spawn(running.wait());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, body) = get(dashboard, "/readyz", "").await;
    assert_eq!(code, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["checks"]["mqtt"]["ok"], false, "{body}");
    assert!(ready["checks"]["mqtt"]["detail"].as_str().unwrap().starts_with("connecting to 127.0.0.1:"), "{body}");
    assert_eq!(ready["checks"]["store"]["ok"], true, "{body}");
    assert_eq!(get(dashboard, "/healthz", "").await.0, 200);
    let (_, metrics) = get(dashboard, "/metrics", "").await;
    assert!(metrics.contains("vigil_mqtt_connected 0"), "{metrics}");
    assert!(metrics.contains("vigil_mqtt_link_state{state=\"connecting\"} 1"), "{metrics}");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(8), daemon).await.unwrap().unwrap();
}

#[test]
fn the_binary_tells_systemd_it_is_ready_feeds_the_watchdog_and_says_it_is_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let (config_path, dashboard, _) = binary_config(dir.path());
    let mut child = Reaped(
        std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["run", "--config"])
            .arg(&config_path)
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "600000")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    let mut watchdogs = 0;
    while watchdogs < 3 {
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                panic!("no notification within 15 s ({e}); got {messages:?}");
            }
        };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.contains("WATCHDOG=1") {
            watchdogs += 1;
        }
        messages.push(msg);
    }
    assert!(messages[0].lines().any(|l| l == "READY=1"), "READY=1 comes first: {messages:?}");
    // READY=1 is sent after every listener is bound: the dashboard answers at once.
    assert!(std::net::TcpStream::connect(&dashboard).is_ok());
    let pid = child.0.id() as i32;
    // SAFETY: sending SIGTERM to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let stopping = loop {
        let n = socket.recv(&mut buf).expect("STOPPING=1 after SIGTERM");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.contains("STOPPING=1") {
            break msg;
        }
    };
    assert!(stopping.lines().any(|l| l == "STOPPING=1"));
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_served_is_documented_in_operations_md_and_every_documented_metric_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    // With an MLLP listener and a notification target, so that their metrics are served too.
    let extra = "[mllp]\nlisten = \"127.0.0.1:0\"\n[[notify.targets]]\nname = \"pager\"\nkind = \"webhook\"\n\
                 url = \"http://127.0.0.1:9/\"\npriorities = [\"high\"]\n\
                 [[notify.targets]]\nname = \"manager\"\nkind = \"acm\"\npriorities = [\"high\"]\n\
                 acm = { address = \"127.0.0.1:9\" }\n";
    let running = vigil::start(config(dir.path(), "embedded", extra), shutdown.clone()).await.unwrap();
    let dashboard = running.dashboard;
    let daemon = tokio::spawn(running.wait());
    wait_ready(dashboard).await;
    let (_, text) = get(dashboard, "/metrics", "").await;
    let served: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    let guide = std::fs::read_to_string("docs/operations.md").unwrap();
    let documented: std::collections::BTreeSet<String> = guide
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name))
        .filter(|n| n.starts_with("vigil_") || n.starts_with("process_"))
        .map(str::to_owned)
        .collect();
    assert_eq!(served, documented, "docs/operations.md's metric table and /metrics differ");
    // The alert rules use only served metrics (a histogram's series carry _bucket, _sum, _count).
    let rules = guide.split("### Example alert rules").nth(1).unwrap();
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("vigil_")) {
        assert!(served.contains(word), "alert rule uses {word}, which /metrics does not serve");
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(8), daemon).await.unwrap().unwrap();
}

#[test]
fn sighup_reloads_nothing_says_a_restart_is_needed_and_whether_the_file_on_disk_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let (config_path, dashboard, text) = binary_config(dir.path());
    let log_path = dir.path().join("vigil.log");
    let mut child = Reaped(
        std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["run", "--config"])
            .arg(&config_path)
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let log_has = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if std::fs::read_to_string(&log_path).unwrap_or_default().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    assert!(log_has("Vigil is running"), "{}", std::fs::read_to_string(&log_path).unwrap_or_default());
    let pid = child.0.id() as i32;
    // SAFETY: signals to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    assert!(log_has("the file on disk is valid: a restart would take it"));
    // A broken file on disk: SIGHUP says a restart would fail, and the running daemon goes on.
    std::fs::write(&config_path, text.replace("[site]", "[sight]")).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    assert!(log_has("the file on disk is INVALID, a restart would fail"));
    assert!(child.0.try_wait().unwrap().is_none(), "SIGHUP stopped the daemon");
    assert!(std::net::TcpStream::connect(&dashboard).is_ok(), "the dashboard still answers");
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert!(child.0.wait().unwrap().success());
}
