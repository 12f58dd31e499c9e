#!/usr/bin/env bash
# cargo-fuzz on every decoder for a short time (see .ci/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash .ci/fuzz.sh
