#!/usr/bin/env bash
# Charts from bench/run.sh's results.tsv (metric setup median min max ratio_direct ratio_floor),
# with gnuplot: one PNG per comparison, bars at the median and whiskers at the min and max of the
# rounds. Setups not measured (n/a) leave a gap.
# Usage: bench/plot.sh RESULTS.TSV OUT_DIR      (run.sh calls it at the end of a run)
set -euo pipefail

(($# == 2)) || {
  echo "usage: $0 RESULTS.TSV OUT_DIR" >&2
  exit 2
}
tsv=$1
out=$2
command -v gnuplot >/dev/null || {
  echo "gnuplot is missing (apt-get install gnuplot-nox)" >&2
  exit 1
}
mkdir -p "$out"
data=$(mktemp -d "${TMPDIR:-/tmp}/bench-plot.XXXXXX")
trap 'rm -rf "$data"' EXIT

# extract FILE METRIC...: one line per setup (in the TSV's order): the setup, then median min max
# of each metric ("n/a" where not measured).
extract() {
  local file=$1
  shift
  awk -F'\t' -v want="$*" '
    BEGIN {n = split(want, w, " ")}
    NR > 1 {
      if (!($2 in seen)) {seen[$2] = 1; order[++count] = $2}
      v[$2, $1] = $3 " " $4 " " $5
    }
    END {
      for (i = 1; i <= count; i++) {
        line = order[i]
        for (j = 1; j <= n; j++) line = line " " ((order[i], w[j]) in v ? v[order[i], w[j]] : "n/a n/a n/a")
        print line
      }
    }' "$tsv" >"$data/$file"
}

extract throughput.dat iperf_up iperf_down iperf_x4
extract cpu.dat cpu_up cpu_down cpu_x4
extract pp1.dat pp1_p50 pp1_p99 pp1_p999
extract ppk.dat ppk_p50 ppk_p99 ppk_p999
extract rate.dat cr1_rate cr32_rate
extract ttfb.dat cr1_p50 cr1_p99 cr32_p50 cr32_p99
extract wrk.dat wrk_rps wrk_p50 wrk_p99
extract idle.dat idle_relay_kib idle_sys_kib idle_open_per_k
extract wan.dat wan_echo_rtt wan_banner_rtt

preamble='set datafile missing "n/a"
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set grid ytics
set key top right
set xtics rotate by -30 nomirror
set yrange [0:*]
set terminal pngcairo size 1100,520 font "sans,10"'

# chart NAME DATA...: the gnuplot commands on stdin draw $out/NAME.png, when the DATA files hold a
# number at all (a run with some tests left out has nothing to draw for them).
chart() {
  local name=$1 file script
  shift
  script=$(cat)
  for file in "$@"; do
    awk '{for (i = 2; i <= NF; i++) if ($i != "n/a") found = 1} END {exit !found}' "$data/$file" || {
      echo "    $name.png: no data in this run"
      rm -f "$out/$name.png" # not a chart of an earlier run
      return 0
    }
  done
  printf '%s\nset output "%s/%s.png"\n%s\n' "$preamble" "$out" "$name" "$script" | gnuplot ||
    echo "    $name.png: gnuplot failed" >&2
}

chart throughput throughput.dat cpu.dat <<EOF
set multiplot layout 1,2 title "iperf3 through each setup (median of the rounds, whiskers min-max)"
set title "throughput, Gbit/s (higher is better)"
plot "$data/throughput.dat" using 2:3:4:xtic(1) title "1 stream visitor->target", \
     "" using 5:6:7 title "1 stream target->visitor", "" using 8:9:10 title "4 streams"
set title "relay CPU seconds per GB moved (lower is better)"
plot "$data/cpu.dat" using 2:3:4:xtic(1) title "1 stream visitor->target", \
     "" using 5:6:7 title "1 stream target->visitor", "" using 8:9:10 title "4 streams"
unset multiplot
EOF

chart latency pp1.dat ppk.dat <<EOF
set multiplot layout 1,2 title "ping-pong round trip over one connection, us (lower is better; log scale)"
set logscale y
set yrange [*:*]
set title "1 byte"
plot "$data/pp1.dat" using 2:3:4:xtic(1) title "p50", "" using 5:6:7 title "p99", "" using 8:9:10 title "p99.9"
set title "1 KiB"
plot "$data/ppk.dat" using 2:3:4:xtic(1) title "p50", "" using 5:6:7 title "p99", "" using 8:9:10 title "p99.9"
unset multiplot
EOF

chart connections rate.dat ttfb.dat <<EOF
set multiplot layout 1,2 title "new connections: connect, 1 byte echoed, close"
set title "connections per second (higher is better)"
plot "$data/rate.dat" using 2:3:4:xtic(1) title "1 worker", "" using 5:6:7 title "32 workers"
set logscale y
set yrange [*:*]
set title "time to first byte, us (lower is better; log scale)"
plot "$data/ttfb.dat" using 2:3:4:xtic(1) title "p50, 1 worker", "" using 5:6:7 title "p99, 1 worker", \
     "" using 8:9:10 title "p50, 32 workers", "" using 11:12:13 title "p99, 32 workers"
unset multiplot
EOF

chart wrk wrk.dat <<EOF
set multiplot layout 1,2 title "wrk against nginx (a 1 KiB file) through each setup"
set title "requests per second (higher is better)"
plot "$data/wrk.dat" using 2:3:4:xtic(1) title "requests/s"
set title "latency, us (lower is better)"
plot "$data/wrk.dat" using 5:6:7:xtic(1) title "p50", "" using 8:9:10 title "p99"
unset multiplot
EOF

chart memory idle.dat <<EOF
set multiplot layout 1,2 title "idle connections held open (how many per setup: see the table)"
set title "memory per connection, KiB (lower is better)"
set yrange [*:*]
plot "$data/idle.dat" using 2:3:4:xtic(1) title "relay processes' RSS", "" using 5:6:7 title "system MemAvailable"
set title "seconds to open 1,000 (lower is better)"
set yrange [0:*]
plot "$data/idle.dat" using 8:9:10:xtic(1) title "open time per 1,000"
unset multiplot
EOF

chart wan wan.dat <<EOF
set terminal pngcairo size 800,520 font "sans,10"
set output "$out/wan.png"
set title "time to first byte across an emulated WAN, in round trips (lower is better)"
plot "$data/wan.dat" using 2:3:4:xtic(1) title "client speaks first (echo)", \
     "" using 5:6:7 title "server speaks first (banner)", \
     1.1 with lines dt 2 lc rgb "dark-green" title "pool target (1.1)", \
     3.1 with lines dt 2 lc rgb "dark-red" title "no-pool target (3.1)"
EOF
ls "$out"/*.png 2>/dev/null || true
