#!/usr/bin/env bash
# IHE PCD ACM against an independent Alert Manager: a Python MLLP server on PyPI's `hl7` (tests/ci/acm_manager.py)
# parses every ORU^R40 Vigil's AcmClient sends (examples/acm-send.rs: an SpO2 alarm's start, acknowledged update
# and end, with HL7 delimiters in its text, and heartbeats), checks the header, the OBR and every facet, and answers.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore hl7 >/dev/null
python3 -c 'import hl7.mllp' || fail "PyPI hl7 (with hl7.mllp) is not importable"
cargo build -q --example acm-send
SENDER="${CARGO_TARGET_DIR:-target}/debug/examples/acm-send"
MANAGER_PID=; work=$(mktemp -d); trap 'kill $MANAGER_PID 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(free_port)
python3 tests/ci/acm_manager.py "$port" "$work/results.jsonl" &
MANAGER_PID=$!
wait_port "$port"
"$SENDER" "127.0.0.1:$port" || fail "the Python Alert Manager did not accept every alarm message"
sleep 0.5
cat "$work/results.jsonl"
python3 - "$work/results.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
errors = [l for l in lines if l["kind"] == "error"]
assert not errors, errors
alerts = [l for l in lines if l["kind"] == "alert"]
beats = [l for l in lines if l["kind"] == "heartbeat"]
assert [a["phase"] for a in alerts] == ["start", "update", "end"], alerts
assert {a["alert_id"] for a in alerts} == {"chair-1-ci-1"}, alerts
assert len({a["indication_id"] for a in alerts}) == 3, "OBR-3 is one per message (OBR-29 the alert)"
assert alerts[0]["event"] == "196670^MDC_EVT_LO^MDC" and alerts[0]["priority"] == "PH" and alerts[0]["type"] == "SP"
assert alerts[0]["source"] == "150456^MDC_PULS_OXIM_SAT_O2^MDC" and alerts[0]["value"] == 84.0
assert alerts[0]["unit"].startswith("262688^MDC_DIM_PERCENT"), alerts[0]["unit"]
assert alerts[0]["text"] == "SpO2 84 < 88 | probe^ok & ~fine \\ really", alerts[0]["text"]
assert alerts[1]["inactivation"] == "alert-acknowledged" and alerts[2]["state"] == "inactive"
assert len(beats) >= 2 and beats[0]["phase"] == "start", beats
assert beats[-1]["phase"] == "end" and beats[-1]["state"] == "inactive", beats
print(f"acm: {len(alerts)} alarm messages and {len(beats)} heartbeats parsed and checked by PyPI hl7")
PY
