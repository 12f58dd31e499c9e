#!/usr/bin/env bash
# Philips IntelliVue as a new user meets it, through the real binaries:
# 1. `vigil-sim --device intellivue --scenario desaturation --output pty` plays the monitor on a pseudo-terminal;
#    a `kind = "serial"` source with `device = "intellivue"` associates, polls and shows the chair's SpO2 and
#    pulse and the monitor's own "SpO2 LOW" (source monitor) on the dashboard API and on MQTT.
#    Chair-1's vitals topic carries SpO2 and pulse too.
# 2. The same monitor's LAN interface (`--output udp:PORT`) for a `kind = "udp"` source.
# 3. The monitor's RS-232 port behind a serial device server (`--output tcp-listen:PORT`) for a `kind = "tcp"`
#    source: SpO2, pulse and the monitor's own SpO2 LOW on the dashboard API.
# 4. `vigil decode --format intellivue` on the capture in tests/fixtures/intellivue prints numerics and alarms.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
SIM=${VIGIL_SIM:-$(dirname "$VIGIL")/vigil-sim}
[ -x "$SIM" ] || fail "vigil-sim not built at $SIM (cargo build --workspace)"
command -v mosquitto_sub >/dev/null || fail "mosquitto_sub is not installed"
VIGIL_PID=; sim=; sim2=; sim3=
work=$(mktemp -d); trap 'kill $VIGIL_PID $sim $sim2 $sim3 2>/dev/null || true; rm -rf "$work"' EXIT
"$SIM" --scenario desaturation --device intellivue --output pty --speed 5 --seed 7 >"$work/pty.txt" 2>"$work/sim.err" &
sim=$!
for _ in $(seq 50); do [ -s "$work/pty.txt" ] && break; sleep 0.1; done
pty=$(head -n1 "$work/pty.txt")
[ -e "$pty" ] || fail "vigil-sim printed no pty path"
mqtt=$(free_port); dash=$(free_port); udp=$(free_port); server=$(free_port)
"$SIM" --scenario desaturation --device intellivue --output "udp:$udp" --speed 5 --seed 8 2>"$work/sim2.err" &
sim2=$!
"$SIM" --scenario desaturation --device intellivue --output "tcp-listen:127.0.0.1:$server" --speed 5 --seed 9 2>"$work/sim3.err" &
sim3=$!
cat >"$work/vigil.toml" <<TOML
[site]
name = "ci"
ward = "iv"
[mqtt]
port = $mqtt
client_id = "vigil-ci-iv"
[dashboard]
listen = "127.0.0.1:$dash"
read_only_without_sign_in = true
[store]
path = "$work/vigil.db"
[[users]]
name = "ci"
role = "viewer"
password_hash = "$(printf ci-viewer | "$VIGIL" hash-password)"
[[beds]]
id = "chair-1"
[[beds.sources]]
kind = "serial"
device = "intellivue"
path = "$pty"
[[beds]]
id = "chair-2"
[[beds.sources]]
kind = "udp"
device = "intellivue"
address = "127.0.0.1:$udp"
[[beds]]
id = "chair-3"
[[beds.sources]]
kind = "tcp"
device = "intellivue"
address = "127.0.0.1:$server"
TOML
"$VIGIL" check-config "$work/vigil.toml" | tee "$work/check.txt"
grep -q "source serial intellivue: $pty at 115200 baud" "$work/check.txt" || fail "check-config does not list the IntelliVue at 115200"
grep -q "source udp intellivue: IntelliVue LAN at 127.0.0.1:$udp" "$work/check.txt" || fail "check-config does not list the udp source"
start_vigil "$work/vigil.toml" "$work/vigil.log"
wait_port "$mqtt"; wait_port "$dash"
mosquitto_sub -u ci -P ci-viewer -h 127.0.0.1 -p "$mqtt" -t 'vigil/v1/ci/iv/bed/chair-1/alarm' -W 90 >"$work/alarms.txt" &
alarm_sub=$!
mosquitto_sub -u ci -P ci-viewer -h 127.0.0.1 -p "$mqtt" -t 'vigil/v1/ci/iv/bed/chair-1/vitals' -W 60 >"$work/vitals.txt" &
vitals_sub=$!
# bed_state BED: "<spo2> <pr> <monitor alarms…>" from the dashboard API.
bed_state() {
  curl -sf "http://127.0.0.1:$dash/api/snapshot" | python3 -c '
import json, sys
bed = next(b for b in json.load(sys.stdin)["beds"] if b["id"] == sys.argv[1])
v = {x["parameter"]: x["value"] for x in (bed["vitals"] or {}).get("values", [])}
alarms = ["monitor:" + a["evidence"]["text"].replace(" ", "_") for a in bed["alarms"]["alarms"]
          if a.get("source") == "monitor" and a["state"] != "cleared"]
print(v.get("spo2"), v.get("pr"), *alarms)' "$1"
}
LOG="$work/vigil.log"
# 1. The pty: SpO2 and pulse, then (desaturation from 60 s, 12 s at --speed 5) the monitor's own SpO2 LOW.
wait_for chair-1 's[0] != "None" and s[1] != "None"' 30 "no SpO2 and pulse for chair-1 from the IntelliVue on the pty"
wait_for chair-1 '"monitor:SpO2_LOW" in s[2:]' 60 "the monitor's SpO2 LOW did not reach the dashboard API"
for _ in $(seq 20); do grep -q '"source":"monitor"' "$work/alarms.txt" && break; sleep 0.5; done
kill "$alarm_sub" 2>/dev/null || true
python3 - "$work/alarms.txt" <<'PY'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
mine = [e for e in events if e.get("source") == "monitor" and e["evidence"].get("text") == "SpO2 LOW"]
assert mine and mine[0]["kind"] == "device" and mine[0]["parameter"]["name"] == "spo2", events
print("the monitor's own alarm on MQTT:", mine[0]["message"], mine[0]["priority"])
PY
kill "$vitals_sub" 2>/dev/null || true
python3 - "$work/vitals.txt" <<'PY'
import json, sys
messages = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
values = [{x["parameter"]["name"]: x["value"] for x in m["values"]} for m in messages]
both = [v for v in values if v.get("spo2") is not None and v.get("pr") is not None]
assert both, messages[-3:]
v = both[-1]
assert 50 <= v["spo2"] <= 100 and 30 <= v["pr"] <= 200, v
print("chair-1 vitals on MQTT:", len(messages), "messages, last with both:", {"spo2": v["spo2"], "pr": v["pr"]})
PY
# 2. The LAN interface.
wait_for chair-2 's[0] != "None" and s[1] != "None"' 30 "no SpO2 and pulse for chair-2 over udp"
# 3. The device server.
wait_for chair-3 's[0] != "None" and s[1] != "None"' 30 "no SpO2 and pulse for chair-3 from the device server"
wait_for chair-3 '"monitor:SpO2_LOW" in s[2:]' 60 "the monitor's SpO2 LOW did not reach the API through the device server"
grep -q "host 127.0.0.1:.* connected" "$work/sim3.err" || fail "the simulator's device server saw no host"
stop_vigil
# 4. The capture.
"$VIGIL" decode --format intellivue tests/fixtures/intellivue/desaturation-150s.bin >"$work/decode.jsonl"
python3 - "$work/decode.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
spo2 = [l["value"] for l in lines if l["kind"] == "reading" and l["parameter"] == "spo2"]
alarms = [l["text"] for l in lines if l["kind"] == "device_alarm"]
summary = lines[-1]
assert len(spo2) >= 140 and min(spo2) < 85 and "SpO2 LOW" in alarms and summary["frames_bad"] == 0, summary
print("vigil decode:", len(spo2), "SpO2 readings,", len(alarms), "device alarm entries,", summary["frames_ok"], "frames")
PY
echo "intellivue suite: 8 passed, 0 failed"
