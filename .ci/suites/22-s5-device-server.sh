#!/usr/bin/env bash
# GE S/5 as a new user meets it, through the real binaries:
# 1. `vigil-sim --device s5 --scenario desaturation --output tcp-listen:PORT` is a serial device server; a
#    `kind = "tcp"` source with `device = "s5"` asks it for records and shows the chair's SpO2 and pulse on the
#    dashboard API and on MQTT. The device server goes away: monitor_disconnected is raised; it comes back: cleared,
#    and the monitor's own "SpO2 LOW" alarm record becomes a device alarm (source monitor) on the API and MQTT.
# 2. The same monitor on a socat pty pair (the daemon opens its end at the S/5 default 19200 8E1 RTS/CTS).
# 3. `vigil replay --format s5` over the simulator capture in tests/fixtures/captures runs the engine.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
SIM=${VIGIL_SIM:-$(dirname "$VIGIL")/vigil-sim}
[ -x "$SIM" ] || fail "vigil-sim not built at $SIM (cargo build --workspace)"
command -v socat >/dev/null || fail "socat is not installed"
command -v mosquitto_sub >/dev/null || fail "mosquitto_sub is not installed"
VIGIL_PID=; sim=; sim2=; socat=
work=$(mktemp -d); trap 'kill $VIGIL_PID $sim $sim2 $socat 2>/dev/null || true; rm -rf "$work"' EXIT
socat -d PTY,link="$work/monitor",raw,echo=0 PTY,link="$work/vigil-port",raw,echo=0 2>"$work/socat.log" &
socat=$!
for _ in $(seq 50); do [ -e "$work/vigil-port" ] && break; sleep 0.1; done
[ -e "$work/vigil-port" ] || fail "socat did not create the pty pair"
mqtt=$(free_port); dash=$(free_port); server=$(free_port)
cat >"$work/vigil.toml" <<TOML
[site]
name = "ci"
ward = "s5"
[mqtt]
port = $mqtt
client_id = "vigil-ci-s5"
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
kind = "tcp"
device = "s5"
address = "127.0.0.1:$server"
[[beds]]
id = "chair-2"
[[beds.sources]]
kind = "serial"
device = "s5"
path = "$work/vigil-port"
TOML
"$VIGIL" check-config "$work/vigil.toml" | tee "$work/check.txt"
grep -q "source tcp s5: device server at 127.0.0.1:$server" "$work/check.txt" || fail "check-config does not list the tcp source"
! grep -q "^warning:" "$work/check.txt" || fail "the S/5 defaults draw a warning"
start_vigil "$work/vigil.toml" "$work/vigil.log"
wait_port "$mqtt"; wait_port "$dash"
snapshot() { curl -sf "http://127.0.0.1:$dash/api/snapshot"; }
# bed_state BED: "<spo2> <pr> <link> <alarm conditions…>" from the dashboard API.
bed_state() {
  snapshot | python3 -c '
import json, sys
bed = next(b for b in json.load(sys.stdin)["beds"] if b["id"] == sys.argv[1])
v = {x["parameter"]: x["value"] for x in (bed["vitals"] or {}).get("values", [])}
link = next(iter(bed["devices"].values()))["link"] if bed["devices"] else "none"
alarms = [a["condition"] for a in bed["alarms"]["alarms"] if a["state"] != "cleared"]
alarms += ["monitor:" + a["evidence"]["text"].replace(" ", "_") for a in bed["alarms"]["alarms"]
           if a.get("source") == "monitor" and a["state"] != "cleared"]
print(v.get("spo2"), v.get("pr"), link, *alarms)' "$1"
}
wait_for() { # BED PYTHON-CONDITION-ON-s SECONDS WHAT
  local deadline=$(( $(date +%s) + $3 )) s=
  while [ "$(date +%s)" -lt "$deadline" ]; do
    s=$(bed_state "$1" || true)
    if python3 -c "import sys; s = sys.argv[1].split(); sys.exit(0 if ($2) else 1)" "$s" 2>/dev/null; then
      echo "$1: $s"; return 0
    fi
    sleep 0.5
  done
  cat "$work/vigil.log" | tail -20; fail "$4 (last state: $s)"
}

# 1. The device server.
mosquitto_sub -u ci -P ci-viewer -h 127.0.0.1 -p "$mqtt" -t 'vigil/v1/ci/s5/bed/chair-1/vitals' -C 1 -W 30 >"$work/vitals.json" &
sub=$!
"$SIM" --scenario desaturation --device s5 --output "tcp-listen:127.0.0.1:$server" --speed 5 --seed 7 2>"$work/sim.err" &
sim=$!
wait_for chair-1 's[0] != "None" and s[1] != "None" and s[2] == "connected" and "monitor_disconnected" not in s[3:]' 30 "no SpO2 and pulse for chair-1 from the device server"
wait "$sub" || fail "no vitals for chair-1 on MQTT"
python3 - "$work/vitals.json" <<'PY'
import json, sys
v = {x["parameter"]["name"]: x["value"] for x in json.load(open(sys.argv[1]))["values"]}
assert 70 <= v["spo2"] <= 100 and 30 <= v["pr"] <= 200, v
print("chair-1 on MQTT:", v)
PY
grep -q "host 127.0.0.1:.* connected" "$work/sim.err" || fail "the simulator saw no host"
kill "$sim"; wait "$sim" 2>/dev/null || true; sim=
wait_for chair-1 '"monitor_disconnected" in s[3:] and s[2] == "disconnected"' 20 "the device server went away but no monitor_disconnected"
"$SIM" --scenario desaturation --device s5 --output "tcp-listen:127.0.0.1:$server" --speed 5 --seed 7 2>"$work/sim2.err" &
sim2=$!
mosquitto_sub -u ci -P ci-viewer -h 127.0.0.1 -p "$mqtt" -t 'vigil/v1/ci/s5/bed/chair-1/alarm' -W 60 >"$work/alarms.txt" &
alarm_sub=$!
wait_for chair-1 '"monitor_disconnected" not in s[3:] and s[2] == "connected"' 30 "the device server came back but monitor_disconnected stayed"
# The simulated monitor desaturates from 60 s (12 s at --speed 5) and shows its own SpO2 LOW below 90 %.
wait_for chair-1 '"monitor:SpO2_LOW" in s[3:]' 45 "the monitor's SpO2 LOW alarm record did not reach the dashboard API"
for _ in $(seq 20); do grep -q '"source":"monitor"' "$work/alarms.txt" && break; sleep 0.5; done
kill "$alarm_sub" 2>/dev/null || true
python3 - "$work/alarms.txt" <<'PY'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
mine = [e for e in events if e.get("source") == "monitor" and e["evidence"].get("text") == "SpO2 LOW"]
assert mine and mine[0]["kind"] == "device" and mine[0]["parameter"]["name"] == "spo2", events
print("the monitor's own alarm on MQTT:", mine[0]["message"], mine[0]["priority"])
PY

# 2. The same monitor on a pty: the simulator only talks once the daemon has asked.
"$SIM" --scenario desaturation --device s5 --output "serial:$work/monitor" --speed 5 --seed 7 2>"$work/sim-serial.err" &
sim=$!
wait_for chair-2 's[0] != "None" and s[1] != "None" and "monitor_disconnected" not in s[3:]' 40 "no SpO2 and pulse for chair-2 over the pty (or its silence alarm stayed)"
stop_vigil

# 3. Replay of the capture.
"$VIGIL" replay --format s5 --summary-only tests/fixtures/captures/s5_desaturation.bin >"$work/replay.json"
python3 - "$work/replay.json" <<'PY'
import json, sys
s = json.loads(open(sys.argv[1]).read().splitlines()[-1])["summary"]
assert s["by_condition"].get("spo2_low", 0) >= 1 and s["rows"] > 2000, s
print("replay of the S/5 capture:", s["by_condition"])
PY
echo "s5 device server suite: 5 passed, 0 failed"
