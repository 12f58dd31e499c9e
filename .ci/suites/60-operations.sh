#!/usr/bin/env bash
# The operations interface with reference tools: /metrics parsed by the Prometheus Python client's parser (values
# that move when a bed alarms), /healthz and /readyz, and the systemd notify protocol (READY=1, WATCHDOG=1,
# STOPPING=1) received on a unix datagram socket served by Python, from the real binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore prometheus_client >/dev/null
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
python3 tests/ci/ops_check.py "$VIGIL" "$work"
