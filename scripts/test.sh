#!/usr/bin/env bash
# Builds and tests tunnel twice: preset debug (ASan + UBSan) and preset release. Stops at the first
# failure. This is what CI runs (.ci/run).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

step="scripts/install-deps.sh --tests"
trap 'printf "\ntest.sh: FAILED at: %s\n" "$step" >&2' ERR
scripts/install-deps.sh --tests

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$SECONDS
summary=""
for preset in debug release; do
  printf '\n==> preset %s: configure, build, test\n' "$preset"
  step="cmake --preset $preset"
  cmake --preset "$preset"
  step="cmake --build --preset $preset"
  cmake --build --preset "$preset" -j"$(nproc)"
  step="ctest --preset $preset"
  ctest --preset "$preset" -j2 2>&1 | tee "$log"
  # ctest's last lines say how many tests ran; keep that for the summary.
  counts=$(grep -Eo '[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "$log" || echo 'passed')
  summary+="${summary:+; }$preset: $counts"
done

printf '\ntest.sh: OK in %ss -- %s\n' "$((SECONDS - start))" "$summary"
