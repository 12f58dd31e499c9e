//! Notification targets and escalation chains against real sockets on loopback: the daemon (`vigil::start`)
//! takes HL7 over a real MLLP connection, its webhooks POST to an HTTP server in this test (axum on a real
//! listener), its e-mails go to a small SMTP listener in this test, and acknowledges go through the real
//! dashboard (HTTP), the real embedded MQTT broker and acknowledge links.

mod common;
mod mqtt_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One request the webhook server received: path name, JSON body, when, headers.
type Received = (String, Value, Instant, HeaderMap);

/// What the test's webhook server received.
#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<Received>>>);

impl Inbox {
    fn of(&self, name: &str) -> Vec<Value> {
        self.0.lock().unwrap().iter().filter(|(n, ..)| n == name).map(|(_, v, ..)| v.clone()).collect()
    }

    fn headers(&self, name: &str) -> Vec<HeaderMap> {
        self.0.lock().unwrap().iter().filter(|(n, ..)| n == name).map(|(.., h)| h.clone()).collect()
    }

    /// Waits until `name` has received a body matching `pred`; returns it and when it arrived.
    async fn wait(&self, name: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Option<(Value, Instant)> {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .0
                .lock()
                .unwrap()
                .iter()
                .find(|(n, v, ..)| n == name && pred(v))
                .map(|(_, v, t, _)| (v.clone(), *t));
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A webhook server on loopback: `POST /<name>` records the JSON body and answers 200; `POST /hang` never answers;
/// `POST /fail` answers 500.
async fn webhook_server() -> (SocketAddr, Inbox) {
    let inbox = Inbox::default();
    let app = axum::Router::new()
        .route("/hang", axum::routing::post(std::future::pending::<()>))
        .route("/fail", axum::routing::post(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "broken") }))
        .route(
            "/:name",
            axum::routing::post(
                |State(inbox): State<Inbox>, Path(name): Path<String>, headers: HeaderMap, body: String| async move {
                    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
                    inbox.0.lock().unwrap().push((name, v, Instant::now(), headers));
                    "ok"
                },
            ),
        )
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, inbox)
}

/// An HTTP client for the test's own requests (rustls needs its one crypto provider named, as the daemon does).
fn client() -> reqwest::Client {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(tokio_rustls::rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap()
}

async fn get(url: &str) -> String {
    client().get(url).send().await.unwrap().text().await.unwrap()
}

/// A one-bed daemon fed over MLLP, no MQTT, demo actions on a loopback dashboard at `dashboard`, with `notify`
/// appended (the `[notify]` tables).
fn config(dir: &std::path::Path, dashboard: u16, notify: &str) -> vigil::config::Config {
    vigil::config::Config::parse(&common::notify_config(dir, dashboard, notify), "test.toml", dir).unwrap()
}

fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!("[[notify.targets]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\npriorities = [\"high\"]\n{extra}\n")
}

/// Acknowledges every alarm of chair-1 on the dashboard, as the demo nurse does: the CSRF token from
/// `/api/me`, then the command.
async fn dashboard_acknowledge(dashboard: SocketAddr) {
    let client = client();
    let me: Value = serde_json::from_str(&get(&format!("http://{dashboard}/api/me")).await).unwrap();
    let csrf = me["csrf"].as_str().unwrap().to_owned();
    let res = client
        .post(format!("http://{dashboard}/api/beds/chair-1/commands"))
        .header("x-csrf-token", csrf)
        .header("content-type", "application/json")
        .body(r#"{"command":"acknowledge"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

async fn metrics(dashboard: SocketAddr) -> String {
    get(&format!("http://{dashboard}/metrics")).await
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

/// The notification log once `done` holds for it (or after 3 s).
async fn log_until(
    dir: &std::path::Path,
    done: impl Fn(&[vigil::store::notify::AttemptRecord]) -> bool,
) -> Vec<vigil::store::notify::AttemptRecord> {
    let store = vigil::store::Store::open(&dir.join("vigil.db")).unwrap();
    let day = chrono::Duration::days(1);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let log = store.notify_attempts("chair-1", chrono::Utc::now() - day, chrono::Utc::now() + day).unwrap();
        if done(&log) || Instant::now() > deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/api/status` once `done` holds for it (or at `within`).
async fn wait_status(dashboard: SocketAddr, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let status: Value = serde_json::from_str(&get(&format!("http://{dashboard}/api/status")).await).unwrap();
        if done(&status) || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `/api/status` shows target `name` failing.
fn failing(status: &Value, name: &str) -> bool {
    status["notify"].as_array().is_some_and(|a| a.iter().any(|t| t["target"] == name && t["failing"] == true))
}

fn phase(v: &Value) -> &str {
    v["phase"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_receives_the_alarm_start_within_two_seconds_and_its_end_and_every_attempt_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (hooks, inbox) = webhook_server().await;
    let port = common::free_port();
    let notify = webhook("pager", &format!("http://{hooks}/pager"), "headers = { \"X-Ward\" = \"5\" }");
    let daemon = common::Daemon::start(config(dir.path(), port, &notify)).await;
    let (dash, mllp) = (daemon.running.dashboard, daemon.running.mllp.unwrap());

    common::send_spo2(mllp, 80).await;
    let sent = Instant::now();
    let (start, at) = inbox.wait("pager", Duration::from_secs(5), |v| phase(v) == "start").await.expect("no start");
    assert!(at - sent < Duration::from_secs(2), "the start took {:?}", at - sent);
    assert_eq!(start["priority"], "high");
    assert_eq!(start["condition"], "spo2_low");
    assert_eq!(start["parameter"]["mdc_code"], 150456, "the MQTT payload encoder expanded the parameter: {start}");
    assert_eq!(start["notification"]["target"], "pager");
    let link = start["notification"]["ack_url"].as_str().unwrap();
    assert!(link.starts_with(&format!("http://127.0.0.1:{port}/ack/")), "{link}");
    assert_eq!(inbox.headers("pager")[0]["x-ward"], "5");

    // The high alarm latches: back to normal, then acknowledged on the dashboard, it ends.
    common::send_spo2(mllp, 99).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    dashboard_acknowledge(dash).await;
    let (end, _) = inbox.wait("pager", Duration::from_secs(5), |v| phase(v) == "end").await.expect("no end");
    assert_eq!(end["alarm_id"], start["alarm_id"]);
    assert_eq!(end["by"], "demo");
    assert!(end["notification"]["ack_url"].is_null(), "an ended alarm has nothing to acknowledge");

    let log = log_until(dir.path(), |l| l.len() >= 2).await;
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log.iter().all(|a| a.ok && a.detail == "HTTP 200" && a.target == "pager"), "{log:?}");
    let m = metrics(dash).await;
    assert_eq!(metric(&m, "vigil_notify_delivered_total{target=\"pager\"}"), Some(2.0), "{m}");
    assert_eq!(metric(&m, "vigil_notify_pending{target=\"pager\"}"), Some(0.0), "{m}");
    daemon.stop().await;
}

const CHAIN: &str = r#"
[[notify.escalation]]
priority = "high"
steps = [{ target = "first", wait_s = 2 }, { target = "second", wait_s = 3 }, { target = "third", wait_s = 60 }]
"#;

fn three_targets(hooks: SocketAddr) -> String {
    ["first", "second", "third"].iter().map(|n| webhook(n, &format!("http://{hooks}/{n}"), "")).collect::<String>()
        + CHAIN
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_first_step_goes_to_the_second_target_and_a_dashboard_acknowledge_stops_the_chain_before_the_third(
) {
    let dir = tempfile::tempdir().unwrap();
    let (hooks, inbox) = webhook_server().await;
    let daemon = common::Daemon::start(config(dir.path(), common::free_port(), &three_targets(hooks))).await;
    let (dash, mllp) = (daemon.running.dashboard, daemon.running.mllp.unwrap());

    common::send_spo2(mllp, 80).await;
    let (first, t1) = inbox.wait("first", Duration::from_secs(3), |v| phase(v) == "start").await.expect("step 1");
    assert_eq!(first["notification"]["reason"], "escalation step 1 of 3");
    assert!(inbox.of("second").is_empty(), "step 2 before step 1's wait");
    let (second, t2) = inbox.wait("second", Duration::from_secs(5), |_| true).await.expect("step 2 never came");
    assert_eq!(second["notification"]["reason"], "escalation step 2 of 3");
    assert_eq!(second["alarm_id"], first["alarm_id"]);
    let waited = t2 - t1;
    assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(4), "step 2 came after {waited:?}");

    dashboard_acknowledge(dash).await;
    // Step 3 would be due 3 s after step 2: wait past it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(inbox.of("third").is_empty(), "the chain went on after the acknowledge: {:?}", inbox.of("third"));
    for target in ["first", "second"] {
        assert!(
            inbox.of(target).iter().any(|v| v["state"] == "acknowledged" && v["by"] == "demo"),
            "{target} was not told of the acknowledge: {:?}",
            inbox.of(target)
        );
    }
    let chains = get(&format!("http://{dash}/api/notify/chains")).await;
    let chains: Value = serde_json::from_str(&chains).unwrap();
    let chain = &chains["chains"][0];
    assert_eq!(chain["status"], "acknowledged", "{chains}");
    assert_eq!(chain["by"], "demo");
    assert_eq!((chain["step"].as_u64(), chain["steps"].as_u64()), (Some(1), Some(3)));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_acknowledge_from_a_signed_in_nurse_stops_the_chain_before_its_next_step() {
    let dir = tempfile::tempdir().unwrap();
    let (hooks, inbox) = webhook_server().await;
    let broker = common::free_port();
    // The real embedded broker (its gate signs clients in against `[[users]]`) and the nurse Nina.
    let mqtt = format!(
        "[mqtt]\nmode = \"embedded\"\nhost = \"127.0.0.1\"\nport = {broker}\nclient_id = \"vigil-notify-{broker}\"\n"
    );
    let text = common::notify_config(dir.path(), common::free_port(), &three_targets(hooks))
        .replace("[mqtt]\nmode = \"disabled\"\n", &mqtt)
        + &mqtt_support::users();
    assert!(text.contains("mode = \"embedded\""), "the test config's [mqtt] table moved");
    let config = vigil::config::Config::parse(&text, "test.toml", dir.path()).unwrap();
    let daemon = common::Daemon::start(config).await;
    let (dash, mllp) = (daemon.running.dashboard, daemon.running.mllp.unwrap());
    assert!(mqtt_support::wait_for_port(broker, Duration::from_secs(5)), "the embedded broker listens");

    common::send_spo2(mllp, 80).await;
    let (first, _) = inbox.wait("first", Duration::from_secs(3), |v| phase(v) == "start").await.expect("step 1");
    let alarm_id = first["alarm_id"].as_str().unwrap().to_owned();
    // Nina acknowledges over MQTT on her own command topic, signed in with her broker account.
    let topic = "vigil/v1/test-site/test-ward/cmd/chair-1/nina";
    let command = format!(r#"{{"command":"acknowledge","alarm_id":"{alarm_id}","request_id":"n-1"}}"#);
    mqtt_support::publish_once_as(broker, mqtt_support::NINA, topic, &command).await;
    let (acked, _) =
        inbox.wait("first", Duration::from_secs(3), |v| v["state"] == "acknowledged").await.expect("no acknowledge");
    assert_eq!(acked["by"], "nina", "attributed to the broker account: {acked}");
    // Step 2 was due 2 s after step 1: wait past it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(inbox.of("second").is_empty(), "the chain went on after the MQTT acknowledge: {:?}", inbox.of("second"));
    let chains: Value = serde_json::from_str(&get(&format!("http://{dash}/api/notify/chains")).await).unwrap();
    let chain = &chains["chains"][0];
    assert_eq!((chain["status"].as_str(), chain["by"].as_str()), (Some("acknowledged"), Some("nina")), "{chains:#}");
    // Stopped at step 1 of 3 (0-based 0): only the first target was notified.
    assert_eq!((chain["step"].as_u64(), chain["steps"].as_u64()), (Some(0), Some(3)), "{chains:#}");
    assert_eq!(chain["notified"], serde_json::json!(["first"]), "{chains:#}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_user_reads_every_failed_and_succeeded_attempt_of_a_beds_alarm_from_the_notification_log() {
    let dir = tempfile::tempdir().unwrap();
    let (hooks, inbox) = webhook_server().await;
    let notify = webhook("pager", &format!("http://{hooks}/pager"), "")
        + &webhook("broken", &format!("http://{hooks}/fail"), "");
    // The ward is on view without signing in (the demo), but with `[[users]]` the log needs a signed-in user.
    let text = common::notify_config(dir.path(), common::free_port(), &notify) + &mqtt_support::users();
    let daemon = common::Daemon::start(vigil::config::Config::parse(&text, "test.toml", dir.path()).unwrap()).await;
    let (dash, mllp) = (daemon.running.dashboard, daemon.running.mllp.unwrap());

    common::send_spo2(mllp, 80).await;
    let (start, _) = inbox.wait("pager", Duration::from_secs(5), |v| phase(v) == "start").await.expect("no start");
    let alarm_id = start["alarm_id"].as_str().unwrap().to_owned();
    // "broken" answers 500: its first attempt fails (the retry comes 1 s later).
    log_until(dir.path(), |l| l.iter().any(|a| a.target == "broken")).await;

    let url = |query: &str| format!("http://{dash}/api/notify/attempts?{query}");
    let http = client();
    let anonymous = http.get(url("bed=chair-1")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "the log is for signed-in users");
    let ward = http.get(format!("http://{dash}/api/notify/chains")).send().await.unwrap();
    assert_eq!(ward.status(), 200, "while the ward itself is on view");
    let signed_in = http
        .post(format!("http://{dash}/api/session"))
        .header("content-type", "application/json")
        .body(r#"{"name":"nina","password":"anin"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let read = |query: String| {
        let (http, cookie) = (http.clone(), cookie.clone());
        async move {
            let res = http.get(query).header("cookie", cookie).send().await.unwrap();
            let status = res.status().as_u16();
            (status, serde_json::from_str::<Value>(&res.text().await.unwrap()).unwrap_or_default())
        }
    };

    let (status, log) = read(url(&format!("bed=chair-1&alarm_id={alarm_id}"))).await;
    assert_eq!(status, 200, "{log}");
    let attempts = log["attempts"].as_array().unwrap();
    let of = |target: &str| attempts.iter().find(|a| a["target"] == target).unwrap_or_else(|| panic!("{log:#}"));
    let (pager, broken) = (of("pager"), of("broken"));
    assert_eq!((pager["ok"].as_bool(), pager["detail"].as_str()), (Some(true), Some("HTTP 200")), "{log:#}");
    assert_eq!((broken["ok"].as_bool(), broken["attempt"].as_u64()), (Some(false), Some(1)), "{log:#}");
    assert!(broken["detail"].as_str().unwrap().contains("HTTP 500: broken"), "{log:#}");
    assert!(attempts.iter().all(|a| a["alarm_id"] == alarm_id.as_str() && a["bed"] == "chair-1"), "{log:#}");
    assert!(attempts.iter().all(|a| a["time"].as_str().is_some_and(|t| t.ends_with('Z'))), "{log:#}");
    // Another alarm's attempts, another bed, a window that makes no sense.
    let (_, other) = read(url("bed=chair-1&alarm_id=chair-1-999")).await;
    assert_eq!(other["attempts"], serde_json::json!([]), "{other}");
    assert_eq!(read(url("bed=chair-9")).await.0, 404);
    let (status, refused) = read(url("bed=chair-1&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z")).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(read(url("bed=chair-1&from=2026-01-01T00:00:00Z&to=2026-01-03T00:00:00Z")).await.0, 400);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_chain_resumes_it_with_the_remaining_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (hooks, inbox) = webhook_server().await;
    let notify = three_targets(hooks).replace("wait_s = 2 }", "wait_s = 5 }");
    let daemon = common::Daemon::start(config(dir.path(), common::free_port(), &notify)).await;
    common::send_spo2(daemon.running.mllp.unwrap(), 80).await;
    let (_, t1) = inbox.wait("first", Duration::from_secs(3), |_| true).await.expect("step 1");
    daemon.stop().await;
    assert!(inbox.of("second").is_empty());

    // A new daemon on the same store: the latched alarm and its chain come back; step 2 is due 5 s after step 1.
    let again = common::Daemon::start(config(dir.path(), common::free_port(), &notify)).await;
    let restarted = Instant::now();
    let (second, t2) = inbox.wait("second", Duration::from_secs(8), |_| true).await.expect("the chain did not resume");
    assert_eq!(second["notification"]["reason"], "escalation step 2 of 3");
    let after_step_1 = t2 - t1;
    assert!(
        after_step_1 >= Duration::from_millis(4500) && after_step_1 < Duration::from_secs(7),
        "step 2 came {after_step_1:?} after step 1 ({:?} after the restart): the wait did not carry over",
        t2 - restarted
    );
    assert_eq!(inbox.of("first").len(), 1, "step 1 was sent again after the restart");
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_is_retried_and_does_not_delay_another_target() {
    let dir = tempfile::tempdir().unwrap();
    let (hooks, inbox) = webhook_server().await;
    let closed = common::free_port(); // nothing listens there: connection refused
    let notify = [
        webhook("refused", &format!("http://127.0.0.1:{closed}/x"), ""),
        webhook("silent", &format!("http://{hooks}/hang"), "timeout_s = 1"),
        webhook("working", &format!("http://{hooks}/working"), ""),
    ]
    .concat();
    let daemon = common::Daemon::start(config(dir.path(), common::free_port(), &notify)).await;
    let (dash, mllp) = (daemon.running.dashboard, daemon.running.mllp.unwrap());

    common::send_spo2(mllp, 80).await;
    let sent = Instant::now();
    let (_, at) = inbox.wait("working", Duration::from_secs(5), |v| phase(v) == "start").await.expect("no start");
    assert!(at - sent < Duration::from_secs(2), "the working target waited {:?}", at - sent);

    // Backoff 1 s, 2 s: by 4.5 s each failing target has been tried at least twice.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let log = log_until(dir.path(), |_| true).await;
    for target in ["refused", "silent"] {
        let tries: Vec<_> = log.iter().filter(|a| a.target == target).collect();
        assert!(tries.len() >= 2, "{target}: {tries:?}");
        assert!(tries.iter().all(|a| !a.ok), "{tries:?}");
        assert_eq!(tries.iter().map(|a| a.attempt).collect::<Vec<_>>()[..2], [1, 2]);
    }
    assert!(log.iter().any(|a| a.target == "silent" && a.detail.contains("timed out")), "{log:?}");
    // The third failure in a row (about 6 s in) makes the target failing: /api/status (the header), /readyz.
    let status = wait_status(dash, Duration::from_secs(6), |s| failing(s, "silent")).await;
    assert!(failing(&status, "refused") && !failing(&status, "working"), "{status:#}");
    let silent = status["notify"].as_array().unwrap().iter().find(|t| t["target"] == "silent").unwrap();
    assert!(silent["problem"]["failures"].as_u64().unwrap() >= 3, "{silent}");
    assert!(silent["problem"]["reason"].as_str().unwrap().contains("timed out"), "{silent}");
    let ready: Value = serde_json::from_str(&get(&format!("http://{dash}/readyz")).await).unwrap();
    assert_eq!(ready["notify"]["failing"], serde_json::json!(["refused", "silent"]), "{ready:#}");
    let m = metrics(dash).await;
    assert!(metric(&m, "vigil_notify_failures_total{target=\"refused\"}").unwrap() >= 2.0, "{m}");
    assert_eq!(metric(&m, "vigil_notify_pending{target=\"refused\"}"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "vigil_notify_target_failing{target=\"silent\"}"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "vigil_notify_target_failing{target=\"working\"}"), Some(0.0), "{m}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledge_link_works_once_and_a_second_use_or_a_wrong_token_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (hooks, inbox) = webhook_server().await;
    let notify = three_targets(hooks);
    let daemon = common::Daemon::start(config(dir.path(), common::free_port(), &notify)).await;
    common::send_spo2(daemon.running.mllp.unwrap(), 80).await;
    let (start, _) = inbox.wait("first", Duration::from_secs(3), |_| true).await.expect("step 1");
    let link = start["notification"]["ack_url"].as_str().unwrap().to_owned();
    let client = client();

    // Looking at the link (a chat app's preview does) acknowledges nothing.
    let page = client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Acknowledge this alarm?"));
    let wrong = format!("{}{}", &link[..link.len() - 1], if link.ends_with('0') { '1' } else { '0' });
    let refused = client.post(&wrong).send().await.unwrap();
    assert_eq!(refused.status(), 404);
    assert!(refused.text().await.unwrap().contains("unknown acknowledge link"));
    let snapshot = daemon.running.hub.snapshot();
    let alarm = &snapshot.beds[0].alarms.as_ref().unwrap().alarms[0];
    assert_eq!(alarm.state, vigil::event::AlarmState::Active, "a GET or a wrong token acknowledged it");

    let used = client.post(&link).send().await.unwrap();
    assert_eq!(used.status(), 200);
    assert!(used.text().await.unwrap().contains("is acknowledged (by notify:first)"));
    let (acked, _) =
        inbox.wait("first", Duration::from_secs(3), |v| v["state"] == "acknowledged").await.expect("no acknowledge");
    assert_eq!(acked["by"], "notify:first", "attributed to the target that carried the link");

    let again = client.post(&link).send().await.unwrap();
    assert_eq!(again.status(), 410);
    assert!(again.text().await.unwrap().contains("already used"));
    // The chain stopped: step 2 (due 2 s after step 1) never comes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(inbox.of("second").is_empty(), "{:?}", inbox.of("second"));
    let store = vigil::store::Store::open(&dir.path().join("vigil.db")).unwrap();
    let day = chrono::Duration::days(1);
    let actions = store.actions("chair-1", chrono::Utc::now() - day, chrono::Utc::now() + day).unwrap();
    assert!(actions.iter().any(|a| a.actor == "notify:first" && a.ok), "the audit trail has it: {actions:?}");
    daemon.stop().await;
}

/// A minimal SMTP receiver on loopback: takes one message, returns its DATA.
async fn smtp_listener() -> (SocketAddr, tokio::sync::oneshot::Receiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 test ESMTP\r\n").await.unwrap();
        let mut data = String::new();
        let mut in_data = false;
        while let Ok(Some(line)) = lines.next_line().await {
            if in_data {
                if line == "." {
                    in_data = false;
                    write.write_all(b"250 2.0.0 queued\r\n").await.unwrap();
                } else {
                    data.push_str(&line);
                    data.push('\n');
                }
                continue;
            }
            let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
            let answer: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250 test\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go ahead\r\n"
                }
                "QUIT" => {
                    write.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                }
                _ => b"250 OK\r\n",
            };
            write.write_all(answer).await.unwrap();
        }
        let _ = tx.send(data);
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_target_mails_the_alarm_with_its_acknowledge_link_to_a_real_smtp_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, mail) = smtp_listener().await;
    let notify = format!(
        "[[notify.targets]]\nname = \"mail\"\nkind = \"smtp\"\npriorities = [\"high\"]\nhost = \"127.0.0.1\"\n\
         port = {}\nsecurity = \"none\"\nfrom = \"Vigil <vigil@ward.example>\"\nto = [\"charge@ward.example\"]\n",
        smtp.port()
    );
    let daemon = common::Daemon::start(config(dir.path(), common::free_port(), &notify)).await;
    common::send_spo2(daemon.running.mllp.unwrap(), 80).await;
    let data = tokio::time::timeout(Duration::from_secs(5), mail).await.expect("no mail").unwrap();
    assert!(data.contains("Subject: [HIGH] Chair 1: SpO2"), "{data}");
    assert!(data.contains("To: charge@ward.example"), "{data}");
    assert!(data.contains("/ack/"), "{data}");
    let ok = |a: &vigil::store::notify::AttemptRecord| a.ok && a.detail.starts_with("SMTP 250");
    let logged = log_until(dir.path(), |l| l.iter().any(ok)).await;
    assert!(logged.iter().any(ok), "{logged:?}");
    daemon.stop().await;
}

/// An `acm` target at `address`, high alarms, quick timeouts and heartbeats.
fn acm_target(name: &str, address: &str) -> String {
    format!(
        "[[notify.targets]]\nname = \"{name}\"\nkind = \"acm\"\npriorities = [\"high\"]\n\
         acm = {{ address = \"{address}\", point_of_care = \"test-ward\", ack_timeout_s = 1, connect_timeout_s = 1, \
         heartbeat_interval_s = 1 }}\n"
    )
}

/// The bed's next alarm event for which `pred` holds, within `within`.
async fn next_alarm(
    events: &mut tokio::sync::broadcast::Receiver<Arc<vigil::hub::HubEvent>>,
    within: Duration,
    pred: impl Fn(&vigil::event::AlarmEvent) -> bool,
) -> vigil::event::AlarmEvent {
    tokio::time::timeout(within, async {
        loop {
            if let vigil::event::Event::Alarm(a) = &events.recv().await.unwrap().event {
                if pred(a) {
                    return a.clone();
                }
            }
        }
    })
    .await
    .expect("the alarm event came in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_managers_ora_r41_acknowledges_the_alarm_in_the_bed_and_stops_the_chain_before_the_next_step() {
    let dir = tempfile::tempdir().unwrap();
    let (hooks, inbox) = webhook_server().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let am = listener.local_addr().unwrap().to_string();
    let options =
        vigil_sim::alert_manager::AlertManagerOptions { ack_after: Some(Duration::from_secs(1)), ..Default::default() };
    let (mut lines, _manager) = common::alert_manager(listener, options);
    let chain = "[[notify.escalation]]\npriority = \"high\"\n\
                 steps = [{ target = \"am\", wait_s = 4 }, { target = \"second\", wait_s = 60 }]\n";
    let notify = acm_target("am", &am) + &webhook("second", &format!("http://{hooks}/second"), "") + chain;
    let daemon = common::Daemon::start(config(dir.path(), common::free_port(), &notify)).await;
    let (dash, mllp) = (daemon.running.dashboard, daemon.running.mllp.unwrap());
    let (_, mut events) = daemon.running.hub.subscribe();

    common::send_spo2(mllp, 80).await;
    let start = next_alarm(&mut events, Duration::from_secs(5), |a| a.phase == vigil::event::AlarmPhase::Start).await;
    let alert = common::next_line(&mut lines, "alert", Duration::from_secs(3)).await;
    assert_eq!((alert["alert_id"].as_str(), alert["phase"].as_str()), (Some(start.alarm_id.as_str()), Some("start")));
    assert_eq!(alert["processing_id"], "P", "a real alarm is a production message");
    // The manager's nurse accepts it 1 s later: the bed acknowledges it, attributed to the target and the nurse.
    let acked = next_alarm(&mut events, Duration::from_secs(4), |a| a.by.is_some()).await;
    assert_eq!(acked.alarm_id, start.alarm_id);
    assert_eq!(acked.state, vigil::event::AlarmState::Acknowledged);
    let by = acked.by.clone().unwrap();
    assert!(by.starts_with("notify:am:") && by.len() > "notify:am:".len(), "{by}");
    // The acknowledge reaches the manager as an update, and the chain stops before its second step.
    let update = common::next_line(&mut lines, "alert", Duration::from_secs(3)).await;
    assert_eq!(
        (update["phase"].as_str(), update["inactivation"].as_str()),
        (Some("update"), Some("alert-acknowledged"))
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        inbox.of("second").is_empty(),
        "the chain went on after the manager's acknowledge: {:?}",
        inbox.of("second")
    );
    let chains: Value = serde_json::from_str(&get(&format!("http://{dash}/api/notify/chains")).await).unwrap();
    assert_eq!(chains["chains"][0]["status"], "acknowledged", "{chains:#}");
    assert_eq!(chains["chains"][0]["by"], by.as_str(), "{chains:#}");
    let log = log_until(dir.path(), |l| l.len() >= 2).await;
    assert!(log.iter().filter(|a| a.target == "am").all(|a| a.ok && a.detail.starts_with("ACK AA")), "{log:?}");
    let m = metrics(dash).await;
    assert_eq!(metric(&m, "vigil_notify_acknowledged_total{target=\"am\"}"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "vigil_acm_link_up{target=\"am\"}"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "vigil_notify_target_failing{target=\"am\"}"), Some(0.0), "{m}");
    daemon.stop().await;
    // A deliberate stop ends the link with a last heartbeat (phase end).
    let mut last = common::next_line(&mut lines, "heartbeat", Duration::from_secs(3)).await;
    while last["phase"] != "end" {
        last = common::next_line(&mut lines, "heartbeat", Duration::from_secs(3)).await;
    }
    assert_eq!(last["state"], "inactive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_alert_manager_shows_as_a_failing_target_on_status_readyz_and_metrics_without_any_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let closed = format!("127.0.0.1:{}", common::free_port()); // nothing listens: every heartbeat is refused
    let daemon = common::Daemon::start(config(dir.path(), common::free_port(), &acm_target("am", &closed))).await;
    let dash = daemon.running.dashboard;
    // Heartbeats every second: the third unanswered one makes the target failing.
    let status = wait_status(dash, Duration::from_secs(8), |s| failing(s, "am")).await;
    let am = &status["notify"][0];
    assert_eq!(
        (am["target"].as_str(), am["kind"].as_str(), am["failing"].as_bool()),
        (Some("am"), Some("acm"), Some(true)),
        "{status:#}"
    );
    assert_eq!(am["connected"], false);
    assert!(am["problem"]["reason"].as_str().unwrap().contains(&closed), "{am}");
    let ready: Value = serde_json::from_str(&get(&format!("http://{dash}/readyz")).await).unwrap();
    assert_eq!(ready["notify"]["failing"], serde_json::json!(["am"]), "{ready:#}");
    let m = metrics(dash).await;
    assert_eq!(metric(&m, "vigil_acm_link_up{target=\"am\"}"), Some(0.0), "{m}");
    assert!(metric(&m, "vigil_acm_heartbeats_missed_total{target=\"am\"}").unwrap() >= 3.0, "{m}");
    assert_eq!(metric(&m, "vigil_notify_target_failing{target=\"am\"}"), Some(1.0), "{m}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_test_has_a_hop_per_target_passed_on_a_2xx_or_an_ack_aa_and_failed_with_the_reason_on_a_500() {
    let dir = tempfile::tempdir().unwrap();
    let (hooks, inbox) = webhook_server().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let am = listener.local_addr().unwrap().to_string();
    let (mut lines, _manager) = common::alert_manager(listener, Default::default());
    let notify = [
        webhook("good", &format!("http://{hooks}/good"), ""),
        webhook("broken", &format!("http://{hooks}/fail"), ""),
        acm_target("am", &am),
        "[selftest]\nevery = \"1s\"\n".to_owned(),
    ]
    .concat();
    let daemon = common::Daemon::start(config(dir.path(), common::free_port(), &notify)).await;
    let dash = daemon.running.dashboard;
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let ready: Value = serde_json::from_str(&get(&format!("http://{dash}/readyz")).await).unwrap();
        if ready["selftest"]["ran"] == true || Instant::now() > deadline {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let hops = ready["selftest"]["hops"].as_array().expect("a self-test ran");
    let hop = |name: &str| hops.iter().find(|h| h["hop"] == name).unwrap_or_else(|| panic!("no {name}: {ready:#}"));
    assert_eq!(hop("notify:good")["ok"], true, "{ready:#}");
    assert!(hop("notify:good")["detail"].as_str().unwrap().contains("HTTP 200"), "{ready:#}");
    assert_eq!(hop("notify:am")["ok"], true, "{ready:#}");
    assert!(hop("notify:am")["detail"].as_str().unwrap().contains("ACK AA"), "{ready:#}");
    assert_eq!(hop("notify:broken")["ok"], false, "{ready:#}");
    assert!(hop("notify:broken")["detail"].as_str().unwrap().contains("HTTP 500: broken"), "{ready:#}");
    // Marked as a test wherever it went: the webhook's body and headline, the ORU^R40's MSH-11 and text.
    let body = &inbox.of("good")[0];
    assert_eq!(body["test"], true, "{body}");
    assert!(body["notification"]["headline"].as_str().unwrap().starts_with("[TEST]"), "{body}");
    assert!(body["notification"]["ack_url"].is_null(), "a test alarm has nothing to acknowledge: {body}");
    let alert = common::next_line(&mut lines, "alert", Duration::from_secs(2)).await;
    assert_eq!(alert["processing_id"], "T", "{alert}");
    assert!(alert["text"].as_str().unwrap().starts_with("TEST"), "{alert}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_escalation_example_reaches_the_first_webhook_in_two_seconds_the_second_after_its_wait_and_the_alert_manager(
) {
    // config/examples/demo-escalation.toml as shipped, on this test's ports, with the chair's scenario 30 times
    // faster and the first step's wait 3 s instead of 60 (the issue's "Done when", tried against the real daemon).
    let dir = tempfile::tempdir().unwrap();
    let (hooks, inbox) = webhook_server().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let am = listener.local_addr().unwrap().to_string();
    let (mut lines, _manager) = common::alert_manager(listener, Default::default());
    let port = common::free_port();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("config/examples/demo-escalation.toml")).unwrap();
    let text = example
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9101", &hooks.to_string())
        .replace("127.0.0.1:2576", &am)
        .replace("vigil-escalation-demo.db", &dir.path().join("vigil.db").display().to_string())
        .replace("seed = 1\n", "seed = 1\nspeed = 30\n")
        .replace("{ target = \"bay-nurse\", wait_s = 60 }", "{ target = \"bay-nurse\", wait_s = 3 }");
    assert!(text.contains(&format!("address = \"{am}\"")), "the example's Alert Manager address moved");
    assert!(text.contains("wait_s = 3") && text.contains("speed = 30"), "the example's chain or scenario moved");
    let config = vigil::config::Config::parse(&text, "demo-escalation.toml", dir.path()).unwrap();
    let daemon = common::Daemon::start(config).await;
    let (_, mut events) = daemon.running.hub.subscribe();

    let start = next_alarm(&mut events, Duration::from_secs(60), |a| {
        a.phase == vigil::event::AlarmPhase::Start && a.priority == vigil::event::Priority::High
    })
    .await;
    let raised = Instant::now();
    let is_start = |v: &Value| phase(v) == "start" && v["alarm_id"] == start.alarm_id.as_str();
    let (first, at) = inbox.wait("bay-nurse", Duration::from_secs(5), is_start).await.expect("bay-nurse got it");
    assert!(at - raised < Duration::from_secs(2), "the first step took {:?}", at - raised);
    assert_eq!(first["notification"]["reason"], "escalation step 1 of 2");
    // Nobody acknowledges: the charge nurse gets it (as it is by then) after the first step's wait.
    let same = |v: &Value| v["alarm_id"] == start.alarm_id.as_str();
    let (second, at2) = inbox.wait("charge-nurse", Duration::from_secs(8), same).await.expect("charge-nurse got it");
    assert!(at2 - at >= Duration::from_millis(2500), "the second step came after {:?}", at2 - at);
    assert_eq!(second["notification"]["reason"], "escalation step 2 of 2");
    // The Alert Manager received a well-formed ORU^R40 for the same alarm.
    let alert = loop {
        let a = common::next_line(&mut lines, "alert", Duration::from_secs(5)).await;
        if a["alert_id"] == start.alarm_id.as_str() {
            break a;
        }
    };
    assert_eq!((alert["phase"].as_str(), alert["priority"].as_str()), (Some("start"), Some("PH")), "{alert}");
    assert_eq!((alert["bed"].as_str(), alert["point_of_care"].as_str()), (Some("chair-1"), Some("ketamine-suite")));
    assert_eq!(alert["processing_id"], "P");
    assert_eq!(alert["text"], start.message.as_str());
    assert!(
        alert["source"].as_str().unwrap_or_default().contains("MDC_PULS_OXIM_SAT_O2")
            || alert["source_value"].as_str().unwrap_or_default().contains("MDC_PULS_OXIM_SAT_O2"),
        "{alert}"
    );
    daemon.stop().await;
}
