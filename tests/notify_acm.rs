//! IHE PCD ACM on loopback: Vigil's `AcmClient` against `vigil-sim alert-manager` (the simulator's independent
//! Alert Manager, run in-process on a real TCP listener). The daemon's `kind = "acm"` target (queue, chain,
//! ORA^R41 acknowledges, link health, self-test hop) is tested in `tests/notify.rs`.

mod common;

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
