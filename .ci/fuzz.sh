#!/usr/bin/env bash
# Fuzzes every decoder briefly: masimo, nonin, hl7, mllp, s5, intellivue (targets in fuzz/fuzz_targets/).
#
# The toolchain here is stable; cargo-fuzz needs nightly flags (-Zsanitizer), which RUSTC_BOOTSTRAP=1 allows.
# FUZZ_SECONDS sets the time per target (default 10 s). Measured here: instrumented build about 1-2 min (it
# compiles only the decoder sources, see fuzz/Cargo.toml), then 6 x 10 s of fuzzing; 20 s incremental.
# A crash leaves its input in fuzz/artifacts/<target>/ and fails this script.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-10}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# The fuzz crate has its own target directory: its instrumented artefacts must not mix with normal builds.
unset CARGO_TARGET_DIR

cd fuzz
targets=(masimo nonin hl7 mllp s5 intellivue)
cargo fuzz build
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log="$(mktemp)"
  echo "fuzz.sh: $t for ${seconds}s"
  if ! cargo fuzz run "$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz.sh: $t FAILED (input saved under fuzz/artifacts/$t/)"
    status=1
  else
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|Done)" "$log" || tail -n 3 "$log"
  fi
  rm -f "$log"
done
if [ "$status" -eq 0 ]; then
  echo "fuzz.sh: all targets ran without a crash"
fi
exit "$status"
