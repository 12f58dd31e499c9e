//! Home Assistant MQTT discovery (opt-in: `mqtt.discovery_prefix`): one HA device per bed with sensors for SpO2,
//! pulse rate, heart rate, NIBP systolic and diastolic and the bed's alarm state. Pure: it builds the retained
//! config payloads; the publisher sends them on every (re)connect.
//!
//! The sensors read Vigil's own topics (`docs/mqtt-api.md`): vitals from `bed/{bed}/vitals`, the alarm state from
//! the retained `bed/{bed}/alarms`; `availability` is Vigil's retained `status` (online / offline, the last will
//! included). A value counts only while it is `valid` and younger than its parameter's maximum age, measured on
//! Vigil's clock (the payload's own `time` against the value's `time`), and `expire_after` makes a sensor
//! unavailable when its topic falls silent, so a stale SpO2 never looks current. Field names: the HA MQTT sensor
//! documentation (docs/sources.md, "Home Assistant").

use serde_json::{json, Value};

use super::topics::Topics;
use crate::hub::BedInfo;
use crate::vitals::Parameter;

/// The vital-sign sensors each bed gets, in display order.
pub const SENSORS: [Parameter; 5] =
    [Parameter::Spo2, Parameter::Pr, Parameter::Hr, Parameter::NibpSys, Parameter::NibpDia];

/// Seconds a continuous value (SpO2, pulse, HR) stays current: vitals arrive about once a second, so 30 s of
/// silence means the stream stopped.
pub const CONTINUOUS_MAX_AGE_S: u64 = 30;
/// Seconds an NIBP value stays current: a spot measurement, repeated every few minutes in a session.
pub const NIBP_MAX_AGE_S: u64 = 1800;

/// HA object ids and identifiers: lower-case letters, digits and `_` only.
fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

/// Builds the discovery configs of one Vigil (one site and ward).
#[derive(Debug, Clone)]
pub struct Discovery {
    prefix: String,
    topics: Topics,
    node: String,
    ward: String,
}

impl Discovery {
    /// Configs under `prefix` (e.g. `homeassistant`) for the ward `topics` publishes.
    pub fn new(prefix: &str, topics: Topics, site: &str, ward: &str) -> Discovery {
        Discovery {
            prefix: prefix.trim_end_matches('/').to_owned(),
            node: format!("vigil_{}_{}", slug(site), slug(ward)),
            topics,
            ward: ward.to_owned(),
        }
    }

    fn availability(&self) -> Value {
        json!([{
            "topic": self.topics.status(),
            "value_template": "{{ value_json.state }}",
            "payload_available": "online",
            "payload_not_available": "offline",
        }])
    }

    fn device(&self, bed: &BedInfo) -> Value {
        json!({
            "identifiers": [format!("{}_{}", self.node, slug(&bed.id))],
            "name": if bed.label.is_empty() { bed.id.to_string() } else { bed.label.clone() },
            "manufacturer": "Vigil",
            "model": "Vigil chair (secondary notification aid)",
            "sw_version": env!("CARGO_PKG_VERSION"),
            "suggested_area": self.ward,
        })
    }

    fn topic(&self, bed: &BedInfo, object: &str) -> String {
        format!("{}/sensor/{}/{}_{object}/config", self.prefix, self.node, slug(&bed.id))
    }

    /// The retained config messages for one bed: (topic, payload), one per sensor.
    pub fn bed(&self, bed: &BedInfo) -> Vec<(String, Value)> {
        let mut out: Vec<(String, Value)> = SENSORS.iter().map(|&p| self.vital(bed, p)).collect();
        out.push(self.alarm_state(bed));
        out
    }

    fn vital(&self, bed: &BedInfo, p: Parameter) -> (String, Value) {
        let max_age = if p.is_nibp() { NIBP_MAX_AGE_S } else { CONTINUOUS_MAX_AGE_S };
        let template = format!(
            "{{% set m = value_json['values'] | selectattr('parameter.name', 'eq', '{name}') | list %}}\
             {{% if m and m[0].status == 'valid' and m[0].value is not none \
             and (as_timestamp(value_json.time) - as_timestamp(m[0].time)) < {max_age} %}}{{{{ m[0].value }}}}\
             {{% else %}}None{{% endif %}}",
            name = p.name()
        );
        let unit = match p.ucum() {
            "/min" => "bpm",
            "mm[Hg]" => "mmHg",
            other => other,
        };
        let mut config = json!({
            "name": p.display_name(),
            "unique_id": format!("{}_{}_{}", self.node, slug(&bed.id), p.name()),
            "state_topic": self.topics.vitals(&bed.id),
            "value_template": template,
            "unit_of_measurement": unit,
            "state_class": "measurement",
            "expire_after": max_age,
            "availability": self.availability(),
            "device": self.device(bed),
            "origin": {"name": "Vigil", "sw_version": env!("CARGO_PKG_VERSION")},
        });
        // HA's `pressure` class takes mmHg; it has none for saturation or rates.
        if p.is_nibp() {
            config["device_class"] = "pressure".into();
        }
        (self.topic(bed, p.name()), config)
    }

    fn alarm_state(&self, bed: &BedInfo) -> (String, Value) {
        let alarms = self.topics.alarms(&bed.id);
        let config = json!({
            "name": "Alarm",
            "unique_id": format!("{}_{}_alarm", self.node, slug(&bed.id)),
            "state_topic": alarms,
            "value_template": "{% set p = value_json.alarms | map(attribute='priority') | list %}\
                {{ 'high' if 'high' in p else 'medium' if 'medium' in p else 'low' if 'low' in p else 'none' }}",
            "device_class": "enum",
            "options": ["none", "low", "medium", "high"],
            "json_attributes_topic": alarms,
            "json_attributes_template": "{{ {'alarms': value_json.alarms | map(attribute='message') | list} | tojson }}",
            "availability": self.availability(),
            "device": self.device(bed),
            "origin": {"name": "Vigil", "sw_version": env!("CARGO_PKG_VERSION")},
        });
        (self.topic(bed, "alarm"), config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bed() -> BedInfo {
        BedInfo { id: "Chair-1".into(), label: "Chair 1".into(), profile: "ketamine-chair".into() }
    }

    #[test]
    fn each_bed_is_one_device_with_six_sensors_reading_vigils_own_topics() {
        let d =
            Discovery::new("homeassistant/", Topics::new("vigil/v1", "demo clinic", "suite"), "demo clinic", "suite");
        let configs = d.bed(&bed());
        let topics: Vec<&str> = configs.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics[0], "homeassistant/sensor/vigil_demo_clinic_suite/chair_1_spo2/config");
        assert_eq!(topics[5], "homeassistant/sensor/vigil_demo_clinic_suite/chair_1_alarm/config");
        let ids: std::collections::HashSet<&str> =
            configs.iter().map(|(_, c)| c["unique_id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 6, "unique ids are unique");
        for (_, c) in &configs {
            assert_eq!(c["device"]["identifiers"][0], "vigil_demo_clinic_suite_chair_1");
            assert_eq!(c["availability"][0]["topic"], "vigil/v1/demo clinic/suite/status");
            assert_eq!(c["availability"][0]["payload_not_available"], "offline");
        }
        let spo2 = &configs[0].1;
        assert_eq!(spo2["state_topic"], "vigil/v1/demo clinic/suite/bed/Chair-1/vitals");
        assert_eq!((spo2["unit_of_measurement"].as_str(), spo2["expire_after"].as_u64()), (Some("%"), Some(30)));
        assert!(spo2["value_template"].as_str().unwrap().contains("'spo2'"));
        let sys = &configs[3].1;
        assert_eq!(
            (sys["device_class"].as_str(), sys["unit_of_measurement"].as_str()),
            (Some("pressure"), Some("mmHg"))
        );
        assert_eq!(sys["expire_after"], NIBP_MAX_AGE_S);
        assert_eq!(configs[1].1["unit_of_measurement"], "bpm");
        let alarm = &configs[5].1;
        assert_eq!(alarm["state_topic"], "vigil/v1/demo clinic/suite/bed/Chair-1/alarms");
        assert_eq!(alarm["device_class"], "enum");
        assert!(alarm.get("expire_after").is_none(), "the retained alarms topic changes only on change");
    }
}
