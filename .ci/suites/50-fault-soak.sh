#!/usr/bin/env bash
# Fault soak: the real daemon with simulated chairs at speed, a real Mosquitto with persistence and a durable
# QoS 1 subscriber (mosquitto_sub, clean session off), while the broker is restarted, paused (SIGSTOP) and the
# daemon is killed with SIGKILL and restarted on the same store. At the end the daemon drains its outbox (restarted
# once more without sources, so nothing new is produced), and every alarm event in the store must have reached the
# subscriber exactly once after de-duplication by (alarm_id, seq), with no bed_seq gap per bed. It also reports
# delivery latency (the subscriber's receive time against the event's time): outside outages, and, for events
# that met an outage, from the end of that outage (broker restart, pause or daemon restart) to their arrival.
#
# CI setting (default, about 2 minutes): 20 beds at speed 20, 10 broker restarts, 5 daemon SIGKILLs, 1 pause.
# Manual long setting: SOAK_LONG=1 (500 beds, 100 broker restarts, 50 SIGKILLs, 5 pauses), or set SOAK_BEDS,
# SOAK_SPEED, SOAK_RESTARTS, SOAK_KILLS, SOAK_PAUSES yourself.
# Broker restarts use SIGTERM: Mosquitto then saves the queued messages of the durable subscriber. (A SIGKILLed
# broker may lose messages it already acknowledged to Vigil; that is the broker's durability, not Vigil's.)
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
if [ "${SOAK_LONG:-0}" = 1 ]; then
  : "${SOAK_BEDS:=500}" "${SOAK_RESTARTS:=100}" "${SOAK_KILLS:=50}" "${SOAK_PAUSES:=5}"
fi
BEDS=${SOAK_BEDS:-20}; SPEED=${SOAK_SPEED:-20}; RESTARTS=${SOAK_RESTARTS:-10}; KILLS=${SOAK_KILLS:-5}
PAUSES=${SOAK_PAUSES:-1}
command -v mosquitto >/dev/null || command -v /usr/sbin/mosquitto >/dev/null || fail "mosquitto is not installed"
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
command -v mosquitto_sub >/dev/null || fail "mosquitto_sub is not installed (mosquitto-clients)"
command -v sqlite3 >/dev/null || fail "sqlite3 is not installed"

VIGIL_PID=; broker=; sub=
work=$(mktemp -d); chmod 777 "$work"
trap 'kill -9 $VIGIL_PID $sub 2>/dev/null || true; kill -CONT $broker 2>/dev/null || true; kill $broker 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
mqtt=$(free_port); dash=$(free_port)

cat >"$work/mosquitto.conf" <<EOF
listener $mqtt 127.0.0.1
allow_anonymous true
persistence true
persistence_location $work/
autosave_interval 1
max_queued_messages 1000000
max_inflight_messages 1000
EOF
start_broker() { "$MOSQUITTO" -c "$work/mosquitto.conf" >>"$work/mosquitto.log" 2>&1 & broker=$!; wait_port "$mqtt"; }
stop_broker() { kill -TERM "$broker"; wait "$broker" 2>/dev/null || true; }
# Outage windows (start end kind), for the latency report.
now() { date +%s.%N; }
outage() { echo "$1 $(now) $2" >>"$work/outages.txt"; }

write_config() { # FILE WITH_SOURCES
  {
    printf '[site]\nname = "soak"\nward = "w"\n[mqtt]\nmode = "external"\nhost = "127.0.0.1"\nport = %s\n' "$mqtt"
    printf 'client_id = "vigil-soak"\n[dashboard]\nlisten = "127.0.0.1:%s"\n[store]\npath = "%s/vigil.db"\n' \
      "$dash" "$work"
    for i in $(seq 1 "$BEDS"); do
      printf '[[beds]]\nid = "chair-%s"\n' "$i"
      if [ "$2" = 1 ]; then
        printf '[[beds.sources]]\nkind = "simulated"\ndevice = "masimo"\nscenario = "desaturation"\nseed = %s\nspeed = %s\n' \
          "$i" "$SPEED"
      fi
    done
  } >"$1"
}
write_config "$work/vigil.toml" 1
write_config "$work/drain.toml" 0

start_broker
# Each line: the subscriber's receive time (Unix seconds with nanoseconds), a space, the payload.
mosquitto_sub -h 127.0.0.1 -p "$mqtt" -i soak-durable -c -q 1 -t 'vigil/v1/soak/w/bed/+/alarm' -F '%U %p' \
  >"$work/received.jsonl" 2>"$work/sub.err" &
sub=$!
sleep 1
start_vigil "$work/vigil.toml" "$work/vigil.log"
wait_port "$dash" 30

total=$RESTARTS
[ "$KILLS" -gt "$total" ] && total=$KILLS
kill_every=$(( total / (KILLS > 0 ? KILLS : 1) )); [ "$kill_every" -lt 1 ] && kill_every=1
pause_every=$(( total / (PAUSES > 0 ? PAUSES : 1) )); [ "$pause_every" -lt 1 ] && pause_every=1
restarts=0; kills=0; pauses=0
for step in $(seq 1 "$total"); do
  sleep "$(python3 -c 'import random; print(round(random.uniform(1.5, 3.5), 2))')"
  if [ "$restarts" -lt "$RESTARTS" ]; then
    t0=$(now); stop_broker; sleep 0.5; start_broker; outage "$t0" broker-restart; restarts=$((restarts + 1))
  fi
  if [ "$kills" -lt "$KILLS" ] && [ $((step % kill_every)) -eq 0 ]; then
    t0=$(now); kill -9 "$VIGIL_PID"; wait "$VIGIL_PID" 2>/dev/null || true
    start_vigil "$work/vigil.toml" "$work/vigil.log.$step"; wait_port "$dash" 30; outage "$t0" daemon-kill
    kills=$((kills + 1))
  fi
  if [ "$pauses" -lt "$PAUSES" ] && [ $((step % pause_every)) -eq 0 ]; then
    t0=$(now); kill -STOP "$broker"; sleep 3; kill -CONT "$broker"; outage "$t0" broker-pause; pauses=$((pauses + 1))
  fi
done
echo "faults: $restarts broker restarts (SIGTERM), $kills daemon SIGKILLs, $pauses broker pauses (SIGSTOP 3 s)"

# Drain: the same store without sources, so no new events; wait until the outbox is empty.
t0=$(now); kill -9 "$VIGIL_PID"; wait "$VIGIL_PID" 2>/dev/null || true
start_vigil "$work/drain.toml" "$work/vigil.drain.log"; wait_port "$dash" 30; outage "$t0" drain-restart
pending() { sqlite3 "$work/vigil.db" \
  "SELECT COUNT(*) FROM outbox WHERE delivered_ms IS NULL AND quarantined_ms IS NULL AND json LIKE '{\"type\":\"alarm\"%'"; }
deadline=$(( $(date +%s) + 90 ))
until [ "$(pending)" = 0 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "$(pending) alarm events still pending after 90 s"
  sleep 0.5
done
sleep 3
stop_vigil
kill "$sub" 2>/dev/null || true; wait "$sub" 2>/dev/null || true
sqlite3 -separator ' ' "$work/vigil.db" "SELECT bed, bed_seq, alarm_id, seq FROM alarm_events" >"$work/stored.txt"

touch "$work/outages.txt"
python3 - "$work/stored.txt" "$work/received.jsonl" "$work/outages.txt" <<'EOF'
import collections, datetime, json, sys
stored = [l.split() for l in open(sys.argv[1]) if l.strip()]
stored_keys = {(a, int(s)) for _, _, a, s in stored}
received, bad, first_seen = [], 0, {}
for line in open(sys.argv[2]):
    try:
        at, payload = line.split(" ", 1)
        m = json.loads(payload)
        received.append(m)
        first_seen.setdefault((m["alarm_id"], m["seq"]), (float(at), m))
    except (ValueError, KeyError):
        bad += 1
outages = [(float(a), float(b)) for a, b, _ in (l.split() for l in open(sys.argv[3]) if l.strip())]
quiet, recovery = [], []  # seconds: event -> subscriber outside outages; outage end -> subscriber
for at, m in first_seen.values():
    t = datetime.datetime.fromisoformat(m["time"].replace("Z", "+00:00")).timestamp()
    met = [end for start, end in outages if start <= at and end >= t]
    (recovery if met else quiet).append(at - max(met) if met else at - t)
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round((len(v) - 1) * p)))] if v else float("nan")
print(f"latency outside outages: {len(quiet)} events, p50 {pct(quiet, .5) * 1000:.0f} ms, "
      f"p99 {pct(quiet, .99) * 1000:.0f} ms, max {pct(quiet, 1) * 1000:.0f} ms")
print(f"after an outage ends: {len(recovery)} events, p50 {pct(recovery, .5) * 1000:.0f} ms, "
      f"p99 {pct(recovery, .99) * 1000:.0f} ms, max {pct(recovery, 1) * 1000:.0f} ms")
# A generous bound for a shared CI machine (the target, 2 s, is measured in docs/performance.md): a reconnect
# backoff of tens of seconds, as in the first release, fails here.
if recovery and pct(recovery, 1) > 10:
    sys.exit(f"FAIL: an alarm event arrived {pct(recovery, 1):.1f} s after its outage ended")
keys = [(m["alarm_id"], m["seq"]) for m in received]
unique = set(keys)
dups = len(keys) - len(unique)
lost = stored_keys - unique
per_bed = collections.defaultdict(set)
for m in received:
    per_bed[m["bed"]].add(m["bed_seq"])
gaps = {b: sorted(set(range(1, max(s) + 1)) - s)[:5] for b, s in per_bed.items() if set(range(1, max(s) + 1)) - s}
print(f"stored {len(stored)} alarm events in {len({b for b, *_ in stored})} beds; received {len(keys)} messages, "
      f"{dups} duplicates removed by (alarm_id, seq), {len(lost)} lost, {len(gaps)} beds with a bed_seq gap, "
      f"{bad} unreadable lines")
if not stored:
    sys.exit("FAIL: no alarm events were stored: the soak proved nothing")
if lost:
    sys.exit(f"FAIL: {len(lost)} stored alarm events never arrived, e.g. {sorted(lost)[:5]}")
if gaps:
    sys.exit(f"FAIL: bed_seq gaps: {gaps}")
if unique - stored_keys:
    sys.exit(f"FAIL: received events the store does not have: {sorted(unique - stored_keys)[:5]}")
EOF
echo "fault soak: zero lost, zero undetected duplicates"
