#!/usr/bin/env bash
# An experiment for docs/BENCHMARKS.md, run by hand: paths are those of the machine it ran on
# (daemons built by bench/run.sh from an export in /tmp/h-bench-src, bench tools in /tmp/hb).
# idle memory split: server vs client RSS delta for 9000 idle conns, plain tunnel, pool 0 and 16
set -euo pipefail
B=/tmp/h-bench-src/build/bench
T=/tmp/hb
cd $T
./echo 0 > e9.out & EP=$!; sleep 0.3; P=$(sed -n 's/listening port=//p' e9.out)
for pool in 0 16; do
  $B/server/tunnel-server --listen-a 127.0.0.1:24101 --listen-b 127.0.0.1:24102 --log-level warn > s9.log 2>&1 & S=$!
  sleep 0.5
  $B/client/tunnel-client --server 127.0.0.1:24102 --target 127.0.0.1:$P --log-level warn --pool $pool > c9.log 2>&1 & C=$!
  sleep 2
  s0=$(awk '/^VmRSS/{print $2}' /proc/$S/status); c0=$(awk '/^VmRSS/{print $2}' /proc/$C/status)
  ./hold 127.0.0.1:24101 9000 > h9.out 2>&1 & H=$!
  for i in $(seq 1 120); do grep -q '^open' h9.out && break; sleep 0.5; done
  sleep 2
  s1=$(awk '/^VmRSS/{print $2}' /proc/$S/status); c1=$(awk '/^VmRSS/{print $2}' /proc/$C/status)
  echo "pool=$pool $(cat h9.out) server RSS $s0 -> $s1 kB ($(awk -v a=$s1 -v b=$s0 'BEGIN{printf "%.2f", (a-b)/9000}') KiB/conn), client RSS $c0 -> $c1 kB ($(awk -v a=$c1 -v b=$c0 'BEGIN{printf "%.2f", (a-b)/9000}') KiB/conn)"
  grep -E '^(Rss|Pss)_(Anon|File)' /proc/$S/smaps_rollup | tr '\n' ' '; echo " (server smaps_rollup)"
  kill $H; wait $H 2>/dev/null || true
  kill $S $C; wait $S $C 2>/dev/null || true
  sleep 1
done
kill $EP
