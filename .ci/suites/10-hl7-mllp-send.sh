#!/usr/bin/env bash
# A real third-party HL7 client (mllp_send from PyPI's `hl7`) sends real monitor messages to the daemon's MLLP
# listener: ACKs are checked (AA, AE for a broken message, AR for an unknown device), and the Mindray NIBP
# appears on MQTT for the bed whose device_id matches MSH-3.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore hl7 >/dev/null
VIGIL_PID=; work=$(mktemp -d); trap 'kill $VIGIL_PID 2>/dev/null || true; rm -rf "$work"' EXIT
mqtt=$(free_port); mllp=$(free_port); dash=$(free_port)
cat >"$work/vigil.toml" <<TOML
[site]
name = "ci"
ward = "hl7"
[mqtt]
port = $mqtt
client_id = "vigil-ci-hl7"
[dashboard]
listen = "127.0.0.1:$dash"
[store]
path = "$work/vigil.db"
# The embedded broker signs clients in: mosquitto_sub below uses this viewer.
[[users]]
name = "ci"
role = "viewer"
password_hash = "$(printf ci-viewer | "$VIGIL" hash-password)"
[mllp]
listen = "127.0.0.1:$mllp"
[[beds]]
id = "bay-1"
[[beds.sources]]
kind = "mllp"
device = "hl7"
device_id = "00A0370098007A80"
TOML
start_vigil "$work/vigil.toml" "$work/vigil.log"
wait_port "$mllp"; wait_port "$mqtt"
mosquitto_sub -u ci -P ci-viewer -h 127.0.0.1 -p "$mqtt" -t 'vigil/v1/ci/hl7/bed/bay-1/vitals' -C 1 -W 15 >"$work/vitals.json" &
sub=$!
sleep 1

# The Mindray VS-900 message [1] from shared/data/hl7 (copied to tests/fixtures), MLLP-framed, CR between segments.
frame() { printf '\x0b'; tr '\n' '\r' <"$1"; printf '\x1c\r'; }
awk '/^## \[1\]/{f=1;next} /^## /{f=0} f && /^[A-Z][A-Z0-9][A-Z0-9]\|/' tests/fixtures/hl7/pcd01_samples.txt >"$work/mindray.hl7"
[ -s "$work/mindray.hl7" ] || fail "could not extract sample [1] from tests/fixtures/hl7/pcd01_samples.txt"
frame "$work/mindray.hl7" >"$work/mindray.mllp"
ack=$(mllp_send --file "$work/mindray.mllp" --port "$mllp" 127.0.0.1 | tr '\r' '\n')
echo "$ack"
echo "$ack" | grep -q '^MSA|AA|1914' || fail "expected MSA|AA|1914 for the Mindray message"

printf 'PID|||1\nOBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||97\n' >"$work/broken.hl7"
frame "$work/broken.hl7" >"$work/broken.mllp"
ack=$(mllp_send --file "$work/broken.mllp" --port "$mllp" 127.0.0.1 | tr '\r' '\n')
echo "$ack"
echo "$ack" | grep -qE '^MSA\|A[ER]\|' || fail "expected AE or AR for a message without MSH"

sed 's/00A0370098007A80/FFFFFFFFFFFFFFFF/g' "$work/mindray.hl7" >"$work/stranger.hl7"
frame "$work/stranger.hl7" >"$work/stranger.mllp"
ack=$(mllp_send --file "$work/stranger.mllp" --port "$mllp" 127.0.0.1 | tr '\r' '\n')
echo "$ack"
echo "$ack" | grep -q '^MSA|AR|' || fail "expected AR for an unknown device id"

wait "$sub" || fail "no vitals for bay-1 on MQTT"
python3 - "$work/vitals.json" <<'PY'
import json, sys
v = {x["parameter"]["name"]: x["value"] for x in json.load(open(sys.argv[1]))["values"]}
assert v.get("nibp_sys") == 147 and v.get("nibp_dia") == 90 and v.get("spo2") == 99, v
print("MQTT vitals for bay-1:", v)
PY
stop_vigil
echo "hl7 mllp_send suite: 4 passed, 0 failed"
