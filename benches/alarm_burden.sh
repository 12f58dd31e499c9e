#!/usr/bin/env bash
# Alarm burden before and after: replays the same recordings with two `vigil` binaries and prints alarms per
# hour for each. Recordings: the MIMIC-II record s00001 (32 h ICU, as tests/replay_mimic.rs converts it), the
# replay fixture nibp_climb_session.csv, and HL7 captures of the simulator's scenarios (seed 7).
# Usage: benches/alarm_burden.sh OLD_VIGIL NEW_VIGIL VIGIL_SIM [OLD_CONFIG_DIR]
# (OLD_CONFIG_DIR: the old checkout's config/, whose profiles the old binary can read.)
set -euo pipefail
old=$1 new=$2 sim=$3 old_config=$(realpath "${4:-config}")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$(dirname "$0")/.."
python3 - "$dir/mimic.csv" <<'PY'
import sys
src = open('tests/fixtures/mimic/s00001_numerics_1per_min.csv').read().splitlines()
out = ["timestamp,bed,parameter,value"]
cols = [(1, "hr"), (5, "pr"), (6, "rr"), (7, "spo2"), (8, "nibp_sys"), (9, "nibp_dia"), (10, "nibp_mean")]
for line in src[1:]:
    f = line.split(',')
    for i, name in cols:
        if name.startswith("nibp") and f[i] == "":
            continue
        out.append(f"{int(f[0]) * 60},s00001,{name},{f[i]}")
open(sys.argv[1], 'w').write("\n".join(out) + "\n")
PY
cp tests/fixtures/replay/nibp_climb_session.csv "$dir/"
for s in calm-session desaturation hypertensive-surge probe-off-and-artefacts monitor-disconnect; do
  "$sim" --scenario "$s" --device hl7 --output "file:$dir/$s.hl7" --speed max --seed 7 >/dev/null 2>&1
done
printf '%-28s %8s %8s %10s %10s\n' recording hours alarms_old alarms_new per_h_new
for f in "$dir"/mimic.csv "$dir"/nibp_climb_session.csv "$dir"/*.hl7; do
  o=$("$old" replay --summary-only --profile-dir "$old_config" "$f" | python3 -c 'import json,sys; s=json.loads(sys.stdin.readline())["summary"]; print(s["alarms"], s["alarms_per_hour"], s["duration_s"])')
  n=$("$new" replay --summary-only "$f" | python3 -c 'import json,sys; s=json.loads(sys.stdin.readline())["summary"]; print(s["alarms"], s["alarms_per_hour"], s["duration_s"])')
  read -r ao _ d <<<"$o"; read -r an pn _ <<<"$n"
  printf '%-28s %8.2f %8s %10s %10s\n' "$(basename "$f")" "$(python3 -c "print($d/3600)")" "$ao" "$an" "$pn"
done
