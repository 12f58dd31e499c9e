//! Sends a short alarm's life (start, acknowledged update, end) as IHE PCD ACM ORU^R40 to an Alert Manager, with
//! heartbeats every second, then shuts down (the last heartbeat says `end`). For `.ci/suites/80-acm-python.sh`,
//! whose Alert Manager is an independent Python implementation (PyPI `hl7`).
//!
//! ```text
//! cargo run --example acm-send -- 127.0.0.1:2576
//! ```
//! Exits 1 unless the manager accepted every alarm message.

use std::time::Duration;

use chrono::Utc;
use vigil::event::{AlarmEvent, AlarmKind, AlarmPhase, AlarmState, Priority};
use vigil::notify::acm_client::{AcmClient, AcmOutcome, AcmTargetConfig};
use vigil::vitals::Parameter;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let Some(address) = std::env::args().nth(1) else {
        eprintln!("usage: acm-send HOST:PORT");
        return std::process::ExitCode::from(2);
    };
    let config = AcmTargetConfig {
        sending_facility: "ci-clinic".into(),
        point_of_care: "ci-ward".into(),
        heartbeat_interval_s: 1,
        give_up_after_s: 10,
        ..AcmTargetConfig::new(address)
    };
    let client = match AcmClient::new(config).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("acm-send: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let start = AlarmEvent {
        time: Utc::now(),
        bed: "chair-1".into(),
        alarm_id: "chair-1-ci-1".into(),
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
        message: "SpO2 84 < 88 | probe^ok & ~fine \\ really".into(),
        by: None,
        audio_paused_until: None,
    };
    let update = AlarmEvent { seq: 2, phase: AlarmPhase::Update, state: AlarmState::Acknowledged, ..start.clone() };
    let end =
        AlarmEvent { seq: 3, phase: AlarmPhase::End, state: AlarmState::Cleared, value: Some(93.0), ..start.clone() };
    let mut ok = true;
    for event in [start, update, end] {
        match client.send_alert(&event).await {
            Ok(reply) => {
                println!(
                    "acm-send: {:?} seq {}: {:?} after {} attempt(s)",
                    event.phase, event.seq, reply.outcome, reply.attempts
                );
                ok &= matches!(reply.outcome, AcmOutcome::Accepted { .. });
            }
            Err(e) => {
                eprintln!("acm-send: {e}");
                ok = false;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    client.shutdown().await;
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
