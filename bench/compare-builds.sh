#!/usr/bin/env bash
# Compares the speed of two builds of the tunnel in ONE run (on a shared machine only ratios within
# one run mean anything): iperf3 throughput both ways and 1-byte ping-pong latency, direct vs through each.
#
# Usage: bench/compare-builds.sh BEFORE_BIN_DIR AFTER_BIN_DIR   (each holds tunnel-server and tunnel-client)
# Knobs (environment): ROUNDS=3 IPERF_SECONDS=5 PP_COUNT=20000 PP_WARMUP=2000. Needs iperf3, g++, ss.
# Rounds interleave the builds; the table shows the median of the rounds. The load average is printed
# because a busy machine makes the ratios noisy: run it twice with the same build to see the noise floor.
set -euo pipefail

usage() {
  echo "usage: $0 BEFORE_BIN_DIR AFTER_BIN_DIR   (each with tunnel-server and tunnel-client)" >&2
  exit 2
}
(($# == 2)) || usage
[[ -d $1 && -d $2 ]] || usage

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
declare -A bin_dir=([before]=$(cd "$1" && pwd) [after]=$(cd "$2" && pwd))
ROUNDS=${ROUNDS:-3}
IPERF_SECONDS=${IPERF_SECONDS:-5}
PP_COUNT=${PP_COUNT:-20000}
PP_WARMUP=${PP_WARMUP:-2000}

die() {
  echo "FAIL: $*" >&2
  exit 1
}

for build in before after; do
  for exe in tunnel-server tunnel-client; do
    [[ -x ${bin_dir[$build]}/$exe ]] || die "$build: no executable ${bin_dir[$build]}/$exe"
  done
done
command -v iperf3 >/dev/null || die "iperf3 is missing: apt-get install -y iperf3"
command -v g++ >/dev/null || die "g++ is missing (needed to build bench/pingpong.cpp)"

work=$(mktemp -d "${TMPDIR:-/tmp}/compare-builds.XXXXXX")
pids=() # everything started in the background and still running
ok=0

# Stops whatever is still running (SIGTERM, then SIGKILL after 3 s). Keeps the logs when the run failed.
cleanup() {
  local rc=$?
  set +e
  trap - INT TERM
  stop_pids "${pids[@]}"
  if ((ok)); then
    rm -rf "$work"
  else
    echo "logs kept in $work" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stop_pids() {
  local pid step keep=()
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  for pid in "$@"; do
    for ((step = 0; step < 30; step++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  # Forget them, so that cleanup never signals a reused pid.
  for pid in "${pids[@]}"; do
    [[ " $* " == *" $pid "* ]] || keep+=("$pid")
  done
  pids=("${keep[@]}")
}

listening() { [[ -n $(ss -Hltn "( sport = :$1 )") ]]; }
both_listening() { listening "$1" && listening "$2"; }

# pick_port VAR: sets VAR to a random port that nothing listens on and that this run has not used
# yet, below the kernel's ephemeral range (32768+) so that outgoing connections do not take it.
used_ports=" "
pick_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 12000))
    [[ $used_ports == *" $port "* ]] && continue
    listening "$port" && continue
    used_ports+="$port "
    printf -v "$1" '%s' "$port"
    return 0
  done
}

# wait_until SECONDS PID COMMAND...: polls COMMAND; returns 1 if PID exits or time runs out.
wait_until() {
  local seconds=$1 pid=$2 step
  shift 2
  for ((step = 0; step < seconds * 20; step++)); do
    "$@" && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# median FORMAT VALUES...
median() {
  local format=$1
  shift
  printf '%s\n' "$@" | sort -g |
    awk -v f="$format" '{v[NR] = $1} END {printf f, (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else printf "n/a"}'; }

echo "==> building pingpong from $here/pingpong.cpp"
g++ -O2 -std=c++20 "$here/pingpong.cpp" -o "$work/pingpong"

# --- the targets: one iperf3 server and one echo server, shared by every measurement ---
iperf_port=
for attempt in 1 2 3 4 5; do
  pick_port iperf_port
  iperf3 -s -B 127.0.0.1 -p "$iperf_port" >"$work/iperf3-server.log" 2>&1 &
  pids+=($!)
  wait_until 10 "${pids[-1]}" listening "$iperf_port" && break
  stop_pids "${pids[-1]}" # the port was taken after all: try another
  ((attempt < 5)) || die "iperf3 -s did not start (see $work/iperf3-server.log)"
done

"$work/pingpong" serve 0 >"$work/echo.out" 2>&1 &
pids+=($!)
wait_until 10 "${pids[-1]}" grep -q '^listening port=' "$work/echo.out" || die "pingpong serve did not start"
echo_port=$(sed -n 's/^listening port=//p' "$work/echo.out")
echo "    iperf3 server on 127.0.0.1:$iperf_port, echo server on 127.0.0.1:$echo_port"

# start_tunnel NAME BIN_DIR TARGET_PORT: starts tunnel-server and tunnel-client, waits until the
# client is online, and sets tunnel_port_a and tunnel_pids.
start_tunnel() {
  local name=$1-$round dir=$2 target=$3 attempt pa pb server client
  for attempt in 1 2 3 4 5; do
    pick_port pa
    pick_port pb
    "$dir/tunnel-server" --listen-a "127.0.0.1:$pa" --listen-b "127.0.0.1:$pb" --log-level warn \
      >>"$work/$name-server.log" 2>&1 &
    server=$!
    pids+=("$server")
    if ! wait_until 10 "$server" both_listening "$pa" "$pb" || ! kill -0 "$server" 2>/dev/null; then
      # Exited: most likely a port was taken between the pick and the bind, so try others.
      kill -0 "$server" 2>/dev/null && die "$name: tunnel-server is not listening after 10 s"
      stop_pids "$server"
      continue
    fi
    # --log-level info (the default, said explicitly) because readiness is its event=online line.
    "$dir/tunnel-client" --server "127.0.0.1:$pb" --target "127.0.0.1:$target" --log-level info \
      >"$work/$name-client.log" 2>&1 &
    client=$!
    pids+=("$client")
    wait_until 10 "$client" grep -q 'event=online' "$work/$name-client.log" ||
      die "$name: tunnel-client did not log event=online within 10 s (see $work/$name-client.log)"
    tunnel_port_a=$pa
    tunnel_pids=("$server" "$client")
    return 0
  done
  die "$name: tunnel-server could not bind its ports in 5 attempts (see $work/$name-server.log)"
}

# iperf_gbps PORT [-R]: the receiver's rate in Gbit/s over IPERF_SECONDS (first second omitted, as
# slow start would only add noise). A stalled tunnel fails the run through `timeout`.
iperf_gbps() {
  local port=$1 out
  shift
  out=$(timeout $((IPERF_SECONDS + 30)) iperf3 -c 127.0.0.1 -p "$port" -t "$IPERF_SECONDS" -O 1 \
    -f g --connect-timeout 5000 "$@" 2>&1) || die "iperf3 -c 127.0.0.1 -p $port $*: $out"
  awk '/receiver$/ {for (i = 2; i <= NF; i++) if ($i == "Gbits/sec") print $(i - 1)}' <<<"$out" | tail -1
}

# pingpong_us PORT: prints "p50 p99" in microseconds.
pingpong_us() {
  local out
  out=$(timeout 300 "$work/pingpong" client "127.0.0.1:$1" --size 1 --count "$PP_COUNT" \
    --warmup "$PP_WARMUP" 2>&1) || die "pingpong client 127.0.0.1:$1: $out"
  sed -n 's/.*p50_us=\([0-9.]*\) p99_us=\([0-9.]*\).*/\1 \2/p' <<<"$out"
}

declare -A results # "<setup> <metric>" -> values of every round, space separated
metrics=(up down p50 p99)
formats=(%.2f %.2f %.1f %.1f)

# measure SETUP IPERF_PORT ECHO_PORT: one sample of every metric.
measure() {
  local setup=$1 up down lat
  up=$(iperf_gbps "$2")
  down=$(iperf_gbps "$2" -R)
  lat=$(pingpong_us "$3")
  [[ -n $up && -n $down && -n $lat ]] || die "$setup: could not read a result"
  results["$setup up"]+="$up "
  results["$setup down"]+="$down "
  results["$setup p50"]+="${lat% *} "
  results["$setup p99"]+="${lat#* } "
  printf '    %-6s  up %6s Gbit/s  down %6s Gbit/s  p50 %7s us  p99 %7s us\n' "$setup" "$up" "$down" \
    "${lat% *}" "${lat#* }"
}

# measure_build BUILD: fresh tunnels for this round (one to each target), measured, then stopped.
measure_build() {
  local build=$1 iperf_a echo_a started=()
  start_tunnel "$build-iperf" "${bin_dir[$build]}" "$iperf_port"
  iperf_a=$tunnel_port_a
  started+=("${tunnel_pids[@]}")
  start_tunnel "$build-echo" "${bin_dir[$build]}" "$echo_port"
  echo_a=$tunnel_port_a
  started+=("${tunnel_pids[@]}")
  measure "$build" "$iperf_a" "$echo_a"
  stop_pids "${started[@]}"
}

# The load says how busy the shared machine was: ratios from a calm run are the ones to trust.
echo "==> load average at start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
echo "==> $ROUNDS rounds: iperf3 ${IPERF_SECONDS}s each way, ping-pong $PP_COUNT round trips of 1 byte after $PP_WARMUP"
for ((round = 1; round <= ROUNDS; round++)); do
  echo "--- round $round"
  measure direct "$iperf_port" "$echo_port"
  # Alternate which build goes first, so neither always runs right after the other.
  if ((round % 2)); then order=(before after); else order=(after before); fi
  for build in "${order[@]}"; do
    measure_build "$build"
  done
done

# --- the table: medians over the rounds ---
labels=([0]="iperf3 A->target Gbit/s" [1]="iperf3 target->A Gbit/s" [2]="ping-pong p50 us" [3]="ping-pong p99 us")
echo
echo "==> medians of $ROUNDS rounds (Gbit/s: higher is better; us: lower is better)"
echo "    before: ${bin_dir[before]}"
echo "    after:  ${bin_dir[after]}"
printf '%-25s %9s %9s %9s %13s %14s %13s\n' metric direct before after after/before before/direct after/direct
for i in "${!metrics[@]}"; do
  m=${metrics[i]}
  # shellcheck disable=SC2086 # the stored values are space-separated on purpose
  {
    d=$(median "${formats[i]}" ${results["direct $m"]})
    b=$(median "${formats[i]}" ${results["before $m"]})
    a=$(median "${formats[i]}" ${results["after $m"]})
  }
  printf '%-25s %9s %9s %9s %13s %14s %13s\n' "${labels[i]}" "$d" "$b" "$a" "$(ratio "$a" "$b")" \
    "$(ratio "$b" "$d")" "$(ratio "$a" "$d")"
done
echo
echo "(whole run: ${SECONDS}s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg))"
ok=1
