#!/usr/bin/env bash
# Runs the whole test suite N times in a row and tallies what failed, to find flaky tests.
#   scripts/soak-tests.sh [N] [SUITES_AT_ONCE]
# SUITES_AT_ONCE=2 runs two suites side by side each round (CI-like load on a small machine).
# Every run's output is kept in $SOAK_DIR (default target/soak); no test is ever retried.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
at_once=${2:-1}
out=${SOAK_DIR:-target/soak}
mkdir -p "$out"
# The farm logs of every failed test, to read a flake's whole story.
export FREEAGENT_TEST_KEEP_LOGS="$out/farm-logs"

cargo build --workspace --quiet && cargo test --workspace --no-run --quiet 2>/dev/null ||
  { echo "the build failed"; exit 1; }
# The test executables, run directly so that suites side by side share one build.
mapfile -t bins < <(cargo test --workspace --no-run --message-format=json 2>/dev/null |
  python3 -c 'import sys, json
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"], m["target"]["src_path"])')

one_suite() { # $1: log file. Runs every test binary from its package directory, as cargo does.
  local rc=0
  for entry in "${bins[@]}"; do
    local exe=${entry%% *} src=${entry#* } dir
    dir=$(dirname "$src")
    while [ ! -f "$dir/Cargo.toml" ]; do dir=$(dirname "$dir"); done
    echo "### $exe" >>"$1"
    (cd "$dir" && "$exe") >>"$1" 2>&1 || rc=1
  done
  return $rc
}

declare -A failed
total=0 red=0
for i in $(seq 1 "$runs"); do
  pids=()
  for j in $(seq 1 "$at_once"); do
    log="$out/run-$i-$j.log"
    : >"$log"
    one_suite "$log" &
    pids+=($!)
  done
  for j in "${!pids[@]}"; do
    log="$out/run-$i-$((j + 1)).log"
    total=$((total + 1))
    if wait "${pids[$j]}"; then
      echo "run $i.$((j + 1)): passed ($(grep -c '\.\.\. ok$' "$log") tests)"
    else
      red=$((red + 1))
      names=$(grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/')
      echo "run $i.$((j + 1)): FAILED: ${names:-see $log}"
      for n in $names; do failed[$n]=$((${failed[$n]:-0} + 1)); done
    fi
  done
done
echo
echo "suites: $total, red: $red"
for n in "${!failed[@]}"; do echo "  ${failed[$n]}x $n"; done
[ "$red" -eq 0 ]
