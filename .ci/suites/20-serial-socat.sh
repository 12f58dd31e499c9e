#!/usr/bin/env bash
# A socat pseudo-terminal pair stands in for a serial cable: real Masimo lines (tests/fixtures/masimo/) written into one
# end reach MQTT as the bed's SpO2 and pulse; 200 kB of random bytes on the line leave the daemon running and the
# simulated neighbour bed unaffected; valid lines after the flood are decoded again.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
work=$(mktemp -d); VIGIL_PID=; trap 'kill $VIGIL_PID $socat 2>/dev/null || true; rm -rf "$work"' EXIT
socat -d PTY,link="$work/monitor",raw,echo=0 PTY,link="$work/vigil-port",raw,echo=0 2>"$work/socat.log" &
socat=$!
for _ in $(seq 50); do [ -e "$work/vigil-port" ] && break; sleep 0.1; done
[ -e "$work/vigil-port" ] || fail "socat did not create the pty pair"
mqtt=$(free_port); dash=$(free_port)
cat >"$work/vigil.toml" <<TOML
[site]
name = "ci"
ward = "serial"
[mqtt]
port = $mqtt
client_id = "vigil-ci-serial"
[dashboard]
listen = "127.0.0.1:$dash"
[store]
path = "$work/vigil.db"
# The embedded broker signs clients in: mosquitto_sub below uses this viewer.
[[users]]
name = "ci"
role = "viewer"
password_hash = "$(printf ci-viewer | "$VIGIL" hash-password)"
[[beds]]
id = "chair-1"
[[beds.sources]]
kind = "serial"
device = "masimo"
path = "$work/vigil-port"
baud = 9600
[[beds]]
id = "chair-2"
[[beds.sources]]
kind = "simulated"
device = "nonin"
scenario = "calm-session"
TOML
start_vigil "$work/vigil.toml" "$work/vigil.log"
wait_port "$mqtt"
sleep 1
exec 5>"$work/monitor"
line() { printf '%s\r\n' "$1" >&5; }
mosquitto_sub -u ci -P ci-viewer -h 127.0.0.1 -p "$mqtt" -t 'vigil/v1/ci/serial/bed/chair-1/vitals' -C 1 -W 15 >"$work/before.json" &
sub=$!
for _ in 1 2 3; do
  grep -m1 '^02/22/16 22:47:45' tests/fixtures/masimo/rad_serial_samples.txt | while read -r l; do line "$l"; done
  sleep 1
done
wait "$sub" || fail "no vitals for chair-1 from the pty"
python3 - "$work/before.json" <<'PY'
import json, sys
v = {x["parameter"]["name"]: x["value"] for x in json.load(open(sys.argv[1]))["values"]}
assert v.get("spo2") == 98 and v.get("pr") == 97, v
print("chair-1 from the Masimo line:", v)
PY

mosquitto_sub -u ci -P ci-viewer -h 127.0.0.1 -p "$mqtt" -t 'vigil/v1/ci/serial/bed/chair-2/vitals' -C 5 -W 20 >"$work/neighbour.json" &
neighbour=$!
head -c 200000 /dev/urandom >&5
sleep 2
kill -0 "$VIGIL_PID" || fail "vigil died after the garbage flood"
wait "$neighbour" || fail "chair-2 stopped publishing during chair-1's garbage flood"
echo "chair-2 kept publishing: $(wc -l <"$work/neighbour.json") vitals messages during the flood"

mosquitto_sub -u ci -P ci-viewer -h 127.0.0.1 -p "$mqtt" -t 'vigil/v1/ci/serial/bed/chair-1/vitals' -C 1 -W 15 >"$work/after.json" &
sub=$!
for _ in 1 2 3 4; do line "02/22/16 22:47:49 SN=0000056661 SPO2=095% BPM=088 PI=02.41% SPCO=--.-% SPMET=--.-% DESAT=-- PIDELTA=+-- ALARM=0000 EXC=000800"; sleep 1; done
wait "$sub" || fail "chair-1 did not recover after the flood"
grep -q '"value":95' "$work/after.json" || fail "post-flood SpO2 95 not seen: $(cat "$work/after.json")"
mosquitto_sub -u ci -P ci-viewer -h 127.0.0.1 -p "$mqtt" -t 'vigil/v1/ci/serial/bed/chair-1/device' -C 1 -W 5 >"$work/device.json" || true
echo "chair-1 device status: $(cat "$work/device.json")"
grep -q '"frames_bad":[1-9]' "$work/device.json" || fail "the flood's bad frames are not counted in the device status"
exec 5>&-
stop_vigil
echo "serial socat suite: 4 passed, 0 failed"
