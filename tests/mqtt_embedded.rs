//! The MQTT API against the embedded broker (rumqttd): no external program needed, so these run everywhere.

mod mqtt_support;

use std::time::Duration;

use mqtt_support::*;
use tokio_util::sync::CancellationToken;
use vigil::config::Config;
use vigil::event::{Command, Event};
use vigil::mqtt::{self, broker, LinkState};
use vigil::store::Store;

const T: Duration = Duration::from_secs(10);

fn embedded(port: u16, client_id: &str) -> String {
    format!("mode = \"embedded\"\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"{client_id}\"\nkeep_alive_s = 5")
}

#[test]
fn a_port_already_in_use_is_an_error_naming_the_setting_to_change() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut cfg = Config::embedded_default();
    cfg.mqtt.port = port;
    let err = broker::start(&cfg).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("mqtt.port: 127.0.0.1:{port} is already in use (set mqtt.port or mqtt.mode = \"external\")")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_vitals_alarm_events_and_retained_snapshots_reach_a_subscriber_and_shutdown_says_offline() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &embedded(port, "vigil-e1"), &users());
    let b = broker::start(&cfg).unwrap();
    assert_eq!(b.addr().port(), port);
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg.clone(), hub.clone(), store.clone(), cancel.clone()).unwrap();
    let mut sub = Subscriber::connect_as(port, "it-e1", &format!("{BASE}/#"), false, VICTOR).await;

    let online = sub.expect("/status", T, |m| m.json["state"] == "online").await;
    assert!(online.json["seq"].as_u64().unwrap() >= 1);
    assert_eq!(online.json["beds"], serde_json::json!(["chair-1", "chair-2"]));

    hub.publish(Event::Vitals(vitals("chair-1")));
    let v = sub.expect("/bed/chair-1/vitals", T, |_| true).await;
    assert_eq!(v.json["values"][0]["parameter"]["mdc_code"], 150456);
    assert_eq!(v.json["values"][0]["parameter"]["ucum"], "%");

    let ev = emit_alarm(&store, &hub, "chair-1", "chair-1-a1", 1);
    let a = sub.expect("/bed/chair-1/alarm", T, |_| true).await;
    assert!(!a.retain);
    assert_eq!(a.json["alarm_id"], "chair-1-a1");
    assert_eq!(a.json["bed_seq"], ev.bed_seq);
    assert_eq!(a.json["parameter"]["display_name"], "SpO2");
    let snap = sub.expect("/bed/chair-1/alarms", T, |m| !m.json["alarms"].as_array().unwrap().is_empty()).await;
    assert_eq!(snap.json["bed_seq"], ev.bed_seq);

    // The outbox row is marked delivered once the broker acknowledged it.
    let deadline = tokio::time::Instant::now() + T;
    while store.pending_count().unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "outbox drained after PUBACK");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(m.link.borrow().state, LinkState::Connected);

    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
    let off = sub.expect("/status", T, |m| m.json["state"] == "offline").await;
    assert_eq!(off.json["reason"], "shutdown");
    assert_eq!(off.json["seq"], online.json["seq"]);
    // A late subscriber with a wildcard (as in docs/mqtt-api.md) gets the retained state at once.
    let mut late = Subscriber::connect_as(port, "it-e1-late", "vigil/#", false, VICTOR).await;
    let retained = late.expect("/status", T, |_| true).await;
    assert!(retained.retain, "a late subscriber gets the retained status");
    assert_eq!(retained.json["state"], "offline");
    let snap = late.expect("/bed/chair-1/alarms", T, |_| true).await;
    assert!(snap.retain);
    assert_eq!(snap.json["bed_seq"], ev.bed_seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nurses_acknowledge_without_a_password_reaches_the_bed_as_her_and_the_ack_event_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &embedded(port, "vigil-e2"), &users());
    broker::start(&cfg).unwrap();
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let mut seen = fake_bed(hub.clone(), store.clone(), "chair-1");
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), cancel.clone()).unwrap();
    let mut sub = Subscriber::connect_as(port, "it-e2", &format!("{BASE}/#"), false, NINA).await;
    sub.expect("/status", T, |m| m.json["state"] == "online").await;
    emit_alarm(&store, &hub, "chair-1", "chair-1-a1", 1);
    sub.expect("/bed/chair-1/alarm", T, |_| true).await;

    // The broker account is the actor: no user or password in the payload.
    publish_once_as(
        port,
        NINA,
        &format!("{BASE}/cmd/chair-1/nina"),
        r#"{"command":"acknowledge","alarm_id":"chair-1-a1","request_id":"r-1",
            "reply_to":"vigil/v1/test-site/ward-a/reply/nurse-station"}"#,
    )
    .await;
    let req = tokio::time::timeout(T, seen.recv()).await.unwrap().unwrap();
    assert_eq!(req.command, Command::Acknowledge { alarm_id: Some("chair-1-a1".into()) });
    assert_eq!(req.actor, "nina");
    let reply = sub.expect("/reply/nurse-station", T, |_| true).await;
    assert_eq!(reply.json["ok"], true, "{}", reply.json);
    assert_eq!(reply.json["request_id"], "r-1");
    assert_eq!(reply.json["events"], 1);
    assert_eq!(reply.json["user"], "nina");
    let ack = sub.expect("/bed/chair-1/alarm", T, |m| m.json["state"] == "acknowledged").await;
    assert_eq!(ack.json["by"], "nina");
    assert_eq!(ack.json["bed_seq"], 2);

    let actions =
        store.actions("chair-1", chrono::Utc::now() - chrono::Duration::minutes(1), chrono::Utc::now()).unwrap();
    assert_eq!(actions.len(), 1);
    assert!(actions[0].ok);
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorised_and_malformed_commands_are_refused_with_a_reason_and_never_reach_the_bed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &embedded(port, "vigil-e3"), &users());
    broker::start(&cfg).unwrap();
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let mut seen = fake_bed(hub.clone(), store.clone(), "chair-1");
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), cancel.clone()).unwrap();
    let mut sub = Subscriber::connect_as(port, "it-e3", &format!("{BASE}/reply/#"), false, NINA).await;
    // (sender, payload, reason): the sender publishes on cmd/chair-1/{sender}.
    let cases = [
        (ADA, r#"{"command":"acknowledge","user":"nina","request_id":"claims-other"}"#, "'user' is 'nina'"),
        (
            NINA,
            r#"{"command":"acknowledge","user":"nina","password":"anin","request_id":"oldformat"}"#,
            "commands carry no password",
        ),
        (
            NINA,
            r#"{"command":"set_limit","key":"limits.spo2.low.medium","value":90,"request_id":"nurse-limit"}"#,
            "needs role Admin",
        ),
        (NINA, r#"{"command":"pause_audio","seconds":"lots","request_id":"badtype"}"#, "malformed command"),
        (ADA, r#"{"command":"self_destruct","request_id":"unknown"}"#, "malformed command"),
        (
            NINA,
            r#"{"command":"acknowledge","request_id":"badreply","reply_to":"vigil/v1/test-site/ward-a/status"}"#,
            "reply_to",
        ),
        (
            NINA,
            r#"{"command":"session_start","patient":"P-1","password":"pw-1234","request_id":true}"#,
            "'request_id' must be a string",
        ),
        (NINA, r#"not json at all, "password": "pw-1234""#, "not JSON"),
    ];
    for (sender, payload, _) in &cases {
        let topic = format!("{BASE}/cmd/chair-1/{}", sender.unwrap().0);
        publish_once_as(port, *sender, &topic, payload).await;
    }
    let mut replies = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while replies.len() < cases.len() {
        match tokio::time::timeout_at(deadline, sub.rx.recv()).await {
            Ok(Some(m)) => replies.push(m),
            _ => break,
        }
    }
    assert_eq!(replies.len(), cases.len(), "one reply per command: {replies:?}");
    for (_, payload, reason) in &cases {
        let id = serde_json::from_str::<serde_json::Value>(payload)
            .ok()
            .map(|v| v["request_id"].clone())
            .filter(serde_json::Value::is_string);
        let r = replies
            .iter()
            .find(|m| match &id {
                Some(id) => &m.json["request_id"] == id,
                None => m.json["request_id"].is_null() && m.json["reason"].as_str().unwrap_or("").contains(reason),
            })
            .unwrap_or_else(|| panic!("a reply for {payload}"));
        assert_eq!(r.json["ok"], false, "{payload}");
        let got = r.json["reason"].as_str().unwrap_or_default();
        assert!(got.contains(reason), "{payload}: reason '{got}' should contain '{reason}'");
        assert!(r.topic.ends_with("/reply/chair-1"), "refusals go to the default reply topic: {}", r.topic);
    }
    assert!(seen.try_recv().is_err(), "no refused command reached the bed");
    assert_eq!(store.next_bed_seq("chair-1").unwrap(), 1, "nothing changed");
    let actions =
        store.actions("chair-1", chrono::Utc::now() - chrono::Duration::minutes(1), chrono::Utc::now()).unwrap();
    assert_eq!(actions.len(), cases.len(), "every refusal is in the audit trail");
    for a in &actions {
        assert!(!a.ok);
        assert!(!a.request.contains("anin") && !a.request.contains("pw-1234"), "no password in the audit trail: {a:?}");
    }
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_events_go_out_retained_from_the_outbox_and_commands_the_bed_refuses_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &embedded(port, "vigil-e4"), &users());
    broker::start(&cfg).unwrap();
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let _seen = fake_bed(hub.clone(), store.clone(), "chair-1");
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), cancel.clone()).unwrap();
    let mut sub = Subscriber::connect_as(port, "it-e4", &format!("{BASE}/#"), false, NINA).await;
    sub.expect("/status", T, |m| m.json["state"] == "online").await;
    let s = session("chair-1", "session_start");
    store.append(&[Event::Session(s.clone())]).unwrap();
    hub.publish(Event::Session(s));
    let got = sub.expect("/bed/chair-1/session", T, |_| true).await;
    assert_eq!(got.json["action"], "session_start");
    assert_eq!(got.json["schema_version"], 1);
    let s2 = session("chair-1", "infusion_start");
    store.append(&[Event::Session(s2.clone())]).unwrap();
    hub.publish(Event::Session(s2));
    sub.expect("/bed/chair-1/session", T, |m| m.json["action"] == "infusion_start").await;
    let mut late =
        Subscriber::connect_as(port, "it-e4-late", &format!("{BASE}/bed/chair-1/session"), false, VICTOR).await;
    let retained = late.expect("/bed/chair-1/session", T, |_| true).await;
    assert!(retained.retain);
    assert_eq!(retained.json["action"], "infusion_start", "the retained session is the latest");

    publish_once_as(port, NINA, &format!("{BASE}/cmd/chair-1/nina"), r#"{"command":"session_end"}"#).await;
    let r = sub.expect("/reply/chair-1", T, |_| true).await;
    assert_eq!(r.json["ok"], false);
    assert_eq!(r.json["reason"], "no session is running");
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt_when_no_broker_is_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let dead = free_port();
    let cfg = config(
        dir.path(),
        &format!("mode = \"external\"\nhost = \"127.0.0.1\"\nport = {dead}\nclient_id = \"vigil-e5\""),
        "",
    );
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub(), store, cancel.clone()).unwrap();
    let mut link = m.link.clone();
    let l = tokio::time::timeout(T, link.wait_for(|l| l.last_error.is_some())).await.unwrap().unwrap().clone();
    assert!(l.last_error.unwrap().starts_with("mqtt.host / mqtt.port: nothing listens at 127.0.0.1:"));
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(1), m.task).await.expect("stops within a second").unwrap();
    assert_eq!(m.link.borrow().state, LinkState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_and_wrong_password_connects_are_refused_and_users_and_vigils_own_account_sign_in() {
    use rumqttc::ConnectReturnCode::*;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mqtt_cfg = format!("{}\nusername = \"vigil\"\npassword = \"s3cret\"", embedded(port, "vigil-e6"));
    let cfg = config(dir.path(), &mqtt_cfg, &users());
    let b = broker::start(&cfg).unwrap();
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub(), store, cancel.clone()).unwrap();
    let mut link = m.link.clone();
    tokio::time::timeout(T, link.wait_for(|l| l.state == LinkState::Connected)).await.unwrap().unwrap();

    assert_eq!(connack(port, None).await, Ok(NotAuthorized), "anonymous");
    assert_eq!(connack(port, Some(("nina", "wrong"))).await, Ok(BadUserNamePassword));
    assert_eq!(connack(port, Some(("mallory", "anin"))).await, Ok(BadUserNamePassword));
    assert_eq!(connack(port, Some(("vigil", "nope"))).await, Ok(BadUserNamePassword));
    assert_eq!(connack(port, VICTOR).await, Ok(Success));
    assert_eq!(connack(port, NINA).await, Ok(Success));
    assert_eq!(connack(port, Some(("vigil", "s3cret"))).await, Ok(Success), "the configured service account");
    assert!(b.stats().refused_connects.load(std::sync::atomic::Ordering::Relaxed) >= 4);
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewers_forged_alarm_and_a_nurses_command_as_someone_else_never_reach_another_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &embedded(port, "vigil-e8"), &users());
    let b = broker::start(&cfg).unwrap();
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let mut seen = fake_bed(hub.clone(), store.clone(), "chair-1");
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), cancel.clone()).unwrap();
    let mut sub = Subscriber::connect_as(port, "it-e8", "#", false, VICTOR).await;
    sub.expect("/status", T, |m| m.json["state"] == "online").await;

    let forged = r#"{"alarm_id":"chair-1-a9","state":"ended"}"#;
    publish_once_as(port, VICTOR, &format!("{BASE}/bed/chair-1/alarm"), forged).await;
    publish_once_as(port, VICTOR, &format!("{BASE}/bed/chair-1/alarms"), r#"{"alarms":[]}"#).await;
    publish_once_as(port, NINA, &format!("{BASE}/status"), r#"{"state":"offline"}"#).await;
    publish_once_as(port, NINA, &format!("{BASE}/cmd/chair-1/ada"), r#"{"command":"acknowledge"}"#).await;
    publish_once_as(port, VICTOR, &format!("{BASE}/cmd/chair-1/victor"), r#"{"command":"acknowledge"}"#).await;
    // A subscriber's own rumqttc client is connected through the same gate: if any of these had got through it
    // would be here by now, after the real alarm below.
    emit_alarm(&store, &hub, "chair-1", "chair-1-a1", 1);
    sub.expect("/bed/chair-1/alarm", T, |m| m.json["alarm_id"] == "chair-1-a1").await;
    let got = sub.collect_for(Duration::from_millis(500)).await;
    for msg in &got {
        assert!(msg.json["alarm_id"] != "chair-1-a9", "the forged alarm reached a subscriber: {msg:?}");
        assert!(!msg.topic.contains("/cmd/"), "a refused command reached a subscriber: {msg:?}");
        if msg.topic.ends_with("/status") {
            assert_eq!(msg.json["state"], "online", "forged status: {msg:?}");
        }
        if msg.topic.ends_with("/alarms") {
            assert!(msg.json.get("bed_seq").is_some(), "forged snapshot: {msg:?}");
        }
    }
    assert!(seen.try_recv().is_err(), "no forged command reached the bed");
    assert_eq!(b.stats().refused_publishes.load(std::sync::atomic::Ordering::Relaxed), 5);
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_signing_in_with_vigils_client_id_does_not_take_over_vigils_connection() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &embedded(port, "vigil-e9"), &users());
    broker::start(&cfg).unwrap();
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), cancel.clone()).unwrap();
    let mut sub = Subscriber::connect_as(port, "it-e9", &format!("{BASE}/#"), false, VICTOR).await;
    sub.expect("/status", T, |m| m.json["state"] == "online").await;
    let _thief = Subscriber::connect_as(port, "vigil-e9", &format!("{BASE}/cmd/#"), false, NINA).await;
    emit_alarm(&store, &hub, "chair-1", "chair-1-a1", 1);
    sub.expect("/bed/chair-1/alarm", T, |m| m.json["alarm_id"] == "chair-1-a1").await;
    assert_eq!(m.link.borrow().state, LinkState::Connected);
    let again = sub.collect_for(Duration::from_millis(500)).await;
    assert!(!again.iter().any(|m| m.topic.ends_with("/status") && m.json["state"] != "online"), "{again:?}");
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

/// The loopback demo (anonymous clients allowed) on the embedded broker, with a fake chair-1 that records the
/// commands it gets: the temporary directory, the port, chair-1's commands, the publisher and its stop token.
fn demo(
    client_id: &str,
) -> (tempfile::TempDir, u16, tokio::sync::mpsc::Receiver<vigil::event::CommandRequest>, mqtt::Mqtt, CancellationToken)
{
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &embedded(port, client_id), "[dashboard]\ndemo_actions_without_sign_in = true\n");
    broker::start(&cfg).unwrap();
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let seen = fake_bed(hub.clone(), store.clone(), "chair-1");
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub, store, cancel.clone()).unwrap();
    (dir, port, seen, m, cancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loopback_demo_lets_anonymous_clients_in_and_their_commands_run_as_demo() {
    let (_dir, port, mut seen, m, cancel) = demo("vigil-e10");
    let mut sub = Subscriber::connect(port, "it-e10", &format!("{BASE}/#"), false).await;
    sub.expect("/status", T, |m| m.json["state"] == "online").await;
    publish_once(port, &format!("{BASE}/bed/chair-1/alarms"), r#"{"alarms":[]}"#).await;
    publish_once(port, &format!("{BASE}/cmd/chair-1"), r#"{"command":"acknowledge","request_id":"d"}"#).await;
    let req = tokio::time::timeout(T, seen.recv()).await.unwrap().unwrap();
    assert_eq!(req.actor, "demo");
    let r = sub.expect("/reply/chair-1", T, |m| m.json["request_id"] == "d").await;
    assert_eq!(r.json["ok"], true, "{}", r.json);
    let got = sub.collect_for(Duration::from_millis(300)).await;
    let forged = got.iter().any(|m| m.topic.ends_with("/alarms") && m.json.get("bed_seq").is_none());
    assert!(!forged, "demo clients cannot forge bed topics: {got:?}");
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

// rumqttd closes a connection whose acknowledgements come out of order. The gate acknowledges the messages it
// withholds (here the command, which nobody but Vigil may read) itself: sent at once, ahead of the client's own
// acknowledgements of earlier messages, that closed the subscriber and it missed what came before it reconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_has_not_yet_acknowledged_earlier_messages_keeps_its_connection_when_a_withheld_one_arrives()
{
    let (_dir, port, mut seen, m, cancel) = demo("vigil-e11");
    let mut watch = Subscriber::connect(port, "it-e11", &format!("{BASE}/status"), false).await;
    watch.expect("/status", T, |m| m.json["state"] == "online").await;

    let mut raw = RawClient::subscribe(port, "raw-e11", &format!("{BASE}/#")).await;
    let mut owed = Vec::new();
    while let Some(p) = raw.next(Duration::from_millis(500)).await {
        if let Some((_, Some(id))) = p.publish() {
            owed.push(id);
        }
    }
    assert!(!owed.is_empty(), "the retained status and snapshots came at QoS 1 and are not yet acknowledged");
    publish_once(port, &format!("{BASE}/cmd/chair-1"), r#"{"command":"acknowledge","request_id":"r"}"#).await;
    tokio::time::timeout(T, seen.recv()).await.unwrap().unwrap();
    let mut reply = None;
    while let Some(p) = raw.next(Duration::from_secs(3)).await {
        if let Some((topic, id)) = p.publish() {
            assert!(!topic.contains("/cmd/"), "the command is withheld from this client: {topic}");
            owed.extend(id);
            if topic.ends_with("/reply/chair-1") {
                reply = Some(topic);
                break;
            }
        }
    }
    assert!(reply.is_some(), "the reply came on the same connection, which the broker kept open");
    for id in owed {
        raw.puback(id).await;
    }
    assert!(raw.ping().await, "the connection is still open after the client acknowledged everything");
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_command_replayed_by_the_broker_is_refused_and_never_reaches_the_bed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &embedded(port, "vigil-e7"), &users());
    broker::start(&cfg).unwrap();
    // Someone published a command with retain on, before Vigil (re)connected.
    let mut o = rumqttc::MqttOptions::new("retainer", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5)).set_credentials("nina", "anin");
    let (c, mut el) = rumqttc::AsyncClient::new(o, 10);
    let cmd = r#"{"command":"acknowledge","request_id":"stale"}"#;
    c.publish(format!("{BASE}/cmd/chair-1/nina"), rumqttc::QoS::AtLeastOnce, true, cmd).await.unwrap();
    tokio::time::timeout(T, async {
        while !matches!(el.poll().await, Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) {}
    })
    .await
    .unwrap();
    let mut sub = Subscriber::connect_as(port, "it-e7", &format!("{BASE}/reply/#"), false, NINA).await;

    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let mut seen = fake_bed(hub.clone(), store.clone(), "chair-1");
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub, store, cancel.clone()).unwrap();
    let r = sub.expect("/reply/chair-1", T, |m| m.json["request_id"] == "stale").await;
    assert_eq!(r.json["ok"], false);
    assert!(r.json["reason"].as_str().unwrap().contains("retained commands are refused"), "{}", r.json);
    assert!(seen.try_recv().is_err(), "the stale command never reached the bed");
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_broker_cannot_take_is_quarantined_counted_and_shown_and_the_events_behind_it_still_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &embedded(port, "vigil-e-poison"), &users());
    broker::start(&cfg).unwrap();
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    // Stored before the publisher starts, so both are in the outbox in this order: the poison first.
    let mut poison = alarm_event("chair-1", "chair-1-p1", 1, 1);
    poison.message = "x".repeat(broker::MAX_PAYLOAD_BYTES + 1);
    store.append(&[Event::Alarm(poison)]).unwrap();
    let next = alarm_event("chair-1", "chair-1-a2", 1, 2);
    store.append(&[Event::Alarm(next)]).unwrap();
    let cancel = CancellationToken::new();
    let mut sub = Subscriber::connect_as(port, "it-e-poison", &format!("{BASE}/bed/+/alarm"), false, VICTOR).await;
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), cancel.clone()).unwrap();

    let a = sub.expect("/bed/chair-1/alarm", T, |_| true).await;
    assert_eq!(a.json["alarm_id"], "chair-1-a2", "the event behind the poison arrives");
    let deadline = tokio::time::Instant::now() + T;
    while store.pending_count().unwrap() > 0 || m.link.borrow().delivery.quarantined == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the poison is set aside and the good event acknowledged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.quarantined_count().unwrap(), 1);
    assert_eq!(m.link.borrow().delivery.quarantined, 1);
    assert_eq!(m.link.borrow().state, LinkState::Connected, "the connection was never dropped for it");
    // It is still in the event log: quarantine is about delivery, not about forgetting.
    let all = store
        .alarm_events("chair-1", chrono::DateTime::UNIX_EPOCH, chrono::Utc::now() + chrono::Duration::hours(1))
        .unwrap();
    assert_eq!(all.len(), 2);
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

// A current-thread runtime: the test publishes far more hub events than the broadcast channel holds before the
// publisher gets a turn, so the publisher lags for certain.
#[tokio::test(flavor = "current_thread")]
async fn a_lagging_publisher_sheds_vitals_with_a_count_and_does_not_republish_unchanged_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &embedded(port, "vigil-e-lag"), &users());
    broker::start(&cfg).unwrap();
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), cancel.clone()).unwrap();
    let mut sub = Subscriber::connect_as(port, "it-e-lag", &format!("{BASE}/bed/#"), false, VICTOR).await;
    let deadline = tokio::time::Instant::now() + T;
    while m.link.borrow().state != LinkState::Connected {
        assert!(tokio::time::Instant::now() < deadline, "connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for bed in ["chair-1", "chair-2"] {
        let snapshot =
            vigil::event::BedAlarms { bed: bed.into(), time: chrono::Utc::now(), bed_seq: 0, alarms: vec![] };
        hub.publish(Event::Alarms(snapshot));
    }
    sub.expect("/bed/chair-1/alarms", T, |_| true).await;
    sub.expect("/bed/chair-2/alarms", T, |_| true).await;
    let _ = sub.collect_for(Duration::from_millis(300)).await;

    // Far more than the hub's broadcast window, without yielding.
    let burst = vigil::hub::BROADCAST_CAPACITY * 2;
    for _ in 0..burst {
        hub.publish(Event::Vitals(vitals("chair-1")));
    }
    let after = sub.collect_for(Duration::from_secs(2)).await;
    let snapshots = after.iter().filter(|m| m.topic.ends_with("/alarms")).count();
    assert_eq!(snapshots, 0, "unchanged retained snapshots are not republished after a lag");
    let vitals_seen = after.iter().filter(|m| m.topic.ends_with("/vitals")).count();
    assert!(vitals_seen < burst, "vitals were shed, not all {burst} sent");
    let deadline = tokio::time::Instant::now() + T;
    while m.link.borrow().delivery.hub_events_missed == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivery = m.link.borrow().delivery;
    assert!(delivery.hub_events_missed > 0, "the lag is counted: {delivery:?}");
    assert!(delivery.vitals_shed > 0, "shed vitals are counted: {delivery:?}");

    // Full recovery: the next vitals arrive.
    hub.publish(Event::Vitals(vitals("chair-2")));
    sub.expect("/bed/chair-2/vitals", T, |_| true).await;
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_write_is_shown_on_the_retained_status_and_the_alarm_is_sent_once_the_disk_is_back() {
    let Some(disk) = SmallDisk::mount("2m") else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &embedded(port, "vigil-e-full"), &users());
    broker::start(&cfg).unwrap();
    let store = Store::open(&disk.dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), cancel.clone()).unwrap();
    let mut sub = Subscriber::connect_as(port, "it-e-full", &format!("{BASE}/#"), false, VICTOR).await;
    sub.expect("/status", T, |m| m.json["state"] == "online" && m.json.get("store").is_none()).await;

    disk.fill();
    let mut big = alarm_event("chair-1", "chair-1-f1", 1, 1);
    big.evidence.insert("pad".into(), "x".repeat(100 * 1024).into());
    assert!(store.append(&[Event::Alarm(big.clone())]).is_err(), "the full disk refuses the write");
    let failed = sub.expect("/status", T, |m| m.json["store"] == "failed").await;
    assert_eq!(failed.json["state"], "online", "still online: the broker link is fine");
    // A late subscriber gets it from the retained status.
    let mut late = Subscriber::connect_as(port, "it-e-full-late", &format!("{BASE}/status"), false, VICTOR).await;
    let retained = late.expect("/status", T, |_| true).await;
    assert!(retained.retain && retained.json["store"] == "failed", "{:?}", retained.json);

    disk.free();
    store.append(&[Event::Alarm(big)]).unwrap();
    hub.publish(Event::Alarm(alarm_event("chair-1", "chair-1-f1", 1, 1)));
    sub.expect("/status", T, |m| m.json["state"] == "online" && m.json.get("store").is_none()).await;
    let a = sub.expect("/bed/chair-1/alarm", T, |_| true).await;
    assert_eq!(a.json["alarm_id"], "chair-1-f1");
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ward_whose_bed_list_does_not_fit_a_last_will_still_connects_and_its_birth_lists_every_bed() {
    // 6,000 beds make a status of about 80 KB: more than the 65,535 bytes an MQTT will can carry. Before the
    // will left the list out, its length wrapped, the broker misread the credentials and refused Vigil forever.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &embedded(port, "vigil-big-ward"), &users());
    let _b = broker::start(&cfg).unwrap();
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let beds = (0..6000)
        .map(|i| vigil::hub::BedInfo {
            id: format!("chair-{i}").as_str().into(),
            label: format!("Chair {i}"),
            profile: "ketamine-chair".into(),
        })
        .collect();
    let hub = vigil::hub::Hub::new(SITE, WARD, beds);
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg.clone(), hub, store, cancel.clone()).unwrap();
    let mut sub = Subscriber::connect_as(port, "it-big", &format!("{BASE}/status"), false, VICTOR).await;
    let mut link = m.link.clone();
    tokio::time::timeout(T, link.wait_for(|l| l.state == LinkState::Connected))
        .await
        .expect("Vigil connects to its broker")
        .unwrap();
    let online = sub.expect("/status", T, |m| m.json["state"] == "online").await;
    assert_eq!(online.json["beds"].as_array().unwrap().len(), 6000);
    assert!(online.json.get("beds_omitted").is_none(), "the birth has the whole list");
    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
}
