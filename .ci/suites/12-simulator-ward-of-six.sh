#!/usr/bin/env bash
# The simulator as a separate process, as a new user runs it: `vigil-sim --scenario ward-of-six --device hl7
# --output mllp:HOST:PORT` feeds a running daemon six chairs, each matched by its MSH-3 device id.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
SIM=${VIGIL_SIM:-$(dirname "$VIGIL")/vigil-sim}
VIGIL_PID=; sim=
work=$(mktemp -d); trap 'kill $VIGIL_PID $sim 2>/dev/null || true; rm -rf "$work"' EXIT
mqtt=$(free_port); mllp=$(free_port); dash=$(free_port)
sed -e "s/^port = 1883/port = $mqtt/" -e "s/127.0.0.1:8080/127.0.0.1:$dash/" -e "s/127.0.0.1:2575/127.0.0.1:$mllp/" \
    -e "s|^path = \"vigil.db\"|path = \"$work/vigil.db\"|" config/examples/ward-of-six-mllp.toml >"$work/vigil.toml"
# The embedded broker signs clients in: mosquitto_sub below uses this viewer.
printf '\n[[users]]\nname = "ci"\nrole = "viewer"\npassword_hash = "%s"\n' "$(printf ci-viewer | "$VIGIL" hash-password)" \
    >>"$work/vigil.toml"
start_vigil "$work/vigil.toml" "$work/vigil.log"
wait_port "$mllp"; wait_port "$mqtt"
mosquitto_sub -u ci -P ci-viewer -h 127.0.0.1 -p "$mqtt" -t 'vigil/v1/demo-clinic/ketamine-suite/bed/+/vitals' -v -W 25 >"$work/vitals.txt" &
subscriber=$!
sleep 1
"$SIM" --scenario ward-of-six --device hl7 --output "mllp:127.0.0.1:$mllp" --speed 5 >"$work/sim.out" 2>"$work/sim.err" &
sim=$!
wait "$subscriber" || true
kill "$sim" 2>/dev/null || true
for bed in 1 2 3 4 5 6; do
  n=$(grep -c "/bed/chair-$bed/vitals" "$work/vitals.txt" || true)
  [ "$n" -gt 0 ] || { cat "$work/sim.err"; fail "no vitals for chair-$bed from vigil-sim over MLLP"; }
  echo "chair-$bed: $n vitals messages"
done
stop_vigil
echo "simulator ward-of-six suite: 6 passed, 0 failed"
