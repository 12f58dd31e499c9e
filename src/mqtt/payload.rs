//! The JSON payloads of the MQTT API. Each is the domain struct's serde form plus `schema_version`, with every
//! parameter expanded to its name, IEEE 11073 MDC code and reference id, UCUM unit, LOINC code and display name,
//! so that an integrator needs no lookup table. JSON Schemas: `docs/schemas/`.

use serde::Serialize;
use serde_json::{json, Value};

use crate::event::{AlarmEvent, BedAlarms, DeviceStatus, SessionEvent, VitalsUpdate};
use crate::vitals::{Parameter, Timestamp};

/// Version of every payload's shape. Additive changes keep it; a breaking change bumps it and the topic prefix
/// (`vigil/v2`).
pub const SCHEMA_VERSION: u32 = 1;

/// A parameter as integrators see it.
pub fn parameter(p: Parameter) -> Value {
    json!({
        "name": p.name(),
        "mdc_code": p.mdc_code(),
        "mdc_ref_id": p.mdc_ref_id(),
        "ucum": p.ucum(),
        "loinc": p.loinc(),
        "display_name": p.display_name(),
    })
}

fn expand_parameter(obj: &mut Value) {
    if let Some(slot) = obj.get_mut("parameter") {
        let expanded = slot.as_str().and_then(Parameter::from_name).map(parameter);
        if let Some(e) = expanded {
            *slot = e;
        }
    }
}

fn versioned<T: Serialize>(value: &T) -> Value {
    let mut v = serde_json::to_value(value).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("schema_version".into(), SCHEMA_VERSION.into());
    }
    v
}

/// `bed/{bed}/vitals`.
pub fn vitals(update: &VitalsUpdate) -> Value {
    let mut v = versioned(update);
    if let Some(Value::Array(values)) = v.get_mut("values") {
        values.iter_mut().for_each(expand_parameter);
    }
    v
}

/// `bed/{bed}/alarm`: one alarm lifecycle event.
pub fn alarm(event: &AlarmEvent) -> Value {
    let mut v = versioned(event);
    expand_parameter(&mut v);
    v
}

/// `bed/{bed}/alarms`: the bed's present alarms.
pub fn alarms(snapshot: &BedAlarms) -> Value {
    let mut v = versioned(snapshot);
    if let Some(Value::Array(list)) = v.get_mut("alarms") {
        *list = snapshot.alarms.iter().map(alarm).collect();
    }
    v
}

/// The retained `alarms` payload for a bed that has no alarms (and never had, as far as this store knows).
pub fn no_alarms(bed: &str, time: Timestamp, bed_seq: u64) -> Value {
    alarms(&BedAlarms { bed: bed.into(), time, bed_seq, alarms: Vec::new() })
}

/// `bed/{bed}/session`.
pub fn session(event: &SessionEvent) -> Value {
    versioned(event)
}

/// `bed/{bed}/device`: every source of the bed.
pub fn device(bed: &str, time: Timestamp, sources: &[DeviceStatus]) -> Value {
    json!({
        "schema_version": SCHEMA_VERSION,
        "bed": bed,
        "time": time,
        "sources": sources,
    })
}

/// What the `status` topic says.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `online` or `offline`.
    pub state: &'static str,
    /// Birth sequence: +1 per connection, kept across restarts; the will carries the birth's number.
    pub seq: u64,
    /// When this status was made (for the will: when the connection it guards was made).
    pub time: Timestamp,
    /// Why offline: `shutdown` (clean) or `connection-lost` (the broker published the last will).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Vigil's version.
    pub version: &'static str,
    /// Site name.
    pub site: String,
    /// Ward name.
    pub ward: String,
    /// MQTT client id.
    pub client_id: String,
    /// Configured beds.
    pub beds: Vec<String>,
    /// `true` in a last will whose bed list was left out because it would not fit (see [`Status::will`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub beds_omitted: bool,
    /// `failed` while Vigil's store cannot write (disk full, read-only): alarms still reach the dashboard and
    /// are kept in memory to be stored and sent later. Absent when the store is fine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<&'static str>,
}

/// The most an MQTT 3.1.1 last will payload can hold: its length is a two-byte field (spec 3.1.3.3).
pub const MAX_WILL_BYTES: usize = u16::MAX as usize;

impl Status {
    /// This status as a last will payload. A will longer than [`MAX_WILL_BYTES`] cannot be encoded: the length
    /// wraps and the broker misreads the rest of the CONNECT (the username and password), so Vigil could never
    /// connect. A large ward's bed list (about 5,000 beds) is left out of the will and `beds_omitted` says so;
    /// the birth before it carries the list.
    pub fn will(&self) -> Vec<u8> {
        let full = serde_json::to_vec(self).unwrap_or_default();
        if full.len() <= MAX_WILL_BYTES {
            return full;
        }
        let short = Status { beds: Vec::new(), beds_omitted: true, ..self.clone() };
        serde_json::to_vec(&short).unwrap_or_default()
    }
}

/// A reply to a command.
#[derive(Debug, Clone, Serialize)]
pub struct Reply {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When the reply was made.
    pub time: Timestamp,
    /// The `request_id` of the command, echoed.
    pub request_id: Option<String>,
    /// The bed from the topic.
    pub bed: String,
    /// The command name, when it could be read.
    pub command: Option<String>,
    /// The user who sent it, when given.
    pub user: Option<String>,
    /// Whether it ran.
    pub ok: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How many events it caused (they follow on the bed's topics).
    pub events: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(beds: usize) -> Status {
        Status {
            schema_version: SCHEMA_VERSION,
            state: "offline",
            seq: 3,
            time: chrono::Utc::now(),
            reason: Some("connection-lost"),
            version: "0.1.0",
            site: "site".into(),
            ward: "ward".into(),
            client_id: "vigil".into(),
            beds: (0..beds).map(|i| format!("chair-{i}")).collect(),
            beds_omitted: false,
            store: None,
        }
    }

    #[test]
    fn a_will_keeps_a_wards_bed_list_while_it_fits_and_says_when_it_had_to_leave_it_out() {
        let small: serde_json::Value = serde_json::from_slice(&status(40).will()).unwrap();
        assert_eq!(small["beds"].as_array().unwrap().len(), 40);
        assert!(small.get("beds_omitted").is_none());

        let big = status(6000).will();
        assert!(big.len() <= MAX_WILL_BYTES, "{} bytes", big.len());
        let big: serde_json::Value = serde_json::from_slice(&big).unwrap();
        assert_eq!(big["beds"], serde_json::json!([]));
        assert_eq!(big["beds_omitted"], true);
        assert_eq!(big["state"], "offline");
        assert_eq!(big["seq"], 3);
    }
}
