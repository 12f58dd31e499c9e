//! IHE PCD ACM on loopback: Vigil's `AcmClient` against `vigil-sim alert-manager` (the simulator's independent
//! Alert Manager, run in-process on a real TCP listener). The daemon's `kind = "acm"` target (queue, chain,
//! ORA^R41 acknowledges, link health, self-test hop) is tested in `tests/notify.rs`; here it runs over TLS.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::net::TcpListener;
use vigil::event::{AlarmEvent, AlarmKind, AlarmPhase, AlarmState, Priority};
use vigil::notify::acm_client::{AcmClient, AcmError, AcmOutcome, AcmTargetConfig};
use vigil::vitals::Parameter;
use vigil_sim::alert_manager::AlertManagerOptions;

use common::{alert_manager as manager, next_line as next_of};

fn target(address: &str) -> AcmTargetConfig {
    AcmTargetConfig {
        sending_facility: "test-site".into(),
        point_of_care: "test-ward".into(),
        ack_timeout_s: 1,
        connect_timeout_s: 1,
        give_up_after_s: 20,
        ..AcmTargetConfig::new(address)
    }
}

fn spo2_low(alarm_id: &str) -> AlarmEvent {
    AlarmEvent {
        time: Utc::now(),
        bed: "chair-1".into(),
        alarm_id: alarm_id.into(),
        seq: 1,
        bed_seq: 1,
        kind: AlarmKind::Threshold,
        source: Default::default(),
        condition: "spo2_low".into(),
        parameter: Some(Parameter::Spo2),
        priority: Priority::High,
        phase: AlarmPhase::Start,
        state: AlarmState::Active,
        value: Some(84.0),
        limit: Some(88.0),
        evidence: Default::default(),
        test: false,
        message: "SpO2 84 < 88 | rapid".into(),
        by: None,
        audio_paused_until: None,
    }
}

#[tokio::test]
async fn an_accepted_alarm_is_answered_once_and_the_managers_ora_r41_acknowledgement_surfaces() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (mut lines, _am) =
        manager(listener, AlertManagerOptions { ack_after: Some(Duration::from_secs(1)), ..Default::default() });
    let client = AcmClient::new(target(&address)).await.unwrap();
    let mut statuses = client.statuses();
    let reply = client.send_alert(&spo2_low("chair-1-a1")).await.unwrap();
    assert_eq!(reply.outcome, AcmOutcome::Accepted { code: "AA".into() });
    assert_eq!(reply.attempts, 1);
    assert_eq!(reply.acknowledged, None, "the manager acknowledges only after 1 s");
    let alert = next_of(&mut lines, "alert", Duration::from_secs(2)).await;
    assert_eq!(alert["alert_id"], "chair-1-a1");
    assert_eq!(alert["bed"], "chair-1");
    assert_eq!(alert["event"], "196670^MDC_EVT_LO^MDC");
    assert_eq!(alert["phase"], "start");
    assert_eq!(alert["priority"], "PH");
    assert_eq!(alert["text"], "SpO2 84 < 88 | rapid");
    assert_eq!(alert["duplicate"], false);
    // The ORA^R41 after 1 s reaches the client, which answers it with ACK^R41.
    let status = tokio::time::timeout(Duration::from_secs(4), statuses.recv()).await.unwrap().unwrap();
    assert_eq!(status.alert_id, "chair-1-a1");
    assert!(status.is_acknowledgement());
    assert_eq!(status.by.as_deref(), Some("Simulated Nurse"));
    let ack = next_of(&mut lines, "ack", Duration::from_secs(2)).await;
    assert_eq!(ack["code"], "AA");
    assert_eq!(client.acknowledged("chair-1-a1").map(|s| s.status), Some("Accepted".into()));
    // The alarm's next event carries the acknowledgement in the reply.
    let mut update = spo2_low("chair-1-a1");
    update.seq = 2;
    update.phase = AlarmPhase::End;
    update.state = AlarmState::Cleared;
    let reply = client.send_alert(&update).await.unwrap();
    assert_eq!(reply.acknowledged.map(|s| s.by), Some(Some("Simulated Nurse".into())));
    assert!(client.link().borrow().connected);
    client.shutdown().await;
}

#[tokio::test]
async fn an_alarm_is_re_sent_until_acknowledged_after_a_refused_connection_and_an_unanswered_message() {
    // Nothing listens yet: the first attempts are refused.
    let port = common::free_port();
    let address = format!("127.0.0.1:{port}");
    let client = AcmClient::new(target(&address)).await.unwrap();
    let send = tokio::spawn({
        let client = Arc::new(client);
        let c = client.clone();
        async move { (c.send_alert(&spo2_low("chair-1-a2")).await, client) }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let listener = TcpListener::bind(&address).await.unwrap();
    // This manager hangs on the first alarm message: the client's 1 s ACK deadline passes and it sends again.
    let (mut lines, _am) = manager(listener, AlertManagerOptions { ignore_first: 1, ..Default::default() });
    let (reply, client) = tokio::time::timeout(Duration::from_secs(15), send).await.unwrap().unwrap();
    let reply = reply.unwrap();
    assert_eq!(reply.outcome, AcmOutcome::Accepted { code: "AA".into() });
    assert!(reply.attempts >= 3, "refused at least once, unanswered once, then accepted: {} attempts", reply.attempts);
    let mut alerts = Vec::new();
    while let Ok(line) = lines.try_recv() {
        if line["type"] == "alert" {
            alerts.push(line);
        }
    }
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[0]["answered"], Value::Null);
    assert_eq!(alerts[1]["answered"], "AA");
    assert_eq!(alerts[1]["duplicate"], true, "a re-send keeps its control id");
    assert_eq!(alerts[0]["control_id"], alerts[1]["control_id"]);
    let link = client.link().borrow().clone();
    assert!(link.connected);
    assert!(link.last_error.is_none());
    client.shutdown().await;
}

#[tokio::test]
async fn a_rejected_alarm_returns_the_managers_reason_and_is_not_re_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (mut lines, _am) = manager(listener, AlertManagerOptions { reject: true, ..Default::default() });
    let client = AcmClient::new(target(&address)).await.unwrap();
    let reply = client.send_alert(&spo2_low("chair-1-a3")).await.unwrap();
    match reply.outcome {
        AcmOutcome::Rejected { code, reason } => {
            assert_eq!(code, "AR");
            assert!(reason.unwrap_or_default().contains("--reject"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reply.attempts, 1);
    next_of(&mut lines, "alert", Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(line) = lines.try_recv() {
        assert_ne!(line["type"], "alert", "a refused alarm is not sent again: {line}");
    }
    client.shutdown().await;
}

#[tokio::test]
async fn heartbeats_flow_every_interval_and_a_deliberate_shutdown_ends_with_an_inactive_one() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (mut lines, _am) = manager(listener, AlertManagerOptions::default());
    let client = AcmClient::new(AcmTargetConfig { heartbeat_interval_s: 1, ..target(&address) }).await.unwrap();
    let first = next_of(&mut lines, "heartbeat", Duration::from_secs(2)).await;
    assert_eq!((first["phase"].as_str(), first["state"].as_str()), (Some("start"), Some("active")));
    assert_eq!(first["priority"], "PN");
    assert_eq!(first["confirm_timeout_s"], "1");
    let second = next_of(&mut lines, "heartbeat", Duration::from_secs(3)).await;
    assert_eq!(second["phase"], "update");
    assert!(client.link().borrow().connected);
    client.shutdown().await;
    let last = next_of(&mut lines, "heartbeat", Duration::from_secs(2)).await;
    assert_eq!((last["phase"].as_str(), last["state"].as_str()), (Some("end"), Some("inactive")));
}

#[tokio::test]
async fn a_manager_that_goes_away_shows_on_the_link_and_an_alarm_then_fails_loudly_after_its_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (mut lines, am) = manager(listener, AlertManagerOptions::default());
    let client = AcmClient::new(AcmTargetConfig { heartbeat_interval_s: 1, give_up_after_s: 2, ..target(&address) })
        .await
        .unwrap();
    next_of(&mut lines, "heartbeat", Duration::from_secs(2)).await;
    am.abort();
    let mut link = client.link();
    tokio::time::timeout(Duration::from_secs(5), link.wait_for(|l| !l.connected && l.last_error.is_some()))
        .await
        .expect("the lost manager shows on the link")
        .unwrap();
    match client.send_alert(&spo2_low("chair-1-a4")).await {
        Err(AcmError::Undelivered { attempts, .. }) => assert!(attempts >= 2),
        other => panic!("{other:?}"),
    }
    assert!(client.link().borrow().heartbeats_missed >= 1);
    client.shutdown().await;
}

/// Completed and failed TLS handshakes at a [`tls_front`].
#[derive(Default)]
struct Handshakes {
    done: AtomicU32,
    failed: AtomicU32,
}

/// A TLS Alert Manager: a rustls server on its own loopback listener (the test CA's `localhost`/127.0.0.1
/// certificate) that passes each connection's plain MLLP to the simulated manager at `behind`.
async fn tls_front(acceptor: tokio_rustls::TlsAcceptor, behind: SocketAddr) -> (SocketAddr, Arc<Handshakes>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Handshakes::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counts) = (acceptor.clone(), c.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    counts.failed.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                counts.done.fetch_add(1, Ordering::SeqCst);
                let mut plain = tokio::net::TcpStream::connect(behind).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, counts)
}

/// An `acm` target `name` at `address` over TLS trusting `ca_file` (relative to the config's folder), high alarms,
/// quick timeouts and heartbeats.
fn tls_target(name: &str, address: SocketAddr, ca_file: &str) -> String {
    format!(
        "[[notify.targets]]\nname = \"{name}\"\nkind = \"acm\"\npriorities = [\"high\"]\n\
         acm = {{ address = \"{address}\", point_of_care = \"test-ward\", ack_timeout_s = 1, connect_timeout_s = 1, \
         heartbeat_interval_s = 1, tls = {{ ca_file = \"{ca_file}\" }} }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_acm_target_over_tls_delivers_the_oru_r40_handles_its_ack_and_refuses_a_manager_it_cannot_verify() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pki) = common::pki::Pki::make(dir.path()) else { return };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let behind = listener.local_addr().unwrap();
    let (mut lines, _am) =
        manager(listener, AlertManagerOptions { ack_after: Some(Duration::from_secs(1)), ..Default::default() });
    let (front, handshakes) = tls_front(pki.acceptor(), behind).await;
    // "am" trusts the test CA (`ca.pem`, found next to the config); "doubter" trusts only the client
    // certificate, which did not sign the manager's: its handshakes must fail.
    let notify = tls_target("am", front, "ca.pem") + &tls_target("doubter", front, "client.pem");
    let text = common::notify_config(dir.path(), common::free_port(), &notify);
    let config = vigil::config::Config::parse(&text, "test.toml", dir.path()).unwrap();
    let daemon = common::Daemon::start(config).await;
    let (dash, mllp) = (daemon.running.dashboard, daemon.running.mllp.unwrap());

    common::send_spo2(mllp, 80).await;
    let alert = next_of(&mut lines, "alert", Duration::from_secs(5)).await;
    assert_eq!((alert["phase"].as_str(), alert["priority"].as_str()), (Some("start"), Some("PH")), "{alert}");
    assert_eq!((alert["bed"].as_str(), alert["event"].as_str()), (Some("chair-1"), Some("196670^MDC_EVT_LO^MDC")));
    assert_eq!(alert["processing_id"], "P");
    let alert_id = alert["alert_id"].as_str().unwrap().to_owned();
    // The manager's ACK^R40 came back through TLS: the attempt is logged as accepted.
    let store = vigil::store::Store::open(&dir.path().join("vigil.db")).unwrap();
    let day = chrono::Duration::days(1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let accepted = loop {
        let log = store.notify_attempts("chair-1", Utc::now() - day, Utc::now() + day).unwrap();
        let found = log.into_iter().find(|a| a.target == "am");
        if found.is_some() || std::time::Instant::now() > deadline {
            break found.expect("the ACM attempt was logged");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(accepted.ok && accepted.detail.starts_with("ACK AA"), "{accepted:?}");
    assert_eq!(accepted.alarm_id, alert_id);
    // Its ORA^R41 (1 s later) came back through TLS too: the bed's alarm is acknowledged by the target.
    let ack = next_of(&mut lines, "acknowledged", Duration::from_secs(4)).await;
    assert_eq!((ack["alert_id"].as_str(), ack["sent"].as_bool()), (Some(alert_id.as_str()), Some(true)), "{ack}");
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    let by = loop {
        let snapshot = daemon.running.hub.snapshot();
        let alarm = snapshot.beds[0].alarms.as_ref().and_then(|a| a.alarms.first().cloned());
        let by = alarm.and_then(|a| a.by.clone());
        if by.is_some() || std::time::Instant::now() > deadline {
            break by.expect("the manager's acknowledge reached the bed");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(by.starts_with("notify:am:"), "{by}");
    assert!(handshakes.done.load(Ordering::SeqCst) >= 1, "the link to the manager was TLS");

    // The doubter never gets through: its handshakes fail, it sends nothing, and it shows as failing.
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let doubter = loop {
        let response = common::http_get(dash, "/api/status").await;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        let status: Value = serde_json::from_str(body).unwrap_or_default();
        let doubter = status["notify"].as_array().and_then(|a| a.iter().find(|t| t["target"] == "doubter").cloned());
        if doubter.as_ref().is_some_and(|d| d["failing"] == true) || std::time::Instant::now() > deadline {
            break doubter.unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((doubter["failing"].as_bool(), doubter["connected"].as_bool()), (Some(true), Some(false)), "{doubter}");
    let reason = doubter["problem"]["reason"].as_str().unwrap_or_default();
    assert!(reason.to_lowercase().contains("certificate"), "the reason names the certificate: {doubter}");
    assert!(handshakes.failed.load(Ordering::SeqCst) >= 1, "the doubter's handshakes failed at the manager");
    daemon.stop().await;
}
