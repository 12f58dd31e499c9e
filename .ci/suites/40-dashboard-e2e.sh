#!/usr/bin/env bash
# The ward dashboard in headless Debian chromium (playwright-core, axe-core) against the real daemon: six chairs
# from the simulator (chair-6 has an unplugged serial monitor, so it is free for the session-control test), a
# nurse who must sign in, the scripted desaturation on chair-1, an admin who runs the self-test from the ward. The
# same acknowledgement must appear on MQTT, and the self-test's test alarm with test: true.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
VIGIL_PID=; sub=
work=$(mktemp -d); trap 'kill $VIGIL_PID $sub 2>/dev/null || true; rm -rf "$work"' EXIT
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
mqtt=$(free_port); dash=$(free_port)
hash=$(printf 'vigil-nurse' | "$VIGIL" hash-password)
sed -e "s/^listen = \"127.0.0.1:8080\"/listen = \"127.0.0.1:$dash\"/" \
    -e 's/^demo_actions_without_sign_in = true/demo_actions_without_sign_in = false/' \
    -e "s/^port = 1883/port = $mqtt/" -e "s|^path = \"vigil.db\"|path = \"$work/vigil.db\"|" \
    config/vigil.toml | python3 -c '
import sys
text = sys.stdin.read()
head, _, chair6 = text.rpartition("[[beds]]\nid = \"chair-6\"")
print(head + "[[beds]]\nid = \"chair-6\"\nlabel = \"Chair 6\"\n[[beds.sources]]\nkind = \"serial\"\ndevice = \"masimo\"\npath = \"/dev/vigil-ci-unplugged\"")
' >"$work/vigil.toml"
printf '\n[[users]]\nname = "nina"\nrole = "nurse"\npassword_hash = "%s"\n' "$hash" >>"$work/vigil.toml"
admin_hash=$(printf 'vigil-admin' | "$VIGIL" hash-password)
printf '\n[[users]]\nname = "ada"\nrole = "admin"\npassword_hash = "%s"\n' "$admin_hash" >>"$work/vigil.toml"
"$VIGIL" check-config "$work/vigil.toml"
start_vigil "$work/vigil.toml" "$work/vigil.log"
wait_port "$dash"; wait_port "$mqtt"
mosquitto_sub -u nina -P vigil-nurse -h 127.0.0.1 -p "$mqtt" -t "vigil/v1/demo-clinic/ketamine-suite/bed/chair-1/alarm" >"$work/alarms.jsonl" &
sub=$!
mkdir -p tests/e2e/screenshots
(cd tests/e2e && VIGIL_URL="http://127.0.0.1:$dash" VIGIL_USER=nina VIGIL_PASSWORD=vigil-nurse \
   VIGIL_ADMIN=ada VIGIL_ADMIN_PASSWORD=vigil-admin \
   VIGIL_ALARM_BED=chair-1 VIGIL_IDLE_BED=chair-6 VIGIL_ALARM_TIMEOUT_MS=240000 npm test)
sleep 1
python3 - "$work/alarms.jsonl" <<'PY'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
acks = [e for e in events if e.get("by") == "nina" and e["state"] in ("acknowledged", "cleared")]
assert acks, f"no acknowledgement by nina on MQTT among {len(events)} chair-1 alarm events"
seqs = [e["bed_seq"] for e in events]
assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"bed_seq not contiguous: {seqs}"
tests = [e for e in events if e.get("test") is True]
assert any(e["phase"] == "start" and e["condition"] == "self_test" for e in tests), "no self-test alarm on MQTT"
assert all(e["condition"] == "self_test" for e in tests), "only the self-test's alarm is marked test"
print(f"MQTT: {len(events)} chair-1 alarm events, bed_seq contiguous, acknowledged by nina: {acks[0]['alarm_id']}, "
      f"{len(tests)} self-test events marked test")
PY
stop_vigil
echo "dashboard e2e suite: MQTT acknowledgement and self-test checks 2 passed, 0 failed"
