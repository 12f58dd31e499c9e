//! Every payload kind Vigil publishes, taken off a real broker, validates against its JSON Schema in
//! `docs/schemas/`; so do the documented command examples.

mod mqtt_support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use mqtt_support::*;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use vigil::event::{DeviceStatus, Event, LinkState};
use vigil::mqtt::{self, broker};
use vigil::store::Store;

const T: Duration = Duration::from_secs(10);

fn schema(name: &str) -> jsonschema::Validator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: Value = serde_json::from_str(&text).unwrap();
    jsonschema::options().should_validate_formats(true).build(&json).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn assert_valid(schema_name: &str, payload: &Value) {
    let v = schema(schema_name);
    let errors: Vec<String> = v.iter_errors(payload).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{schema_name}: {errors:#?}\npayload: {payload:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_published_payload_kind_validates_against_its_json_schema() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mqtt_cfg = format!("mode = \"embedded\"\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"vigil-schema\"");
    let cfg = config(dir.path(), &mqtt_cfg, &users());
    broker::start(&cfg).unwrap();
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    let hub = hub();
    let _bed = fake_bed(hub.clone(), store.clone(), "chair-1");
    let cancel = CancellationToken::new();
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), cancel.clone()).unwrap();
    let mut sub = Subscriber::connect_as(port, "it-schema", &format!("{BASE}/#"), false, NINA).await;
    let online = sub.expect("/status", T, |m| m.json["state"] == "online").await;
    assert_valid("vigil-status.schema.json", &online.json);

    hub.publish(Event::Vitals(vitals("chair-1")));
    let mut ack = alarm_event("chair-1", "x", 1, 1);
    ack.audio_paused_until = Some(Utc::now());
    ack.by = Some("nina".into());
    ack.parameter = None;
    emit_alarm(&store, &hub, "chair-1", "chair-1-a1", 1);
    let mut s = session("chair-1", "baseline_set");
    s.baseline = Some(vigil::event::Baseline { sys: 128.0, dia: 82.0, source: vigil::event::BaselineSource::Entered });
    s.detail =
        Some(serde_json::json!({"key": "limits.spo2.low.medium", "old": 92, "new": 90}).as_object().unwrap().clone());
    store.append(&[Event::Session(s.clone())]).unwrap();
    hub.publish(Event::Session(s));
    let d = DeviceStatus {
        bed: "chair-1".into(),
        source: "chair-1/0".into(),
        kind: "simulated".into(),
        device: "masimo".into(),
        link: LinkState::Connected,
        frames_ok: 12,
        frames_bad: 1,
        values_rejected: 0,
        last_error: Some("checksum".into()),
        last_frame: Some(Utc::now()),
        time: Utc::now(),
    };
    store.append(&[Event::Device(d.clone())]).unwrap();
    hub.publish(Event::Device(d));
    publish_once_as(port, NINA, &format!("{BASE}/cmd/chair-1/nina"), r#"{"command":"acknowledge"}"#).await;
    publish_once_as(port, NINA, &format!("{BASE}/cmd/chair-1/nina"), r#"{"command":"nonsense"}"#).await;

    let mut seen: BTreeMap<&str, usize> = BTreeMap::from([("vigil-status.schema.json", 1)]);
    let kinds = [
        ("/status", "vigil-status.schema.json"),
        ("/vitals", "vigil-vitals.schema.json"),
        ("/alarm", "vigil-alarm-event.schema.json"),
        ("/alarms", "vigil-alarms-snapshot.schema.json"),
        ("/session", "vigil-session.schema.json"),
        ("/device", "vigil-device.schema.json"),
        ("/reply/chair-1", "vigil-command-reply.schema.json"),
    ];
    let mut msgs = sub.collect_for(Duration::from_secs(4)).await;
    // On a loaded machine the replies can come after the window above (each command signs in with argon2).
    if !msgs.iter().any(|m| m.topic.ends_with("/reply/chair-1")) {
        msgs.push(sub.expect("/reply/chair-1", Duration::from_secs(20), |_| true).await);
    }
    for msg in &msgs {
        if let Some((_, schema_name)) = kinds.iter().find(|(suffix, _)| msg.topic.ends_with(suffix)) {
            assert_valid(schema_name, &msg.json);
            *seen.entry(schema_name).or_default() += 1;
        }
    }
    for (_, schema_name) in kinds {
        assert!(seen.contains_key(schema_name), "a {schema_name} payload was published: {seen:?}");
    }
    // An alarm event with every optional field, and without a parameter.
    assert_valid("vigil-alarm-event.schema.json", &vigil::mqtt::payload::alarm(&ack));

    cancel.cancel();
    tokio::time::timeout(T, m.task).await.unwrap().unwrap();
    let off = sub.expect("/status", T, |m| m.json["state"] == "offline").await;
    assert_valid("vigil-status.schema.json", &off.json);
}

#[test]
fn a_vitals_payload_with_every_parameter_including_the_perfusion_index_validates() {
    use vigil::event::{VitalValue, VitalsUpdate};
    use vigil::vitals::{Parameter, ValueStatus};
    let values = Parameter::ALL
        .iter()
        .map(|&parameter| VitalValue { parameter, value: Some(1.5), status: ValueStatus::Valid, time: Utc::now() })
        .collect();
    let update = VitalsUpdate { bed: "chair-1".into(), time: Utc::now(), values, other: Vec::new() };
    let payload = mqtt::payload::vitals(&update);
    assert_valid("vigil-vitals.schema.json", &payload);
    let pi = &payload["values"][Parameter::ALL.len() - 1]["parameter"];
    assert_eq!(
        (pi["name"].as_str(), pi["mdc_code"].as_u64(), pi["ucum"].as_str()),
        (Some("pi"), Some(150448), Some("%"))
    );
}

#[test]
fn a_vitals_payload_with_other_numerics_validates_and_leaves_the_field_out_when_there_are_none() {
    use vigil::event::{OtherVitalValue, VitalsUpdate};
    use vigil::vitals::ValueStatus;
    let temperature = OtherVitalValue {
        mdc_code: 150_344,
        unit_code: 268_192,
        value: Some(36.9),
        status: ValueStatus::Valid,
        time: Utc::now(),
    };
    let no_st = OtherVitalValue {
        mdc_code: 131_330,
        unit_code: 263_442,
        value: None,
        status: ValueStatus::Unavailable,
        time: Utc::now(),
    };
    let update =
        VitalsUpdate { bed: "chair-1".into(), time: Utc::now(), values: Vec::new(), other: vec![temperature, no_st] };
    let payload = mqtt::payload::vitals(&update);
    assert_valid("vigil-vitals.schema.json", &payload);
    assert_eq!(payload["other"][0]["mdc_code"], 150_344);
    let none = mqtt::payload::vitals(&VitalsUpdate { other: Vec::new(), ..update });
    assert!(none.get("other").is_none(), "{none}");
}

#[test]
fn documented_command_examples_validate_and_malformed_ones_do_not() {
    let good = [
        r#"{"command":"acknowledge","alarm_id":"chair-1-0007","user":"nina","request_id":"42","reply_to":"vigil/v1/s/w/reply/app"}"#,
        r#"{"command":"acknowledge","user":"nina"}"#,
        r#"{"command":"pause_audio","seconds":120,"user":"nina"}"#,
        r#"{"command":"resume_audio","user":"nina"}"#,
        r#"{"command":"session_start","patient":"P-042","baseline_sys":128,"baseline_dia":82,"user":"nina"}"#,
        r#"{"command":"infusion_start","user":"nina","request_id":7}"#,
        r#"{"command":"infusion_stop","user":"nina"}"#,
        r#"{"command":"session_end","user":"nina"}"#,
        r#"{"command":"set_baseline","sys":130,"dia":85,"user":"ada"}"#,
        r#"{"command":"set_limit","key":"limits.spo2.low.medium","value":90,"user":"ada"}"#,
        r#"{"command":"set_limit","key":"limits.spo2.low.medium","user":"ada"}"#,
    ];
    let v = schema("vigil-command.schema.json");
    for g in good {
        let json: Value = serde_json::from_str(g).unwrap();
        assert!(v.is_valid(&json), "{g}");
        // The schema and the parser agree.
        assert!(vigil::mqtt::command::parse(g.as_bytes()).unwrap().command.is_ok(), "{g}");
    }
    for bad in [
        r#"{"command":"pause_audio","user":"nina"}"#,
        r#"{"command":"acknowledge","user":"nina","password":"pw"}"#,
        r#"{"command":"acknowledge","alarmid":"x"}"#,
        r#"{"command":"reboot"}"#,
    ] {
        let json: Value = serde_json::from_str(bad).unwrap();
        assert!(!v.is_valid(&json), "{bad}");
        assert!(vigil::mqtt::command::parse(bad.as_bytes()).unwrap().command.is_err(), "{bad}");
    }
}
