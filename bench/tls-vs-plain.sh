#!/usr/bin/env bash
# What TLS (and TLS session resumption) costs the tunnel, measured in ONE run: on a shared machine
# whose speed swings, only ratios within one run mean anything. Four setups, each test run on all
# four back to back, over ROUNDS rounds (the order rotates each round):
#   direct     straight to the target, no tunnel
#   plain      tunnel-server + tunnel-client, no token, no TLS
#   tls        --token-file and TLS 1.3 on port B (client --tls --tls-pin), resumption on (default)
#   tls-nores  the same with the client's --tls-resume false: a full handshake per data connection
# Tests: iperf3 single stream each way (with the daemons' CPU seconds per GB), 1-byte ping-pong
# p50/p99 (bench/pingpong), and new connections per second with 1 and 8 workers (bench/connrate,
# against bench/echo), with the client's tunnel_tls_handshakes_total{kind} to show resumption.
#
# Usage: bench/tls-vs-plain.sh
# Knobs (environment): ROUNDS=3 IPERF_SECONDS=5 PP_COUNT=20000 PP_WARMUP=2000 CONN_SECONDS=5
#   BUILD_DIR=  empty: `cmake --preset release` into build/release; set: a build directory of
#               its own (RelWithDebInfo, daemons only), for a tree where build/release is shared.
# Needs cmake, g++, openssl, python3, curl, ss; installs iperf3 if it is missing.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

ROUNDS=${ROUNDS:-3}
IPERF_SECONDS=${IPERF_SECONDS:-5}
PP_COUNT=${PP_COUNT:-20000}
PP_WARMUP=${PP_WARMUP:-2000}
CONN_SECONDS=${CONN_SECONDS:-5}
BUILD_DIR=${BUILD_DIR:-}

need_tools cmake g++ openssl python3 curl ss
build_daemons "$BUILD_DIR"
ensure_packages iperf3=iperf3
bench_init tls-vs-plain
echo "==> building the bench tools"
build_tools "$work" pingpong connrate echo

echo "==> token and self-signed certificate in $work"
(umask 077 && head -c 32 /dev/urandom | base64 >"$work/token")
"$repo_root/scripts/gen-cert.sh" --name 127.0.0.1 --out "$work/tls" >"$work/gen-cert.log" 2>&1 ||
  die "gen-cert.sh failed: $(cat "$work/gen-cert.log")"
pin=$("$repo_root/scripts/gen-cert.sh" --pin-of "$work/tls/server.crt")

# --- the targets, shared by every setup ---
iperf_port=
for attempt in 1 2 3 4 5; do
  pick_port iperf_port
  iperf3 -s -B 127.0.0.1 -p "$iperf_port" >"$work/iperf3-server.log" 2>&1 &
  pids+=($!)
  wait_for 10 "${pids[-1]}" listening "$iperf_port" && break
  stop_pids "${pids[-1]}"
  ((attempt < 5)) || die "iperf3 -s did not start (see $work/iperf3-server.log)"
done
"$work/echo" 0 >"$work/echo.out" 2>&1 &
pids+=($!)
wait_for 10 "${pids[-1]}" grep -q '^listening port=' "$work/echo.out" || die "echo did not start"
echo_port=$(sed -n 's/^listening port=//p' "$work/echo.out")

setups=(direct plain tls tls-nores)
tunnelled=(plain tls tls-nores)
declare -A server_flags=(
  [plain]=""
  [tls]="--token-file $work/token --tls-cert $work/tls/server.crt --tls-key $work/tls/server.key"
)
server_flags[tls-nores]=${server_flags[tls]}
declare -A client_flags=(
  [plain]=""
  [tls]="--token-file $work/token --tls --tls-pin $pin"
)
client_flags[tls-nores]="${client_flags[tls]} --tls-resume false"
# Every data connection dialled per visitor, as this script measures handshakes on that path: a
# client with a warm pool (on by default there) would hand visitors to connections made earlier.
if "$client_exe" --help 2>&1 | grep -q -- '--pool'; then
  for setup in plain tls tls-nores; do client_flags[$setup]+=" --pool 0"; done
fi

# Where each test goes, per setup: A port, daemon pids, client metrics port.
declare -A port_of pids_of metrics_of

# start_tunnel SETUP KIND TARGET_PORT: a server and a client for SETUP, towards TARGET_PORT; fills
# port_of/pids_of/metrics_of["SETUP KIND"].
start_tunnel() {
  local setup=$1 kind=$2 target=$3 name="$1-$2-$round" attempt pa pb pm server client
  for attempt in 1 2 3 4 5; do
    pick_port pa
    pick_port pb
    pick_port pm
    # shellcheck disable=SC2086 # the flags are words on purpose
    "$server_exe" --listen-a "127.0.0.1:$pa" --listen-b "127.0.0.1:$pb" --log-level warn \
      ${server_flags[$setup]} >>"$work/$name-server.log" 2>&1 &
    server=$!
    pids+=("$server")
    if ! wait_for 10 "$server" both_listening "$pa" "$pb"; then
      kill -0 "$server" 2>/dev/null && die "$name: tunnel-server not listening after 10 s"
      stop_pids "$server" # a port was taken between the pick and the bind: pick others
      continue
    fi
    # --log-level info: readiness is the client's event=online line.
    # shellcheck disable=SC2086
    "$client_exe" --server "127.0.0.1:$pb" --target "127.0.0.1:$target" --log-level info \
      --metrics-listen "127.0.0.1:$pm" ${client_flags[$setup]} >>"$work/$name-client.log" 2>&1 &
    client=$!
    pids+=("$client")
    if ! wait_for 15 "$client" grep -q 'event=online' "$work/$name-client.log"; then
      die "$name: tunnel-client not online within 15 s (see $work/$name-client.log)"
    fi
    port_of["$setup $kind"]=$pa
    pids_of["$setup $kind"]="$server $client"
    metrics_of["$setup $kind"]=$pm
    return 0
  done
  die "$name: tunnel-server could not bind in 5 attempts (see $work/$name-server.log)"
}


# handshakes METRICS_PORT: "full resumed" from the client's /metrics.
handshakes() {
  curl -fsS --max-time 5 "http://127.0.0.1:$1/metrics" |
    awk '/^tunnel_tls_handshakes_total\{kind="full"\}/ {f = $2}
         /^tunnel_tls_handshakes_total\{kind="resumed"\}/ {r = $2}
         END {printf "%d %d", f, r}'
}

declare -A results # "SETUP METRIC" -> the value of each round, space separated
declare -A hs_full hs_resumed conn_errors
record() { results["$1 $2"]+="$3 "; }

# iperf SETUP up|down: throughput, and the daemons' CPU per GB moved.
iperf() {
  local setup=$1 dir=$2 port=$iperf_port flags=() before after out gbps bytes cpu=""
  [[ $dir == down ]] && flags=(-R)
  [[ $setup != direct ]] && port=${port_of["$setup iperf"]}
  # shellcheck disable=SC2086
  [[ $setup != direct ]] && before=$(cpu_seconds ${pids_of["$setup iperf"]})
  # The first second (slow start) is left out of the rate, but its bytes count for CPU per GB,
  # since the daemons' CPU covers the whole run.
  out=$(timeout $((IPERF_SECONDS + 30)) iperf3 -c 127.0.0.1 -p "$port" -t "$IPERF_SECONDS" -O 1 \
    --connect-timeout 5000 -J "${flags[@]}" 2>&1) || die "$setup: iperf3 $dir failed: $out"
  read -r gbps bytes < <(python3 -c '
import json, sys
d = json.load(sys.stdin)
if "error" in d: sys.exit("iperf3: " + d["error"])
print("%.3f %d" % (d["end"]["sum_received"]["bits_per_second"] / 1e9,
                   sum(i["sum"]["bytes"] for i in d["intervals"])))' <<<"$out") ||
    die "$setup: cannot read iperf3's result"
  record "$setup" "$dir" "$gbps"
  if [[ $setup != direct ]]; then
    # shellcheck disable=SC2086
    after=$(cpu_seconds ${pids_of["$setup iperf"]})
    cpu=$(awk -v a="$after" -v b="$before" -v n="$bytes" 'BEGIN {printf "%.3f", (a - b) / (n / 1e9)}')
    record "$setup" "cpu_$dir" "$cpu"
  fi
  printf '    %-9s iperf3 %-4s %7s Gbit/s%s\n' "$setup" "$dir" "$gbps" "${cpu:+  daemons $cpu CPU-s/GB}"
}

# pingpong SETUP: 1-byte round trips over one connection.
pingpong() {
  local setup=$1 port=$echo_port out p50 p99
  [[ $setup != direct ]] && port=${port_of["$setup echo"]}
  out=$(timeout 300 "$work/pingpong" client "127.0.0.1:$port" --size 1 --count "$PP_COUNT" \
    --warmup "$PP_WARMUP" 2>&1) || die "$setup: pingpong failed: $out"
  read -r p50 p99 < <(sed -n 's/.*p50_us=\([0-9.]*\) p99_us=\([0-9.]*\).*/\1 \2/p' <<<"$out")
  [[ -n $p50 && -n $p99 ]] || die "$setup: cannot read pingpong's result: $out"
  record "$setup" pp50 "$p50"
  record "$setup" pp99 "$p99"
  printf '    %-9s ping-pong   p50 %7s us  p99 %7s us\n' "$setup" "$p50" "$p99"
}

# connrate SETUP WORKERS: new connections per second, time to first byte, the daemons' CPU per
# connection, and the TLS handshakes the client did meanwhile.
connrate() {
  local setup=$1 w=$2 port=$echo_port out rate p50 p99 errors conns hs0 hs1 before after cpu="" hs=""
  if [[ $setup != direct ]]; then
    port=${port_of["$setup echo"]}
    # shellcheck disable=SC2086
    before=$(cpu_seconds ${pids_of["$setup echo"]})
    [[ $setup == tls* ]] && hs0=$(handshakes "${metrics_of["$setup echo"]}")
  fi
  out=$(timeout $((CONN_SECONDS + 60)) "$work/connrate" "127.0.0.1:$port" --workers "$w" \
    --seconds "$CONN_SECONDS" --size 1 2>&1) || die "$setup: connrate failed: $out"
  conns=$(sed -n 's/^conns=\([0-9]*\) .*/\1/p' <<<"$out")
  rate=$(sed -n 's/.* rate_per_s=\([0-9.]*\) .*/\1/p' <<<"$out")
  p50=$(sed -n 's/.* ttfb_p50_us=\([0-9.]*\) .*/\1/p' <<<"$out")
  p99=$(sed -n 's/.* ttfb_p99_us=\([0-9.]*\) .*/\1/p' <<<"$out")
  errors=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<<"$out")
  [[ -n $rate && -n $p50 && -n $p99 && -n $errors ]] || die "$setup: cannot read connrate's result: $out"
  record "$setup" "cr${w}_rate" "$rate"
  record "$setup" "cr${w}_p50" "$p50"
  record "$setup" "cr${w}_p99" "$p99"
  conn_errors["$setup $w"]=$((${conn_errors["$setup $w"]:-0} + errors))
  if [[ $setup != direct ]]; then
    # shellcheck disable=SC2086
    after=$(cpu_seconds ${pids_of["$setup echo"]})
    cpu=$(awk -v a="$after" -v b="$before" -v n="$conns" 'BEGIN {printf "%.1f", (a - b) * 1e6 / n}')
    record "$setup" "cr${w}_cpu" "$cpu"
  fi
  if [[ $setup == tls* ]]; then
    hs1=$(handshakes "${metrics_of["$setup echo"]}")
    local full=$((${hs1% *} - ${hs0% *})) resumed=$((${hs1#* } - ${hs0#* }))
    hs_full["$setup $w"]=$((${hs_full["$setup $w"]:-0} + full))
    hs_resumed["$setup $w"]=$((${hs_resumed["$setup $w"]:-0} + resumed))
    hs="  TLS handshakes +$full full +$resumed resumed"
  fi
  printf '    %-9s connrate %sw %6s conn/s  ttfb p50 %7s us  p99 %8s us  errors %s%s%s\n' "$setup" "$w" \
    "$rate" "$p50" "$p99" "$errors" "${cpu:+  daemons $cpu CPU-us/conn}" "$hs"
}

echo "==> machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)"
echo "==> daemons: $bin"
echo "==> load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "==> $ROUNDS rounds; iperf3 ${IPERF_SECONDS}s each way; ping-pong $PP_COUNT x 1 byte after $PP_WARMUP;" \
  "connrate ${CONN_SECONDS}s with 1 and 8 workers"
for ((round = 0; round < ROUNDS; round++)); do
  # Rotate the order each round, so that no setup always runs first or right after another.
  order=("${setups[@]:round%4}" "${setups[@]:0:round%4}")
  echo "--- round $((round + 1)): ${order[*]} (load $(cut -d' ' -f1 /proc/loadavg))"
  started=()
  for setup in "${tunnelled[@]}"; do
    start_tunnel "$setup" iperf "$iperf_port"
    start_tunnel "$setup" echo "$echo_port"
    # shellcheck disable=SC2206
    started+=(${pids_of["$setup iperf"]} ${pids_of["$setup echo"]})
  done
  for setup in "${order[@]}"; do iperf "$setup" up; done
  for setup in "${order[@]}"; do iperf "$setup" down; done
  for setup in "${order[@]}"; do pingpong "$setup"; done
  for setup in "${order[@]}"; do connrate "$setup" 1; done
  for setup in "${order[@]}"; do connrate "$setup" 8; done
  stop_pids "${started[@]}"
done

# --- the tables ---
# stats FORMAT VALUES...: "median min max"

metrics=(up down cpu_up cpu_down pp50 pp99 cr1_rate cr1_p50 cr1_p99 cr1_cpu cr8_rate cr8_p50 cr8_p99 cr8_cpu)
declare -A label=(
  [up]="iperf3 A->target Gbit/s" [down]="iperf3 target->A Gbit/s"
  [cpu_up]="daemons CPU-s/GB, A->target" [cpu_down]="daemons CPU-s/GB, target->A"
  [pp50]="ping-pong p50 us" [pp99]="ping-pong p99 us"
  [cr1_rate]="connrate 1w conn/s" [cr1_p50]="connrate 1w ttfb p50 us" [cr1_p99]="connrate 1w ttfb p99 us"
  [cr1_cpu]="connrate 1w daemons CPU-us/conn"
  [cr8_rate]="connrate 8w conn/s" [cr8_p50]="connrate 8w ttfb p50 us" [cr8_p99]="connrate 8w ttfb p99 us"
  [cr8_cpu]="connrate 8w daemons CPU-us/conn"
)
declare -A format=([up]=%.2f [down]=%.2f [cpu_up]=%.2f [cpu_down]=%.2f [pp50]=%.1f [pp99]=%.1f
  [cr1_rate]=%.0f [cr1_p50]=%.0f [cr1_p99]=%.0f [cr1_cpu]=%.0f
  [cr8_rate]=%.0f [cr8_p50]=%.0f [cr8_p99]=%.0f [cr8_cpu]=%.0f)

declare -A med
echo
echo "==> median [min-max] of $ROUNDS rounds (Gbit/s, conn/s: higher is better; us, CPU: lower is better)"
printf '%-32s' metric
for setup in "${setups[@]}"; do printf ' %24s' "$setup"; done
echo
for m in "${metrics[@]}"; do
  printf '%-32s' "${label[$m]}"
  for setup in "${setups[@]}"; do
    # shellcheck disable=SC2086 # the stored values are space-separated on purpose
    if [[ -n ${results["$setup $m"]:-} ]]; then
      read -r md lo hi < <(stats "${format[$m]}" ${results["$setup $m"]})
      med["$setup $m"]=$md
      printf ' %24s' "$md [$lo-$hi]"
    else
      printf ' %24s' "-"
    fi
  done
  echo
done

echo
echo "==> ratios of the medians"
printf '%-32s %12s %12s %14s %12s %14s %14s\n' metric plain/direct tls/direct tls-nores/direct tls/plain \
  tls-nores/plain tls-nores/tls
for m in "${metrics[@]}"; do
  d=${med["direct $m"]:-} p=${med["plain $m"]:-} t=${med["tls $m"]:-} n=${med["tls-nores $m"]:-}
  printf '%-32s %12s %12s %14s %12s %14s %14s\n' "${label[$m]}" "$(ratio "$p" "$d")" "$(ratio "$t" "$d")" \
    "$(ratio "$n" "$d")" "$(ratio "$t" "$p")" "$(ratio "$n" "$p")" "$(ratio "$n" "$t")"
done

echo
echo "==> the client's TLS handshakes during connrate, all rounds (tunnel_tls_handshakes_total)"
for setup in tls tls-nores; do
  for w in 1 8; do
    printf '    %-9s %sw: full %7s  resumed %7s\n' "$setup" "$w" "${hs_full["$setup $w"]}" \
      "${hs_resumed["$setup $w"]}"
  done
done
echo "==> connrate errors, all rounds:$(for s in "${setups[@]}"; do printf ' %s %s/%s' "$s" \
  "${conn_errors["$s 1"]}" "${conn_errors["$s 8"]}"; done) (1w/8w)"
echo
echo "(whole run: ${SECONDS}s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg))"
bench_ok=1
