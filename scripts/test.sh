#!/usr/bin/env bash
# Builds and tests tunnel twice: preset debug (ASan + UBSan) and preset release, then fuzzes for a
# short while (scripts/fuzz.sh). Stops at the first failure. This is what CI runs (.ci/run).
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

# A short fuzz run on the codec and the server's B side (clang build in build/fuzz: 2-3 minutes
# with the build on two idle cores): any crash, leak, sanitizer report or property violation fails.
printf '\n==> fuzz: scripts/fuzz.sh 30\n'
step="scripts/fuzz.sh 30"
scripts/fuzz.sh 30 2>&1 | tee "$log"
summary+="${summary:+; }fuzz: $(sed -n 's/^fuzz.sh: OK in [0-9]*s -- //p' "$log")"

printf '\ntest.sh: OK in %ss -- %s\n' "$((SECONDS - start))" "$summary"
