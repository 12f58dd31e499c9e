//! The whole daemon, end to end: simulated monitor bytes → decoders → engine → store → MQTT and dashboard.
//! Real parts only: the embedded broker or a real Mosquitto, a real MQTT client, a real HTTP socket.

mod common;

use std::time::Duration;

use common::{free_port, mosquitto, wait_for_publish};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio_util::sync::CancellationToken;
use vigil::config::Config;

fn config(mqtt: &str, port: u16, dir: &std::path::Path) -> Config {
    common::one_bed_config(
        mqtt,
        port,
        dir,
        "kind = \"simulated\"\ndevice = \"masimo\"\nscenario = \"calm-session\"\nseed = 11",
    )
}

async fn subscriber(port: u16, topic: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut opts = MqttOptions::new(format!("test-sub-{port}"), "127.0.0.1", port);
    // The embedded broker signs clients in with [[users]] names and passwords; the test Mosquitto is open.
    opts.set_keep_alive(Duration::from_secs(5)).set_credentials("victor", "rotciv");
    let (client, eventloop) = AsyncClient::new(opts, 100);
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    (client, eventloop)
}

async fn vitals_arrive_then_shutdown_is_clean(mode: &str, port: u16) {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let running = vigil::start(config(mode, port, dir.path()), shutdown.clone()).await.unwrap();
    let dashboard = running.dashboard;
    let daemon = tokio::spawn(running.wait());

    let (_client, mut eventloop) = subscriber(port, "vigil/v1/test-site/test-ward/#").await;
    let vitals = wait_for_publish(&mut eventloop, Duration::from_secs(15), |topic, _| {
        topic == "vigil/v1/test-site/test-ward/bed/chair-1/vitals"
    })
    .await
    .expect("vitals for chair-1 within 15 s");
    let json: serde_json::Value = serde_json::from_slice(&vitals).unwrap();
    let text = json.to_string();
    assert!(text.contains("spo2"), "vitals payload names SpO2: {text}");

    // The dashboard answers on its socket while the daemon runs, and shows the broker link as connected.
    let page = common::http_get(dashboard, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let status = common::http_get(dashboard, "/api/status").await;
    assert!(status.contains(r#""state":"connected""#), "{status}");
    // The daemon's own parts are on the status too: supervised tasks and the store.
    let body: serde_json::Value = serde_json::from_str(status.split("\r\n\r\n").nth(1).unwrap_or("null")).unwrap();
    assert_eq!(body["tasks"]["mqtt-publisher"]["running"], true, "{status}");
    assert_eq!(body["store"]["ok"], true, "{status}");

    let stopping = std::time::Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), daemon).await.expect("stops within 5 s").unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(5));

    let offline = wait_for_publish(&mut eventloop, Duration::from_secs(5), |topic, payload| {
        topic == "vigil/v1/test-site/test-ward/status" && String::from_utf8_lossy(payload).contains("offline")
    })
    .await;
    assert!(offline.is_some(), "the retained status says offline after a clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_bed_publishes_vitals_on_the_embedded_broker_and_stops_cleanly() {
    vitals_arrive_then_shutdown_is_clean("embedded", free_port()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_bed_publishes_vitals_on_a_real_mosquitto_and_stops_cleanly() {
    let Some(broker) = mosquitto::start() else {
        common::skip("mosquitto is not installed (apt-get install mosquitto); CI installs it");
        return;
    };
    vitals_arrive_then_shutdown_is_clean("external", broker.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_a_clear_error_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = config("disabled", 0, dir.path());
    cfg.dashboard.listen = taken.local_addr().unwrap().to_string();
    let err = match vigil::start(cfg, CancellationToken::new()).await {
        Ok(_) => panic!("started on a port in use"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("dashboard.listen"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_external_broker_shows_on_the_dashboard_status_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    // Nothing listens on this port: the broker is down.
    let running = vigil::start(config("external", free_port(), dir.path()), shutdown.clone()).await.unwrap();
    let dashboard = running.dashboard;
    let daemon = tokio::spawn(running.wait());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = common::http_get(dashboard, "/api/status").await;
        if status.contains(r#""last_error":""#) || tokio::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.contains(r#""state":"connecting""#), "{status}");
    assert!(status.contains(r#""last_error":""#), "the reason is shown: {status}");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), daemon)
        .await
        .expect("stops within 5 s even without a broker")
        .unwrap();
}
