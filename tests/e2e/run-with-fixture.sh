#!/bin/sh
# Runs the browser suite against the scripted fixture: builds it, starts it on a free port, runs the tests,
# stops it. Usage: tests/e2e/run-with-fixture.sh   (from the repository root; needs chromium and npm install)
set -eu
cd "$(dirname "$0")/../.."
# VIGIL_FIXTURE_BIN: use an already built fixture instead of building it here.
BIN="${VIGIL_FIXTURE_BIN:-}"
if [ -z "$BIN" ]; then
  cargo build --example dashboard_fixture
  BIN="${CARGO_TARGET_DIR:-target}/debug/examples/dashboard_fixture"
fi
PORT="${VIGIL_FIXTURE_PORT:-8089}"
mkdir -p tests/e2e/screenshots
# The desaturation comes 15 s after start: late enough for the browser to be watching, early enough to be quick.
"$BIN" --listen "127.0.0.1:$PORT" --desat-after "${VIGIL_FIXTURE_DESAT_AFTER:-15}" >tests/e2e/screenshots/fixture.log 2>&1 &
FIXTURE=$!
trap 'kill $FIXTURE 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 50); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
cd tests/e2e
VIGIL_URL="http://127.0.0.1:$PORT" node --test --test-reporter=spec --test-concurrency=1 dashboard.test.mjs
