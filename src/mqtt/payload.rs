//! The JSON payloads of the MQTT API. Each is the domain struct's serde form plus `schema_version`, with every
//! parameter expanded to its name, IEEE 11073 MDC code and reference id, UCUM unit, LOINC code and display name,
//! so that an integrator needs no lookup table. JSON Schemas: `docs/schemas/`.

use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::{json, Value};

use crate::event::{AlarmEvent, BedAlarms, DeviceStatus, SessionEvent, VitalValue, VitalsUpdate};
use crate::vitals::{Parameter, Timestamp};

/// Version of every payload's shape. Additive changes keep it; a breaking change bumps it and the topic prefix
/// (`vigil/v2`).
pub const SCHEMA_VERSION: u32 = 1;

/// A parameter as integrators see it.
pub fn parameter(p: Parameter) -> Value {
    serde_json::to_value(ParameterPayload(p)).unwrap_or(Value::Null)
}

/// A parameter expanded, keys in the sorted order of a `Value` map.
struct ParameterPayload(Parameter);

impl Serialize for ParameterPayload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut m = s.serialize_map(Some(6))?;
        m.serialize_entry("display_name", p.display_name())?;
        m.serialize_entry("loinc", &p.loinc())?;
        m.serialize_entry("mdc_code", &p.mdc_code())?;
        m.serialize_entry("mdc_ref_id", p.mdc_ref_id())?;
        m.serialize_entry("name", p.name())?;
        m.serialize_entry("ucum", p.ucum())?;
        m.end()
    }
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

/// `bed/{bed}/vitals`, as a `Value` (the publisher encodes [`VitalsPayload`] directly).
pub fn vitals(update: &VitalsUpdate) -> Value {
    serde_json::to_value(VitalsPayload(update)).unwrap_or(Value::Null)
}

/// `bed/{bed}/vitals`, serialized straight from the update. The publisher encodes one per bed per second, and
/// building a `Value` tree first (as for the other payloads) was the largest part of its work at 5,000 beds. Keys
/// come in the sorted order of a `Value` map, so both forms give the same bytes.
pub struct VitalsPayload<'a>(pub &'a VitalsUpdate);

impl Serialize for VitalsPayload<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let u = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("bed", &u.bed)?;
        if !u.other.is_empty() {
            // Only from monitors that send more than Vigil's parameters: the general form, which sorts the keys.
            m.serialize_entry("other", &serde_json::to_value(&u.other).map_err(serde::ser::Error::custom)?)?;
        }
        m.serialize_entry("schema_version", &SCHEMA_VERSION)?;
        m.serialize_entry("time", &u.time)?;
        m.serialize_entry("values", &ValuesPayload(&u.values))?;
        m.end()
    }
}

struct ValuesPayload<'a>(&'a [VitalValue]);

impl Serialize for ValuesPayload<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ValuePayload))
    }
}

struct ValuePayload<'a>(&'a VitalValue);

impl Serialize for ValuePayload<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("parameter", &ParameterPayload(v.parameter))?;
        m.serialize_entry("status", &v.status)?;
        m.serialize_entry("time", &v.time)?;
        m.serialize_entry("value", &v.value)?;
        m.end()
    }
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
    fn the_vitals_payload_written_directly_has_the_bytes_of_the_structs_serde_form_with_parameters_expanded() {
        use crate::event::OtherVitalValue;
        use crate::vitals::ValueStatus;
        let t = chrono::Utc::now();
        let values = Parameter::ALL
            .iter()
            .enumerate()
            .map(|(i, &parameter)| VitalValue {
                parameter,
                value: (i % 3 != 0).then_some(i as f64 * 1.25),
                status: if i % 2 == 0 { ValueStatus::Valid } else { ValueStatus::Questionable },
                time: t - chrono::Duration::milliseconds(i as i64 * 137),
            })
            .collect();
        let other = vec![OtherVitalValue {
            mdc_code: 150_344,
            unit_code: 268_192,
            value: Some(36.9),
            status: ValueStatus::Valid,
            time: t,
        }];
        for update in [
            VitalsUpdate { bed: "chair-\"7\"".into(), time: t, values, other },
            VitalsUpdate { bed: "chair-1".into(), time: t, values: Vec::new(), other: Vec::new() },
        ] {
            // The rule every payload follows (module doc), the long way round.
            let mut expected = versioned(&update);
            if let Some(Value::Array(values)) = expected.get_mut("values") {
                values.iter_mut().for_each(expand_parameter);
            }
            let direct = serde_json::to_vec(&VitalsPayload(&update)).unwrap();
            assert_eq!(String::from_utf8(direct).unwrap(), serde_json::to_string(&expected).unwrap());
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
