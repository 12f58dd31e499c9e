//! Attacks from the clinic LAN against the whole daemon, over real sockets (issue 12): DNS rebinding, sign-in
//! floods, unauthenticated exports, and oversized input that used to stop MQTT alarm delivery.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{free_port, wait_for_publish};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil::config::Config;

const NURSE_PASSWORD: &str = "nurse-pass-1";

/// The tests of this file run one at a time: they share the process's password-hashing threads (a flood in one
/// would make another's sign-in busy) and one measures the process's memory.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One chair fed over MLLP by device 00A0370098007A80, the embedded broker on `mqtt_port`, a nurse and a viewer.
fn config(dir: &std::path::Path, mqtt_port: u16, demo: bool) -> Config {
    config_with(dir, mqtt_port, demo, "")
}

/// [`config`] with more `[dashboard]` keys.
fn config_with(dir: &std::path::Path, mqtt_port: u16, demo: bool, dashboard: &str) -> Config {
    let users = if demo {
        String::new()
    } else {
        format!(
            "[[users]]\nname = \"nina\"\nrole = \"nurse\"\npassword_hash = \"{}\"\n\
             [[users]]\nname = \"victor\"\nrole = \"viewer\"\npassword_hash = \"{}\"\n",
            vigil::auth::hash_password(NURSE_PASSWORD).unwrap(),
            vigil::auth::hash_password("rotciv").unwrap()
        )
    };
    let text = format!(
        r#"
[site]
name = "t"
ward = "w"
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "vigil-attacks-{mqtt_port}"
[dashboard]
listen = "127.0.0.1:0"
demo_actions_without_sign_in = {demo}
{dashboard}
[store]
path = "{db}"
[mllp]
listen = "127.0.0.1:0"
{users}
[[beds]]
id = "chair-1"
[[beds.sources]]
kind = "mllp"
device = "hl7"
device_id = "00A0370098007A80"
silence_alarm_s = 2
"#,
        db = dir.join("vigil.db").display(),
    );
    Config::parse(&text, "attacks.toml", dir).unwrap()
}

/// A raw HTTP/1.1 request from `local` (a loopback address: Linux routes all of 127.0.0.0/8 to lo). Returns the
/// status code and the body; status 0 when the connection was refused or reset (under a flood, by the kernel's
/// full accept queue or the server).
async fn http(
    local: &str,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    match try_http(local, addr, method, path, headers, body).await {
        Ok(answer) => answer,
        Err(e) => (0, e.to_string()),
    }
}

async fn try_http(
    local: &str,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let text = http_response(local, addr, method, path, headers, body).await?;
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// The whole response (status line, headers, body) to a raw HTTP/1.1 request from `local`.
async fn http_response(
    local: &str,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<String> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{local}:0").parse().unwrap())?;
    let mut stream = socket.connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut response)).await??;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebinding_host_header_gets_421_on_api_me_and_on_a_command_even_in_the_loopback_demo() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = common::Daemon::start(config(dir.path(), free_port(), true)).await;
    let dash = daemon.running.dashboard;
    let evil = [("Host", "evil.example:8080"), ("Origin", "http://evil.example:8080")];
    let (status, body) = http("127.0.0.1", dash, "GET", "/api/me", &evil, "").await;
    assert_eq!(status, 421, "{body}");
    assert!(!body.contains("csrf\":\""), "no CSRF token for a foreign host: {body}");
    let mut with_ct = evil.to_vec();
    with_ct.push(("Content-Type", "application/json"));
    let (status, _) =
        http("127.0.0.1", dash, "POST", "/api/beds/chair-1/commands", &with_ct, r#"{"command":"acknowledge"}"#).await;
    assert_eq!(status, 421);
    // The demo itself still works for the real local host name.
    let (status, body) = http("127.0.0.1", dash, "GET", "/api/me", &[("Host", "localhost")], "").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"demo\":true"), "{body}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_parallel_wrong_sign_ins_leave_the_daemon_alive_with_bounded_memory_and_the_nurse_signs_in() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = common::Daemon::start(config(dir.path(), free_port(), false)).await;
    let dash = daemon.running.dashboard;
    let before = rss_kib();
    let json = [("Content-Type", "application/json")];
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..300 {
        // Half guess the nurse's password, half spray random names, all from one attacker address.
        let name = if i % 2 == 0 { "nina".to_owned() } else { format!("user-{i}") };
        let body = format!(r#"{{"name":"{name}","password":"guess-{i}"}}"#);
        guesses.spawn(async move { http("127.0.0.2", dash, "POST", "/api/session", &json, &body).await.0 });
    }
    let mut statuses = Vec::new();
    while let Some(s) = guesses.join_next().await {
        statuses.push(s.unwrap());
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    // Every guess is refused: wrong password (401), locked out (429), hashing queue full (503), or the connection
    // dropped under the flood (0); none signs in.
    assert!(statuses.iter().all(|s| [0, 401, 429, 503].contains(s)), "{statuses:?}");
    let hashed = statuses.iter().filter(|s| **s == 401).count();
    assert!(hashed <= vigil::auth::LOCKOUT_ADDRESS_FAILURES as usize, "{hashed} guesses were hashed");
    eprintln!("memory grew by {grown_mib} MiB during the flood");
    assert!(grown_mib < 256, "memory grew by {grown_mib} MiB");
    // The attacker locked only itself out: the nurse at her own station signs in at once.
    let body = format!(r#"{{"name":"nina","password":"{NURSE_PASSWORD}"}}"#);
    let (status, me) = http("127.0.0.1", dash, "POST", "/api/session", &json, &body).await;
    assert_eq!(status, 200, "{me}");
    assert!(me.contains("\"signed_in\":true"), "{me}");
    let (status, _) = http("127.0.0.2", dash, "POST", "/api/session", &json, &body).await;
    assert_eq!(status, 429, "the attacker's address stays paused");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_export_gets_401_when_users_are_configured() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = common::Daemon::start(config(dir.path(), free_port(), false)).await;
    let dash = daemon.running.dashboard;
    for path in ["/api/beds/chair-1/export.csv", "/api/beds/chair-1/export.csv?from=1970-01-01T00:00:00Z"] {
        let (status, body) = http("127.0.0.1", dash, "GET", path, &[], "").await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    let (status, _) = http("127.0.0.1", dash, "GET", "/api/beds/chair-1/history", &[], "").await;
    assert_eq!(status, 401);
    daemon.stop().await;
}

async fn mllp_send(addr: SocketAddr, msg: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut framed = vec![0x0b];
    framed.extend_from_slice(msg.as_bytes());
    framed.extend_from_slice(&[0x1c, 0x0d]);
    s.write_all(&framed).await.unwrap();
    let mut ack = vec![0u8; 1 << 20];
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read(&mut ack)).await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_kb_hl7_field_and_a_1_mb_patient_leave_alarm_delivery_on_mqtt_working() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mqtt_port = free_port();
    let daemon = common::Daemon::start(config(dir.path(), mqtt_port, false)).await;
    let (dash, mllp) = (daemon.running.dashboard, daemon.running.mllp.unwrap());

    let mut o = MqttOptions::new("attacks-sub", "127.0.0.1", mqtt_port);
    o.set_keep_alive(Duration::from_secs(5)).set_credentials("victor", "rotciv").set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 100);
    client.subscribe("vigil/v1/t/w/#", QoS::AtLeastOnce).await.unwrap();
    wait_for_publish(&mut el, Duration::from_secs(15), |t, _| t.ends_with("/status")).await.expect("online");

    // A real message first (the device is live), then one whose MSH-9 is a 300 KB field.
    let _live = mllp_send(mllp, &common::mindray()).await;
    let huge = common::mindray().replacen("ORU^R01", &format!("{}^R01", "X".repeat(300_000)), 1);
    let _bad = mllp_send(mllp, &huge).await;
    let device = wait_for_publish(&mut el, Duration::from_secs(15), |t, p| {
        t.ends_with("/bed/chair-1/device") && String::from_utf8_lossy(p).contains("\"frames_bad\":1")
    })
    .await
    .expect("the device status with the bad frame reaches MQTT");
    assert!(device.len() < 4096, "the device payload is bounded: {} bytes", device.len());

    // A 1 MB patient pseudonym from a signed-in nurse is refused by the dashboard, with the MQTT limit's reason.
    let (cookie, csrf) = sign_in_cookie(dash).await;
    let patient = format!(r#"{{"command":"session_start","patient":"{}"}}"#, "P".repeat(1 << 20));
    let cmd_headers = [("Content-Type", "application/json"), ("Cookie", cookie.as_str()), ("X-CSRF-Token", &csrf)];
    let (status, body) = http("127.0.0.1", dash, "POST", "/api/beds/chair-1/commands", &cmd_headers, &patient).await;
    assert_eq!(status, 400, "{}", &body[..body.len().min(200)]);
    assert!(body.contains("patient pseudonym longer than"), "{}", &body[..body.len().min(200)]);

    // Alarms still reach MQTT: the monitor falls silent, and the no-data technical alarm is published.
    let alarm = wait_for_publish(&mut el, Duration::from_secs(20), |t, _| t.ends_with("/bed/chair-1/alarm")).await;
    assert!(alarm.is_some(), "an alarm event reached MQTT after the oversized input");
    daemon.stop().await;
}

/// Signs the nurse in and returns the `name=value` of the session cookie and the session's CSRF token.
async fn sign_in_cookie(dash: SocketAddr) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(dash).await.unwrap();
    let body = format!(r#"{{"name":"nina","password":"{NURSE_PASSWORD}"}}"#);
    let req = format!(
        "POST /api/session HTTP/1.1\r\nHost: {dash}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let cookie = text
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let me: serde_json::Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    (cookie, me["csrf"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored_and_a_trusted_proxys_is_believed() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let trusted = r#"trusted_proxies = ["127.0.0.3"]"#;
    let daemon = common::Daemon::start(config_with(dir.path(), free_port(), false, trusted)).await;
    let dash = daemon.running.dashboard;
    let sign_in = |local: &'static str, forwarded_for: String, password: &'static str| async move {
        let headers = [
            ("Content-Type", "application/json"),
            ("X-Forwarded-For", forwarded_for.as_str()),
            ("X-Forwarded-Proto", "https"),
        ];
        let body = format!(r#"{{"name":"nina","password":"{password}"}}"#);
        http_response(local, dash, "POST", "/api/session", &headers, &body).await.unwrap()
    };
    let status = |r: &str| r.split(' ').nth(1).unwrap_or("").to_owned();
    let cookie = |r: &str| {
        r.lines().find_map(|l| l.strip_prefix("set-cookie: ")).unwrap_or_else(|| panic!("no cookie: {r}")).to_owned()
    };

    // 127.0.0.2 is no proxy: each guess claims another address, yet all count against 127.0.0.2.
    for i in 0..vigil::auth::LOCKOUT_FAILURES {
        assert_eq!(status(&sign_in("127.0.0.2", format!("10.9.9.{i}"), "wrong").await), "401");
    }
    assert_eq!(status(&sign_in("127.0.0.2", "10.9.9.200".into(), NURSE_PASSWORD).await), "429");
    // Nor does its X-Forwarded-Proto make a plain-HTTP cookie Secure.
    let plain = sign_in("127.0.0.4", "10.9.9.201".into(), NURSE_PASSWORD).await;
    assert_eq!(status(&plain), "200", "{plain}");
    assert!(!cookie(&plain).contains("Secure"), "{}", cookie(&plain));

    // Through the trusted proxy, the lockout is per forwarded client: 10.0.0.66 is paused, the nurse at 10.0.0.5
    // (the same proxy) signs in, and the proxy's `https` makes her cookie Secure.
    for _ in 0..vigil::auth::LOCKOUT_FAILURES {
        assert_eq!(status(&sign_in("127.0.0.3", "10.0.0.66".into(), "wrong").await), "401");
    }
    assert_eq!(status(&sign_in("127.0.0.3", "10.0.0.66".into(), NURSE_PASSWORD).await), "429");
    let proxied = sign_in("127.0.0.3", "6.6.6.6, 10.0.0.5".into(), NURSE_PASSWORD).await;
    assert_eq!(status(&proxied), "200", "{proxied}");
    assert!(cookie(&proxied).split("; ").any(|a| a == "Secure"), "{}", cookie(&proxied));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_without_read_rights_gets_a_suback_failure_and_never_receives_commands_or_replies() {
    use rumqttc::{Event, Packet, SubscribeFilter, SubscribeReasonCode};
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mqtt_port = free_port();
    let daemon = common::Daemon::start(config(dir.path(), mqtt_port, false)).await;
    let base = "vigil/v1/t/w";
    let client = |id: &str, user: &str, password: &str| {
        let mut o = MqttOptions::new(id, "127.0.0.1", mqtt_port);
        o.set_keep_alive(Duration::from_secs(5)).set_credentials(user, password);
        AsyncClient::new(o, 100)
    };

    // One SUBSCRIBE with a readable filter and two unreadable ones: granted, refused, refused.
    let (viewer, mut viewer_el) = client("attacks-viewer", "victor", "rotciv");
    let filters = [format!("{base}/bed/#"), format!("{base}/reply/#"), format!("{base}/cmd/#")];
    viewer.subscribe_many(filters.iter().map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))).await.unwrap();
    let codes = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Ok(Event::Incoming(Packet::SubAck(ack))) = viewer_el.poll().await {
                return ack.return_codes;
            }
        }
    })
    .await
    .expect("a SUBACK");
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure
        ]
    );
    // A broad filter is granted, but only readable topics come through it.
    viewer.subscribe(format!("{base}/#"), QoS::AtLeastOnce).await.unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let (granted_tx, granted) = tokio::sync::oneshot::channel();
    let viewer_task = tokio::spawn(async move {
        let mut granted_tx = Some(granted_tx);
        loop {
            match viewer_el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = seen_tx.send(p.topic.clone());
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if let Some(tx) = granted_tx.take() {
                        let _ = tx.send(ack.return_codes);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let codes = tokio::time::timeout(Duration::from_secs(15), granted).await.unwrap().unwrap();
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);

    // The nurse watches the replies (her right) and sends a command; Vigil answers on reply/chair-1.
    let (nurse_sub, mut nurse_sub_el) = client("attacks-nurse-sub", "nina", NURSE_PASSWORD);
    nurse_sub.subscribe(format!("{base}/reply/#"), QoS::AtLeastOnce).await.unwrap();
    let (nurse, mut nurse_el) = client("attacks-nurse", "nina", NURSE_PASSWORD);
    let command = format!("{base}/cmd/chair-1/nina");
    let nurse_task = tokio::spawn(async move { while nurse_el.poll().await.is_ok() {} });
    let mut reply = None;
    for i in 0..20 {
        let payload = format!(r#"{{"command":"acknowledge","request_id":"r{i}"}}"#);
        nurse.publish(&command, QoS::AtLeastOnce, false, payload).await.unwrap();
        reply = wait_for_publish(&mut nurse_sub_el, Duration::from_millis(500), |t, _| t.contains("/reply/")).await;
        if reply.is_some() {
            break;
        }
    }
    assert!(reply.is_some(), "the nurse got her reply");

    tokio::time::sleep(Duration::from_secs(1)).await;
    viewer_task.abort();
    let mut seen = Vec::new();
    while let Ok(topic) = seen_rx.try_recv() {
        seen.push(topic);
    }
    assert!(seen.iter().any(|t| t.ends_with("/status") || t.contains("/bed/")), "the viewer reads bed data: {seen:?}");
    assert!(!seen.iter().any(|t| t.contains("/reply/") || t.contains("/cmd/")), "the viewer read {seen:?}");
    nurse_task.abort();
    daemon.stop().await;
}
