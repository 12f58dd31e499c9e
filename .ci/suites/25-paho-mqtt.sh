#!/usr/bin/env bash
# An independent MQTT client (Python paho-mqtt) checks the integrator guarantees against a real Mosquitto:
# exactly-once after de-duplication, contiguous bed_seq across a broker restart, retained state, commands.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore paho-mqtt jsonschema >/dev/null
python3 tests/ci/paho_check.py
