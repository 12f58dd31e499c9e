//! Home Assistant MQTT discovery against a real Mosquitto: the retained configs a subscriber sees, and their
//! return after the broker restarts without them. Skips, saying why, when `mosquitto` is not installed.

mod mqtt_support;

use std::collections::BTreeMap;
use std::time::Duration;

use mqtt_support::*;
use rumqttc::QoS;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use vigil::mqtt;
use vigil::store::Store;

/// Every discovery config under `homeassistant/#` seen within `within`, by topic (empty payloads dropped).
async fn configs(sub: &mut Subscriber, want: usize, within: Duration) -> BTreeMap<String, Value> {
    let mut seen = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + within;
    while seen.len() < want {
        match tokio::time::timeout_at(deadline, sub.rx.recv()).await {
            Ok(Some(m)) if !m.json.is_null() => {
                seen.insert(m.topic, m.json);
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_sees_one_device_per_bed_with_availability_and_gets_it_again_after_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut mosq) = Mosquitto::start(dir.path(), "") else { return };
    let mqtt_section = format!(
        "mode = \"external\"\nhost = \"127.0.0.1\"\nport = {}\nclient_id = \"vigil-ha\"\nkeep_alive_s = 2\n\
         discovery_prefix = \"homeassistant\"",
        mosq.port
    );
    let cfg = config(dir.path(), &mqtt_section, "");
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub(), store, cancel.clone()).unwrap();

    let mut ha = Subscriber::connect(mosq.port, "ha-1", "homeassistant/#", false).await;
    let seen = configs(&mut ha, 12, Duration::from_secs(10)).await;
    assert_eq!(seen.len(), 12, "two beds, six sensors each: {:?}", seen.keys().collect::<Vec<_>>());
    let devices: std::collections::BTreeSet<&str> =
        seen.values().map(|c| c["device"]["identifiers"][0].as_str().unwrap()).collect();
    assert_eq!(devices.len(), 2, "one device per bed");
    for (topic, c) in &seen {
        assert!(topic.starts_with("homeassistant/sensor/vigil_test_site_ward_a/"), "{topic}");
        assert!(topic.ends_with("/config"));
        assert_eq!(c["availability"][0]["topic"], format!("{BASE}/status"), "{topic}");
        assert_eq!(c["availability"][0]["payload_available"], "online");
        let state = c["state_topic"].as_str().unwrap();
        assert!(state.starts_with(&format!("{BASE}/bed/chair-")), "{state}");
        assert!(c["unique_id"].as_str().is_some_and(|u| !u.is_empty()));
        assert!(c["value_template"].as_str().is_some_and(|t| t.contains("value_json")));
        if !topic.ends_with("_alarm/config") {
            assert!(c["expire_after"].as_u64().is_some_and(|s| s > 0), "{topic}: a stale value expires");
        }
    }
    assert_eq!(seen["homeassistant/sensor/vigil_test_site_ward_a/chair_1_spo2/config"]["unit_of_measurement"], "%");

    // Clear the retained configs, then restart the broker: whatever a new subscriber finds, Vigil published again.
    for topic in seen.keys() {
        ha.client.publish(topic.clone(), QoS::AtLeastOnce, true, Vec::<u8>::new()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut check = Subscriber::connect(mosq.port, "ha-check", "homeassistant/#", false).await;
    assert!(configs(&mut check, 1, Duration::from_millis(500)).await.is_empty(), "the retained configs are gone");
    mosq.restart();
    assert!(wait_for_port(mosq.port, Duration::from_secs(10)));
    let mut ha2 = Subscriber::connect(mosq.port, "ha-2", "homeassistant/#", false).await;
    let again = configs(&mut ha2, 12, Duration::from_secs(15)).await;
    assert_eq!(again.len(), 12, "republished on reconnect: {:?}", again.keys().collect::<Vec<_>>());
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(15), m.task).await.unwrap().unwrap();
}
