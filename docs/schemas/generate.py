#!/usr/bin/env python3
"""Generates the JSON Schemas of Vigil's MQTT payloads (one file per payload) from shared definitions, so the
alarm event is defined once and reused by the alarms snapshot. Run from anywhere: `python3 docs/schemas/generate.py`.
The Rust test `tests/mqtt_schemas.rs` validates real payloads against the generated files; edit here, regenerate,
commit both."""

import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
BASE_ID = "https://vigil.example/schemas/v1/"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

TIME = {"type": "string", "format": "date-time", "description": "RFC 3339 time, UTC."}
OPT_TIME = {"type": ["string", "null"], "format": "date-time"}
VERSION = {"const": 1, "description": "Payload schema version. A breaking change bumps it and the topic prefix."}
BED = {"type": "string", "minLength": 1, "description": "Bed id from the configuration, also a topic segment."}

PARAMETER = {
    "type": "object",
    "description": "A vital-sign parameter with its codes, so that no lookup table is needed.",
    "required": ["name", "mdc_code", "mdc_ref_id", "ucum", "loinc", "display_name"],
    "additionalProperties": False,
    "properties": {
        "name": {"enum": ["hr", "pr", "spo2", "nibp_sys", "nibp_dia", "nibp_mean", "rr", "pi"],
                 "description": "pi: the perfusion index (percent), shown and published, never alarmed on."},
        "mdc_code": {"type": "integer", "description": "IEEE 11073-10101 numeric code, e.g. 150456."},
        "mdc_ref_id": {"type": "string", "pattern": "^MDC_", "description": "e.g. MDC_PULS_OXIM_SAT_O2"},
        "ucum": {"enum": ["/min", "%", "mm[Hg]"], "description": "UCUM unit of the value."},
        "loinc": {"type": ["string", "null"], "description": "LOINC code where one applies."},
        "display_name": {"type": "string", "description": "For people: 'SpO2', 'NIBP systolic'."},
    },
}

ALARM_EVENT = {
    "type": "object",
    "required": [
        "schema_version", "time", "bed", "alarm_id", "seq", "bed_seq", "kind", "source", "condition", "parameter",
        "priority", "phase", "state", "value", "limit", "evidence", "message",
    ],
    "additionalProperties": False,
    "properties": {
        "schema_version": VERSION,
        "time": TIME,
        "bed": BED,
        "alarm_id": {"type": "string", "minLength": 1, "description": "Stable for the alarm's life, never reused."},
        "seq": {"type": "integer", "minimum": 1, "description": "1 for start, +1 per event of this alarm."},
        "bed_seq": {"type": "integer", "minimum": 1,
                    "description": "Per-bed alarm event number: contiguous, never repeats, survives restarts."},
        "kind": {"enum": ["threshold", "trend", "technical", "advisory", "device"],
                 "description": "device: an alarm the monitor itself raised (source monitor)."},
        "source": {"enum": ["vigil", "monitor"],
                   "description": "Who decided the alarm: Vigil's engine, or the bedside monitor (kind device)."},
        "condition": {"type": "string",
                      "description": "e.g. spo2_low, nibp_sys_high, nibp_rise, no_data, monitor_alarm."},
        "parameter": {"oneOf": [{"type": "null"}, {"$ref": "#/$defs/parameter"}]},
        "priority": {"enum": ["low", "medium", "high"]},
        "phase": {"enum": ["start", "update", "escalate", "de-escalate", "end"]},
        "state": {"enum": ["active", "latched", "acknowledged", "audio-paused", "cleared"]},
        "value": {"type": ["number", "null"]},
        "limit": {"type": ["number", "null"]},
        "evidence": {"type": "object", "description": "What the rule saw: baseline, delta, window, integral …"},
        "message": {"type": "string"},
        "by": {"type": "string", "description": "User whose command caused this event."},
        "audio_paused_until": TIME,
        "test": {"const": True, "description": "Present (and true) only on a self-test's alarm events (condition "
                 "self_test): a test of the alarm path, not about the patient."},
    },
}

DEVICE_STATUS = {
    "type": "object",
    "required": ["bed", "source", "kind", "device", "link", "frames_ok", "frames_bad", "values_rejected",
                 "last_error", "last_frame", "time"],
    "additionalProperties": False,
    "properties": {
        "bed": BED,
        "source": {"type": "string", "description": "bed id / index of the source in the config: chair-1/0"},
        "kind": {"type": "string", "description": "serial, mllp or simulated"},
        "device": {"type": "string", "description": "masimo, nonin or hl7"},
        "link": {"enum": ["connecting", "connected", "disconnected"]},
        "frames_ok": {"type": "integer", "minimum": 0},
        "frames_bad": {"type": "integer", "minimum": 0},
        "values_rejected": {"type": "integer", "minimum": 0},
        "last_error": {"type": ["string", "null"]},
        "last_frame": OPT_TIME,
        "time": TIME,
    },
}


def schema(name, title, description, body, defs=None):
    doc = {"$schema": DRAFT, "$id": BASE_ID + name, "title": title, "description": description}
    doc.update(body)
    if defs:
        doc["$defs"] = defs
    return name, doc


SCHEMAS = [
    schema("vigil-status.schema.json", "Vigil status",
           "Topic {base}/status, retained, QoS 1. Birth on every connection; the last will and a clean shutdown "
           "say offline with the birth's seq.", {
               "type": "object",
               "required": ["schema_version", "state", "seq", "time", "version", "site", "ward", "client_id", "beds"],
               "additionalProperties": False,
               "properties": {
                   "schema_version": VERSION,
                   "state": {"enum": ["online", "offline"]},
                   "seq": {"type": "integer", "minimum": 0,
                           "description": "Birth sequence: +1 per connection, kept across restarts."},
                   "time": TIME,
                   "reason": {"enum": ["shutdown", "connection-lost"]},
                   "store": {"const": "failed",
                             "description": "Present while Vigil's store cannot write (disk full, read-only): alarms "
                                            "still reach the dashboard and are sent once the disk is back."},
                   "version": {"type": "string"},
                   "site": {"type": "string"},
                   "ward": {"type": "string"},
                   "client_id": {"type": "string"},
                   "beds": {"type": "array", "items": BED},
                   "beds_omitted": {"const": True,
                                    "description": "Only in a last will whose bed list would not fit the 65,535 "
                                                   "bytes an MQTT will can carry: beds is empty, the birth has "
                                                   "the list."},
               },
           }),
    schema("vigil-vitals.schema.json", "Vigil vitals", "Topic {base}/bed/{bed}/vitals, QoS 0, not retained.", {
        "type": "object",
        "required": ["schema_version", "bed", "time", "values"],
        "additionalProperties": False,
        "properties": {
            "schema_version": VERSION,
            "bed": BED,
            "time": TIME,
            "values": {"type": "array", "items": {
                "type": "object",
                "required": ["parameter", "value", "status", "time"],
                "additionalProperties": False,
                "properties": {
                    "parameter": {"$ref": "#/$defs/parameter"},
                    "value": {"type": ["number", "null"]},
                    "status": {"enum": ["valid", "questionable", "unavailable", "demo"]},
                    "time": TIME,
                },
            }},
            "other": {"type": "array", "description": "Numerics that are none of Vigil's parameters (an "
                      "IntelliVue's temperature, ST segments, ...), by MDC code; never alarmed on. Absent when "
                      "there are none.", "items": {
                "type": "object",
                "required": ["mdc_code", "unit_code", "value", "status", "time"],
                "additionalProperties": False,
                "properties": {
                    "mdc_code": {"type": "integer", "minimum": 0, "description": "IEEE 11073-10101 code."},
                    "unit_code": {"type": "integer", "minimum": 0, "description": "MDC code of the unit."},
                    "value": {"type": ["number", "null"]},
                    "status": {"enum": ["valid", "questionable", "unavailable", "demo"]},
                    "time": TIME,
                },
            }},
        },
    }, {"parameter": PARAMETER}),
    schema("vigil-alarm-event.schema.json", "Vigil alarm event",
           "Topic {base}/bed/{bed}/alarm, QoS 1, not retained. De-duplicate by (alarm_id, seq); a gap in bed_seq "
           "means a lost event.", ALARM_EVENT, {"parameter": PARAMETER}),
    schema("vigil-alarms-snapshot.schema.json", "Vigil bed alarms snapshot",
           "Topic {base}/bed/{bed}/alarms, retained, QoS 1: the latest event of each alarm that has not ended.", {
               "type": "object",
               "required": ["schema_version", "bed", "time", "bed_seq", "alarms"],
               "additionalProperties": False,
               "properties": {
                   "schema_version": VERSION,
                   "bed": BED,
                   "time": TIME,
                   "bed_seq": {"type": "integer", "minimum": 0, "description": "Last alarm event included."},
                   "alarms": {"type": "array", "items": {"$ref": "#/$defs/alarm_event"}},
               },
           }, {"parameter": PARAMETER, "alarm_event": ALARM_EVENT}),
    schema("vigil-session.schema.json", "Vigil session event",
           "Topic {base}/bed/{bed}/session, retained, QoS 1 (from the outbox).", {
               "type": "object",
               "required": ["schema_version", "time", "bed", "session_id", "session_seq", "action", "phase",
                            "started", "infusion_started", "patient", "baseline", "by"],
               "additionalProperties": False,
               "properties": {
                   "schema_version": VERSION,
                   "time": TIME,
                   "bed": BED,
                   "session_id": {"type": "string"},
                   "session_seq": {"type": "integer", "minimum": 1,
                                   "description": "Per-bed session event number, contiguous across restarts. "
                                                  "(bed, session_seq) identifies the event: drop duplicates by it, "
                                                  "see a loss as a gap."},
                   "action": {"type": "string",
                              "description": "session_start, infusion_start, infusion_stop, session_end, baseline_set, "
                                             "limit_set"},
                   "phase": {"enum": ["idle", "pre_infusion", "infusion", "observation", "ended"]},
                   "started": OPT_TIME,
                   "infusion_started": OPT_TIME,
                   "patient": {"type": ["string", "null"], "description": "Pseudonym, never a name."},
                   "baseline": {"oneOf": [{"type": "null"}, {
                       "type": "object",
                       "required": ["sys", "dia", "source"],
                       "additionalProperties": False,
                       "properties": {
                           "sys": {"type": "number"},
                           "dia": {"type": "number"},
                           "source": {"enum": ["median_of_pre_infusion", "entered"]},
                       },
                   }]},
                   "by": {"type": ["string", "null"]},
                   "detail": {"type": "object",
                              "description": "What changed, for actions that need more (limit_set: key, old, new)."},
               },
           }),
    schema("vigil-device.schema.json", "Vigil bed sources",
           "Topic {base}/bed/{bed}/device, retained, QoS 1: every source of the bed, link state and counters.", {
               "type": "object",
               "required": ["schema_version", "bed", "time", "sources"],
               "additionalProperties": False,
               "properties": {
                   "schema_version": VERSION,
                   "bed": BED,
                   "time": TIME,
                   "sources": {"type": "array", "items": {"$ref": "#/$defs/device_status"}},
               },
           }, {"device_status": DEVICE_STATUS}),
]

ENVELOPE = {
    "user": {"type": "string", "description": "Optional; when given, the user the command topic cmd/{bed}/{user} names "
                                            "(the broker account that publishes it). Commands carry no password."},
    "request_id": {"type": ["string", "integer"], "description": "Echoed in the reply."},
    "reply_to": {"type": "string", "description": "Reply topic under {base}/reply/ (default {base}/reply/{bed})."},
}


def command(name, props=None, required=()):
    p = {"command": {"const": name}}
    p.update(props or {})
    p.update(ENVELOPE)
    return {"type": "object", "required": ["command", *required], "additionalProperties": False, "properties": p}


BP = {"type": "number"}
SCHEMAS += [
    schema("vigil-command.schema.json", "Vigil command",
           "Topic {base}/cmd/{bed}. The bed is in the topic. Answered on the reply topic.", {
               "oneOf": [
                   command("acknowledge", {"alarm_id": {"type": ["string", "null"],
                                                        "description": "One alarm, or all of the bed when absent."}}),
                   command("pause_audio", {"seconds": {"type": "integer", "minimum": 1, "maximum": 600}},
                           ["seconds"]),
                   command("resume_audio"),
                   command("session_start", {"patient": {"type": ["string", "null"], "maxLength": 64},
                                             "baseline_sys": {"type": ["number", "null"]},
                                             "baseline_dia": {"type": ["number", "null"]}}),
                   command("infusion_start"),
                   command("infusion_stop"),
                   command("session_end"),
                   command("set_baseline", {"sys": BP, "dia": BP}, ["sys", "dia"]),
                   command("set_limit", {"key": {"type": "string", "minLength": 1,
                                                 "description": "Profile key path, e.g. limits.spo2.low.medium"},
                                         "value": {"type": ["number", "null"],
                                                   "description": "New value; absent or null restores the profile's."}},
                           ["key"]),
               ],
           }),
    schema("vigil-command-reply.schema.json", "Vigil command reply",
           "Topic reply_to or {base}/reply/{bed}, QoS 1, not retained.", {
               "type": "object",
               "required": ["schema_version", "time", "request_id", "bed", "command", "user", "ok", "events"],
               "additionalProperties": False,
               "properties": {
                   "schema_version": VERSION,
                   "time": TIME,
                   "request_id": {"type": ["string", "null"]},
                   "bed": {"type": "string"},
                   "command": {"type": ["string", "null"]},
                   "user": {"type": ["string", "null"]},
                   "ok": {"type": "boolean"},
                   "reason": {"type": "string", "description": "Why it was refused."},
                   "events": {"type": "integer", "minimum": 0, "description": "Events it caused (they follow)."},
               },
           }),
]

if __name__ == "__main__":
    for name, doc in SCHEMAS:
        (HERE / name).write_text(json.dumps(doc, indent=2) + "\n")
        print("wrote", name)
