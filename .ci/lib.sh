# Shared helpers for the CI suites: free ports, starting and stopping the real daemon, waiting for ports.
# shellcheck shell=bash

VIGIL=${VIGIL:-target/debug/vigil}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # port [seconds]
  local port=$1 deadline=$(( $(date +%s) + ${2:-20} ))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "port $port did not open" >&2; return 1; fi
    sleep 0.2
  done
}

# start_vigil CONFIG LOG: starts the daemon in the background and sets VIGIL_PID.
start_vigil() {
  "$VIGIL" run --config "$1" >"$2" 2>&1 &
  VIGIL_PID=$!
}

# stop_vigil: SIGTERM, then checks it exits 0 within 5 s.
stop_vigil() {
  kill -TERM "$VIGIL_PID"
  local waited=0
  while kill -0 "$VIGIL_PID" 2>/dev/null; do
    sleep 0.1; waited=$((waited + 1))
    if [ "$waited" -gt 50 ]; then echo "FAIL: vigil did not stop within 5 s" >&2; kill -9 "$VIGIL_PID"; return 1; fi
  done
  wait "$VIGIL_PID"; local code=$?
  if [ "$code" -ne 0 ]; then echo "FAIL: vigil exited $code after SIGTERM" >&2; return 1; fi
  echo "vigil stopped cleanly (exit 0)"
}

fail() { echo "FAIL: $*" >&2; exit 1; }

# wait_for BED PYTHON-CONDITION SECONDS WHAT: polls the suite's own `bed_state BED` (a line of words, seen by the
# condition as the list `s`) until the condition holds, or fails with WHAT and the last state. Set LOG to a file
# whose tail is shown on failure.
wait_for() {
  local deadline=$(( $(date +%s) + $3 )) s=
  while [ "$(date +%s)" -lt "$deadline" ]; do
    s=$(bed_state "$1" || true)
    if python3 -c "import sys; s = sys.argv[1].split(); sys.exit(0 if ($2) else 1)" "$s" 2>/dev/null; then
      echo "$1: $s"; return 0
    fi
    sleep 0.5
  done
  [ -n "${LOG:-}" ] && tail -20 "$LOG"
  fail "$4 (last state: $s)"
}
