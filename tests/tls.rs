//! Vigil's own TLS listeners (`dashboard.tls`, `mllp.tls`), over real sockets with real rustls clients and a test
//! CA made at test time with the `openssl` command (CI installs it; without it these tests fail under CI=true).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_util::sync::CancellationToken;
use vigil::config::Config;

use common::pki::Pki;

const NURSE_PASSWORD: &str = "nurse-pass-1";

/// One chair fed over MLLP, MQTT off, a nurse; `tls` is appended to the `[dashboard]` and `[mllp]` sections.
fn config(dir: &Path, dashboard_tls: &str, mllp_tls: &str) -> String {
    format!(
        r#"
[site]
name = "t"
ward = "w"
[mqtt]
mode = "disabled"
[dashboard]
listen = "127.0.0.1:0"
{dashboard_tls}
[store]
path = "{db}"
[mllp]
listen = "127.0.0.1:0"
{mllp_tls}
[[users]]
name = "nina"
role = "nurse"
password_hash = "{hash}"
[[beds]]
id = "chair-1"
[[beds.sources]]
kind = "mllp"
device = "hl7"
device_id = "00A0370098007A80"
"#,
        db = dir.join("vigil.db").display(),
        hash = vigil::auth::hash_password(NURSE_PASSWORD).unwrap(),
    )
}

fn tls_section(table: &str, pki: &Pki, key: &str, client_ca: bool) -> String {
    let ca = if client_ca { format!("client_ca_file = \"{}\"\n", pki.path("ca.pem")) } else { String::new() };
    format!("[{table}.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{ca}", pki.path("server.pem"), pki.path(key))
}

async fn request<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, raw: &str) -> String {
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // A TLS peer may close without close_notify after `Connection: close`; what arrived counts.
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

async fn https(pki: &Pki, addr: SocketAddr, raw: &str) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = pki.connector(false).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    request(&mut tls, raw).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_over_tls_serves_a_rustls_client_sets_a_secure_cookie_and_survives_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pki) = Pki::make(dir.path()) else { return };
    let text = config(dir.path(), &tls_section("dashboard", &pki, "server.key", false), "");
    let daemon = common::Daemon::start(Config::parse(&text, "tls.toml", dir.path()).unwrap()).await;
    let dash = daemon.running.dashboard;

    let me = https(&pki, dash, "GET /api/me HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert!(me.starts_with("HTTP/1.1 200"), "{me}");
    assert!(me.contains("\"signed_in\":false"), "{me}");

    // Plain HTTP to the TLS port gets no HTTP answer, and nothing else is disturbed.
    let mut plain = tokio::net::TcpStream::connect(dash).await.unwrap();
    let answer = request(&mut plain, "GET /api/me HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert!(!answer.contains("HTTP/1.1 200") && !answer.contains("signed_in"), "plain HTTP was served: {answer}");

    let body = format!(r#"{{"name":"nina","password":"{NURSE_PASSWORD}"}}"#);
    let sign_in = format!(
        "POST /api/session HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = https(&pki, dash, &sign_in).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let cookie =
        answer.lines().find_map(|l| l.strip_prefix("set-cookie: ")).unwrap_or_else(|| panic!("no cookie in {answer}"));
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Max-Age=43200"] {
        assert!(cookie.split("; ").any(|a| a == attribute), "{attribute} missing: {cookie}");
    }
    daemon.stop().await;
}

/// Sends one MLLP frame and returns what came back within 5 s (empty when the connection closed).
async fn mllp_exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> String {
    let mut framed = vec![0x0b];
    framed.extend_from_slice(common::mindray().as_bytes());
    framed.extend_from_slice(&[0x1c, 0x0d]);
    if stream.write_all(&framed).await.is_err() {
        return String::new();
    }
    let mut ack = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut ack)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&ack[..n]).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_over_tls_takes_messages_only_from_monitors_with_a_certificate_from_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pki) = Pki::make(dir.path()) else { return };
    let text = config(dir.path(), "", &tls_section("mllp", &pki, "server.key", true));
    let daemon = common::Daemon::start(Config::parse(&text, "tls.toml", dir.path()).unwrap()).await;
    let mllp = daemon.running.mllp.unwrap();
    let name = || ServerName::try_from("localhost").unwrap();

    // Plain MLLP to the TLS port: no ACK, the connection just ends.
    let mut plain = tokio::net::TcpStream::connect(mllp).await.unwrap();
    assert!(!mllp_exchange(&mut plain).await.contains("MSA|"), "plain MLLP was answered");

    // TLS without a client certificate: refused (at the handshake, or when the server checks it after TLS 1.3's
    // client Finished), never answered.
    let tcp = tokio::net::TcpStream::connect(mllp).await.unwrap();
    if let Ok(mut tls) = pki.connector(false).connect(name(), tcp).await {
        assert!(!mllp_exchange(&mut tls).await.contains("MSA|"), "a monitor without a certificate was answered");
    }

    // A monitor with a certificate from the CA gets its ACK.
    let tcp = tokio::net::TcpStream::connect(mllp).await.unwrap();
    let mut tls = pki.connector(true).connect(name(), tcp).await.unwrap();
    let ack = mllp_exchange(&mut tls).await;
    assert!(ack.contains("MSA|AA"), "{ack}");
    // Both refusals are counted where the ward can see them (each ended before its client's read returned).
    let status = common::http_get(daemon.running.dashboard, "/api/status").await;
    assert!(status.contains(r#""failed_tls_handshakes":2"#), "{status}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_is_not_the_certificates_or_a_missing_file_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pki) = Pki::make(dir.path()) else { return };
    let mismatched = config(dir.path(), &tls_section("dashboard", &pki, "other.key", false), "");
    let err = vigil::start(Config::parse(&mismatched, "tls.toml", dir.path()).unwrap(), CancellationToken::new())
        .await
        .err()
        .expect("a mismatched key is refused");
    let msg = err.to_string();
    assert!(msg.starts_with("dashboard.tls.key_file: ") && msg.contains("cannot be used together"), "{msg}");

    let missing = config(dir.path(), "", &tls_section("mllp", &pki, "absent.key", false));
    let err = vigil::start(Config::parse(&missing, "tls.toml", dir.path()).unwrap(), CancellationToken::new())
        .await
        .err()
        .expect("a missing key file is refused");
    let msg = err.to_string();
    assert!(msg.starts_with("mllp.tls.key_file: cannot read '") && msg.contains("absent.key"), "{msg}");

    // `vigil check-config` reads the files too, and exits 64 like any other configuration error.
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, &mismatched).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil")).arg("check-config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dashboard.tls.key_file"));
}

#[test]
fn check_config_warns_about_a_dashboard_or_mllp_listener_off_loopback_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), "allowed_hosts = [\"vigil.ward.test\"]", "allow = [\"10.1.2.0/24\"]")
        .replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
    let warnings = Config::parse(&text, "tls.toml", dir.path()).unwrap().warnings();
    let keys: Vec<&str> = warnings.iter().map(|(k, _)| k.as_str()).collect();
    assert!(keys.contains(&"dashboard.tls") && keys.contains(&"mllp.tls"), "{warnings:?}");
    let on_loopback = Config::parse(&config(dir.path(), "", ""), "tls.toml", dir.path()).unwrap().warnings();
    assert!(!on_loopback.iter().any(|(k, _)| k.ends_with(".tls")), "{on_loopback:?}");
}
