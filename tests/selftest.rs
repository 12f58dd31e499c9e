//! The shift-start self-test against the real daemon: `vigil self-test` (the built binary) over the dashboard
//! API with its own MQTT subscriber, the embedded broker, a broker that is down, MQTT disabled, the statistics
//! that must not count the test alarm, who may run it, and the scheduled run's technical alarm.

mod alarm_support;
mod common;
mod mqtt_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{free_port, Daemon};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil::event::{AlarmPhase, Event};

const ADMIN: (&str, &str) = ("ada", "ada-admin-pass");
const VIEWER: (&str, &str) = ("victor", "rotciv");
const NURSE: (&str, &str) = ("nina", "vigil-nurse");

/// A one-bed ward (a calm simulated chair) with an admin, a nurse and a viewer; `mqtt` is the `[mqtt]` body.
fn config(dir: &std::path::Path, mqtt: &str, extra: &str) -> vigil::config::Config {
    let hash = |p: &str| vigil::auth::hash_password(p).unwrap();
    let text = format!(
        r#"
[site]
name = "st-site"
ward = "st-ward"
[mqtt]
{mqtt}
client_id = "vigil-selftest-{port}"
[dashboard]
listen = "127.0.0.1:0"
[store]
path = "{db}"
{extra}
[[users]]
name = "{}"
role = "admin"
password_hash = "{}"
[[users]]
name = "{}"
role = "viewer"
password_hash = "{}"
[[users]]
name = "{}"
role = "nurse"
password_hash = "{}"
[[beds]]
id = "chair-1"
[[beds.sources]]
kind = "simulated"
device = "masimo"
scenario = "calm-session"
seed = 1
speed = 1
"#,
        ADMIN.0,
        hash(ADMIN.1),
        VIEWER.0,
        hash(VIEWER.1),
        NURSE.0,
        hash(NURSE.1),
        port = free_port(),
        db = dir.join("vigil.db").display(),
    );
    vigil::config::Config::parse(&text, "selftest.toml", dir).unwrap()
}

fn embedded() -> String {
    format!("mode = \"embedded\"\nhost = \"127.0.0.1\"\nport = {}", free_port())
}

/// `vigil self-test --url … --user NAME --json` with the password in VIGIL_PASSWORD: exit code, the report (if
/// any), stderr, and how long it took.
async fn cli(dashboard: SocketAddr, user: (&str, &str), extra: &[&str]) -> (i32, Value, String, Duration) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"));
    cmd.arg("self-test")
        .arg("--url")
        .arg(format!("http://{dashboard}"))
        .arg("--user")
        .arg(user.0)
        .args(extra)
        .env("VIGIL_PASSWORD", user.1)
        .kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output()).await.expect("done in 30 s").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = serde_json::from_str(stdout.trim()).unwrap_or(Value::String(stdout));
    (out.status.code().unwrap_or(-1), report, String::from_utf8_lossy(&out.stderr).into_owned(), started.elapsed())
}

fn hops(report: &Value) -> Vec<(String, bool, String)> {
    report["hops"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|h| {
            (h["hop"].as_str().unwrap_or("").to_owned(), h["ok"] == true, h["detail"].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

/// GET; returns (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// The value of one sample line of a Prometheus text exposition (`name{labels}`), if present.
fn sample(text: &str, key: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.parse().ok()))
}

async fn wait_ready(dashboard: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(dashboard, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "not ready within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vigil_self_test_against_the_embedded_broker_passes_every_hop_within_ten_seconds_and_counts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(config(dir.path(), &embedded(), "")).await;
    let dashboard = daemon.running.dashboard;
    wait_ready(dashboard).await;
    let (_, before) = get(dashboard, "/metrics").await;

    let (code, report, stderr, took) = cli(dashboard, ADMIN, &["--json"]).await;
    assert_eq!(code, 0, "exit 0 when every hop passed: {report:#} {stderr}");
    let names: Vec<String> = hops(&report).into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(names, ["engine", "store", "mqtt", "dashboard", "mqtt-subscriber"], "{report:#}");
    for (name, ok, detail) in hops(&report) {
        assert!(ok, "{name} passed: {detail}");
    }
    assert!(hops(&report)[2].2.contains("PUBACK"), "the broker's acknowledgement: {report:#}");
    assert!(hops(&report)[4].2.contains("signed in as ada"), "its own subscriber: {report:#}");
    assert!(report["passed"] == true && report["bed"] == "chair-1" && report["by"] == "ada");
    assert!(took < Duration::from_secs(10), "all within 10 s (took {took:?})");

    // Stored marked as a test, start and (moments later) end, contiguous bed_seq.
    let alarm_id = report["alarm_id"].as_str().unwrap().to_owned();
    let store = vigil::store::Store::open(&dir.path().join("vigil.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let all = store
            .alarm_events("chair-1", chrono::DateTime::UNIX_EPOCH, chrono::Utc::now() + chrono::Duration::hours(1))
            .unwrap();
        let mine: Vec<_> = all.into_iter().filter(|e| e.alarm_id == alarm_id).collect();
        if mine.iter().any(|e| e.phase == AlarmPhase::End) || Instant::now() > deadline {
            break mine;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let phases: Vec<AlarmPhase> = events.iter().map(|e| e.phase).collect();
    assert_eq!(phases, [AlarmPhase::Start, AlarmPhase::End], "the test alarm ends itself");
    assert!(events.iter().all(|e| e.test && e.condition == "self_test"), "marked as a test everywhere it is stored");
    assert_eq!(events[1].bed_seq, events[0].bed_seq + 1, "bed_seq stays contiguous");
    // In the audit trail, which the chair's history (and its printed report) still reads.
    let actions = store.actions("chair-1", chrono::DateTime::UNIX_EPOCH, chrono::Utc::now()).unwrap();
    assert!(actions.iter().any(|a| a.actor == "ada" && a.ok && a.request.contains("self_test")), "{actions:?}");

    // The human table names every hop.
    let (code, table, _, _) = cli(dashboard, ADMIN, &[]).await;
    assert_eq!(code, 0);
    let table = table.as_str().unwrap_or_default().to_owned();
    assert!(table.contains("PASSED"), "{table}");
    for hop in ["engine", "store", "mqtt", "dashboard", "mqtt-subscriber"] {
        assert!(table.lines().any(|l| l.trim_start().starts_with(hop) && l.contains(" ok ")), "{hop} in\n{table}");
    }

    // Statistics: the test alarms are in no alarm count; the self-test's own figures are there.
    let (_, after) = get(dashboard, "/metrics").await;
    for phase in ["start", "end"] {
        let key = format!("vigil_alarm_events_total{{bed=\"chair-1\",phase=\"{phase}\"}}");
        assert_eq!(sample(&before, &key), sample(&after, &key), "{key} did not move");
    }
    assert!(!after.contains("condition=\"self_test\""), "never an active alarm in the metrics");
    assert_eq!(sample(&after, "vigil_selftest_last_passed"), Some(1.0));
    assert_eq!(sample(&after, "vigil_selftest_runs_total{result=\"passed\"}"), Some(2.0));
    assert_eq!(sample(&after, "vigil_selftest_hop_passed{bed=\"chair-1\",hop=\"mqtt\"}"), Some(1.0));
    let (_, ready) = get(dashboard, "/readyz").await;
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["selftest"]["passed"], true, "{ready:#}");
    assert_eq!(ready["selftest"]["hops"].as_array().map(Vec::len), Some(4), "the daemon's own hops: {ready:#}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mqtt_disabled_the_mqtt_hop_fails_with_the_reason_and_the_command_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(config(dir.path(), "mode = \"disabled\"", "")).await;
    let dashboard = daemon.running.dashboard;
    wait_ready(dashboard).await;
    let (code, report, stderr, _) = cli(dashboard, ADMIN, &["--json"]).await;
    assert_eq!(code, 1, "a failed hop exits 1: {report:#} {stderr}");
    let hops = hops(&report);
    let mqtt = hops.iter().find(|h| h.0 == "mqtt").expect("the mqtt hop is reported");
    assert!(!mqtt.1 && mqtt.2.contains("disabled"), "{mqtt:?}");
    assert!(hops.iter().filter(|h| h.0 != "mqtt").all(|h| h.1), "the other hops pass: {hops:?}");
    assert_eq!(report["passed"], false);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_down_the_mqtt_hops_fail_naming_the_broker_link_and_the_command_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    let down = free_port();
    let mqtt = format!("mode = \"external\"\nhost = \"127.0.0.1\"\nport = {down}");
    let daemon = Daemon::start(config(dir.path(), &mqtt, "")).await;
    let dashboard = daemon.running.dashboard;
    let (code, report, stderr, took) = cli(dashboard, ADMIN, &["--json"]).await;
    assert_eq!(code, 1, "{report:#} {stderr}");
    let hops = hops(&report);
    let mqtt = hops.iter().find(|h| h.0 == "mqtt").expect("the mqtt hop is reported");
    assert!(!mqtt.1, "{mqtt:?}");
    assert!(mqtt.2.contains(&format!("127.0.0.1:{down}")) && mqtt.2.contains("not connected"), "{mqtt:?}");
    let sub = hops.iter().find(|h| h.0 == "mqtt-subscriber").expect("the subscriber's hop is reported");
    assert!(!sub.1 && sub.2.contains("cannot subscribe"), "{sub:?}");
    for name in ["engine", "store", "dashboard"] {
        assert!(hops.iter().any(|h| h.0 == name && h.1), "{name} still passes: {hops:?}");
    }
    assert!(took < Duration::from_secs(15), "gives up at the 10 s deadline (took {took:?})");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_may_run_it_a_viewer_and_a_nurse_get_403_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(config(dir.path(), "mode = \"disabled\"", "")).await;
    let dashboard = daemon.running.dashboard;
    for (who, role) in [(VIEWER, "viewer"), (NURSE, "nurse")] {
        let (code, report, stderr, _) = cli(dashboard, who, &["--json"]).await;
        assert_eq!(code, 69, "could not run: {report:#} {stderr}");
        assert!(stderr.contains("403") && stderr.contains(&format!("role '{role}'")), "{stderr}");
    }
    let (code, _, stderr, _) = cli(dashboard, (ADMIN.0, "wrong"), &[]).await;
    assert_eq!(code, 69, "a refused sign-in: {stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    let (_, metrics) = get(dashboard, "/metrics").await;
    assert_eq!(sample(&metrics, "vigil_selftest_runs_total{result=\"passed\"}"), Some(0.0), "nothing ran");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_scheduled_self_test_raises_selftest_failed_and_the_next_passing_run_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut broker) = mqtt_support::Mosquitto::start(dir.path(), "") else {
        common::skip("mosquitto is not installed");
        return;
    };
    broker.stop();
    let mqtt = format!("mode = \"external\"\nhost = \"127.0.0.1\"\nport = {}", broker.port);
    let daemon = Daemon::start(config(dir.path(), &mqtt, "[selftest]\nevery = \"1s\"")).await;
    let (_, mut events) = daemon.running.hub.subscribe();
    let next_failed = |events: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<vigil::hub::HubEvent>>| {
        let mut events = events.resubscribe();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
            loop {
                let ev = tokio::time::timeout_at(deadline, events.recv()).await.expect("selftest_failed in time");
                if let Ok(ev) = ev {
                    if let Event::Alarm(a) = &ev.event {
                        if a.condition == "selftest_failed" {
                            return a.clone();
                        }
                    }
                }
            }
        }
    };
    let raised = next_failed(&mut events).await;
    assert_eq!(raised.phase, AlarmPhase::Start);
    assert_eq!(raised.priority, vigil::event::Priority::Medium);
    assert!(!raised.test, "a real technical alarm, not a test");
    assert!(raised.message.contains("mqtt"), "names the failed hop: {}", raised.message);

    let ending = next_failed(&mut events);
    broker.restart();
    let ended = ending.await;
    assert_eq!((ended.alarm_id.as_str(), ended.phase), (raised.alarm_id.as_str(), AlarmPhase::End), "{ended:?}");
    let (_, ready) = get(daemon.running.dashboard, "/readyz").await;
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["selftest"]["trigger"], "scheduled", "{ready:#}");
    daemon.stop().await;
}

mod engine {
    //! The engine's side, pure and in virtual time.
    use std::sync::Arc;

    use super::alarm_support::alarms;
    use chrono::{DateTime, TimeDelta, Utc};
    use vigil::alarm::{Engine, Profile};
    use vigil::event::{AlarmKind, AlarmPhase, Command, Priority};

    fn engine() -> Engine {
        let profile = Profile::resolve("ketamine-chair", std::path::Path::new(".")).unwrap();
        Engine::new("chair-1".into(), Arc::new(profile), 7)
    }

    fn at(t0: DateTime<Utc>, s: i64) -> DateTime<Utc> {
        t0 + TimeDelta::seconds(s)
    }

    #[test]
    fn the_test_alarm_is_low_technical_marked_numbered_in_sequence_never_escalates_and_ends_itself_after_five_seconds()
    {
        let mut e = engine();
        let t0 = Utc::now();
        let start = alarms(e.command(&Command::SelfTest, "ada", t0).unwrap());
        assert_eq!(start.len(), 1);
        let a = &start[0];
        assert_eq!(
            (a.phase, a.priority, a.kind, a.condition.as_str()),
            (AlarmPhase::Start, Priority::Low, AlarmKind::Technical, "self_test")
        );
        assert!(a.test && a.bed_seq == 7, "{a:?}");
        assert!(a.message.contains("TEST"), "{}", a.message);
        for s in 1..5 {
            assert!(alarms(e.tick(at(t0, s))).is_empty(), "still shown at {s} s");
        }
        let end = alarms(e.tick(at(t0, 5)));
        assert_eq!(end.len(), 1, "ends itself: {end:?}");
        assert_eq!((end[0].phase, end[0].bed_seq, end[0].test), (AlarmPhase::End, 8, true));
        assert!(e.active_alarms(at(t0, 5)).alarms.is_empty());
        for s in 6..900 {
            assert!(alarms(e.tick(at(t0, s))).is_empty(), "nothing more, no escalation, at {s} s");
        }
        // A second run while the first is still shown ends the first: each run has its own alarm.
        let first = alarms(e.command(&Command::SelfTest, "ada", at(t0, 900)).unwrap());
        let second = alarms(e.command(&Command::SelfTest, "ada", at(t0, 901)).unwrap());
        let phases: Vec<_> = second.iter().map(|a| (a.alarm_id.as_str(), a.phase)).collect();
        assert_eq!(
            phases,
            [(first[0].alarm_id.as_str(), AlarmPhase::End), (second[1].alarm_id.as_str(), AlarmPhase::Start)]
        );
        assert_ne!(first[0].alarm_id, second[1].alarm_id);
    }

    #[test]
    fn a_failed_result_raises_selftest_failed_at_medium_and_a_passing_one_ends_it() {
        let mut e = engine();
        let t0 = Utc::now();
        let failed = Command::SelfTestResult { failed: Some("mqtt".into()) };
        let raised = alarms(e.command(&failed, "vigil-scheduler", t0).unwrap());
        assert_eq!(raised.len(), 1);
        assert_eq!(
            (raised[0].condition.as_str(), raised[0].priority, raised[0].test),
            ("selftest_failed", Priority::Medium, false)
        );
        assert!(raised[0].message.contains("mqtt"));
        assert!(
            alarms(e.command(&failed, "vigil-scheduler", at(t0, 60)).unwrap()).is_empty(),
            "one alarm while it fails"
        );
        let ended =
            alarms(e.command(&Command::SelfTestResult { failed: None }, "vigil-scheduler", at(t0, 120)).unwrap());
        assert_eq!((ended[0].alarm_id.as_str(), ended[0].phase), (raised[0].alarm_id.as_str(), AlarmPhase::End));
    }

    #[test]
    fn nobody_outside_can_send_the_self_test_commands_over_mqtt_or_the_command_endpoint() {
        for text in [r#"{"command":"self_test"}"#, r#"{"command":"self_test_result","failed":null}"#] {
            assert!(serde_json::from_str::<Command>(text).is_err(), "{text} must not parse");
        }
    }
}

#[test]
fn the_table_in_operations_md_is_what_vigil_self_test_prints_for_that_report() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let block = doc.split("```text\n").nth(1).and_then(|b| b.split("```").next()).expect("the table in the doc");
    let mut hops = Vec::new();
    for line in block.lines().skip(2) {
        let mut words = line.split_whitespace();
        let (hop, mark, ms) = (words.next().unwrap(), words.next().unwrap(), words.next().unwrap());
        let detail = line.split_once(&format!(" {ms}  ")).unwrap().1.to_owned();
        hops.push(vigil::selftest::HopResult { hop: hop.into(), ok: mark == "ok", ms: ms.parse().unwrap(), detail });
    }
    let report = vigil::selftest::Report {
        bed: "chair-1".into(),
        alarm_id: Some("chair-1-58".into()),
        bed_seq: Some(58),
        started: chrono::Utc::now(),
        by: "ada".into(),
        trigger: vigil::selftest::Trigger::Manual,
        passed: true,
        ms: 40,
        hops,
    };
    assert_eq!(vigil::selftest::client::table(&report), block);
}
