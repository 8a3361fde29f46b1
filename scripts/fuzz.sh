#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang (ASan + UBSan, the whole tree instrumented)
# and runs each for SECONDS (default 30) on a copy of its seed corpus. Fails on any crash, leak,
# sanitizer report, timeout or property violation; the input that caused it is kept.
#   scripts/fuzz.sh [SECONDS] [TARGET...]     TARGET: protocol, b-handshake (default: both)
# Build in build/fuzz; the grown corpora go to build/fuzz/corpus/TARGET (never into the
# repository), failing inputs to build/fuzz/artifacts/.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

usage="usage: $0 [SECONDS] [protocol|b-handshake ...]"
seconds=${1:-30}
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "$usage" >&2
  exit 2
fi
targets=("${@:2}")
if ((${#targets[@]} == 0)); then
  targets=(protocol b-handshake)
fi
for target in "${targets[@]}"; do
  if [[ ! -d "tests/fuzz/corpus/$target" ]]; then
    echo "fuzz.sh: no target '$target'; $usage" >&2
    exit 2
  fi
done

scripts/install-deps.sh --fuzz

build=build/fuzz
start=$SECONDS
# CC/CXX count only when build/fuzz is first configured; one configured with gcc by hand stops at
# the FATAL_ERROR of the top-level CMakeLists.txt (delete it to start over).
CC=clang CXX=clang++ cmake -S . -B "$build" -DTUNNEL_FUZZ=ON \
  -DTUNNEL_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target "${targets[@]/#/fuzz-}"
printf 'fuzz.sh: built in %ss\n' "$((SECONDS - start))"

# Leak detection is libFuzzer's default under ASan, but an ASAN_OPTIONS from the caller could turn
# it off: ours come last, and the last setting wins.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:halt_on_error=1"

artifacts="$build/artifacts"
rm -rf "$artifacts"
mkdir -p "$artifacts"
totals=""
failed=0
for target in "${targets[@]}"; do
  corpus="$build/corpus/$target"
  rm -rf "$corpus"
  mkdir -p "$corpus"
  cp tests/fuzz/corpus/"$target"/* "$corpus"/
  log="$build/fuzz-$target.log"
  printf '\n==> fuzz-%s for %ss (log: %s)\n' "$target" "$seconds" "$log"
  status=0
  "$build/tests/fuzz/fuzz-$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/$target-" "$corpus" >"$log" 2>&1 ||
    status=$?
  # libFuzzer's last words on a clean stop: "Done N runs in S second(s)".
  done_line=$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n1 || true)
  if ((status != 0)) || [[ -z "$done_line" ]]; then
    failed=1
    # The sanitizer or property report is at the end of libFuzzer's output.
    tail -n 60 "$log" >&2
    printf 'fuzz.sh: fuzz-%s FAILED (exit %s); input kept in %s\n' "$target" "$status" \
      "$(ls "$artifacts"/"$target"-* 2>/dev/null | tr '\n' ' ')" >&2
    totals+="${totals:+, }fuzz-$target FAILED"
    continue
  fi
  [[ "$done_line" =~ ^Done\ ([0-9]+)\ runs\ in\ ([0-9]+) ]]
  runs=${BASH_REMATCH[1]}
  elapsed=${BASH_REMATCH[2]}
  units=$(find "$corpus" -type f | wc -l)
  seeds=$(find tests/fuzz/corpus/"$target" -type f | wc -l)
  printf 'fuzz.sh: fuzz-%s: %s runs in %ss (%s runs/s), corpus %s -> %s, no crash\n' "$target" \
    "$runs" "$elapsed" "$((runs / (elapsed > 0 ? elapsed : 1)))" "$seeds" "$units"
  totals+="${totals:+, }fuzz-$target $runs runs"
done

if ((failed)); then
  echo "fuzz.sh: FAILED in $((SECONDS - start))s -- $totals" >&2
  exit 1
fi
echo "fuzz.sh: OK in $((SECONDS - start))s -- $totals"
