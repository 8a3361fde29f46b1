#!/usr/bin/env bash
# Does the relay's per-connection cost grow with the number of services and clients? Measured in
# ONE run: on a shared machine whose speed swings, only ratios within one run mean anything. Two
# setups, token auth on in both, so that they differ only in scale; each test runs on both back
# to back, over ROUNDS rounds (the order alternates each round, both setups are started afresh):
#   small  a server with 1 service (`bench`) and 1 named client (c000) serving it;
#   large  a server with SERVICES services (`bench` plus SERVICES-1 others, each on its own
#          127.0.0.1:0 port) and CLIENTS named clients, each with its own token file: c000 serves
#          `bench`, the other CLIENTS-1 share the other services (about 10 each, with one shared
#          echo as their target). Every client is online and every service served before measuring
#          (the server's tunnel_clients_online and tunnel_service_clients_serving).
# Tests, all through `bench`: iperf3 single stream each way (with the CPU seconds per GB of the
# server and c000), 1-byte ping-pong p50/p99 (bench/pingpong), new connections per second with 1
# and 8 workers (bench/connrate against bench/echo). c000 serves `bench` with iperf3 as its target
# for the iperf3 tests, then is restarted with bench/echo as the target for the others (the
# server, with its scale, keeps running). Also recorded: the servers' RSS and fd count (from
# /proc), the time from the large server's launch to its event=ready line, and what the server
# does with a config of 2048 services (the bound) and of 10,000 (--check-config, then a start).
#
# Usage: bench/services-scale.sh
# Knobs (environment): ROUNDS=3 IPERF_SECONDS=5 PP_COUNT=20000 PP_WARMUP=2000 CONN_SECONDS=5
#   SERVICES=1000 CLIENTS=100 (the large setup)
#   BUILD_DIR=  empty: `cmake --preset release` into build/release; set: a build directory of
#               its own (RelWithDebInfo, daemons only), for a tree where build/release is shared.
# Needs cmake, g++, python3, curl, ss; installs iperf3 if it is missing.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

ROUNDS=${ROUNDS:-3}
IPERF_SECONDS=${IPERF_SECONDS:-5}
PP_COUNT=${PP_COUNT:-20000}
PP_WARMUP=${PP_WARMUP:-2000}
CONN_SECONDS=${CONN_SECONDS:-5}
SERVICES=${SERVICES:-1000}
CLIENTS=${CLIENTS:-100}
BUILD_DIR=${BUILD_DIR:-}

((SERVICES >= 2 && CLIENTS >= 2 && SERVICES - 1 >= CLIENTS - 1)) ||
  die "SERVICES >= CLIENTS >= 2, so that each of the other clients serves at least one service"

need_tools cmake g++ python3 curl ss
build_daemons "$BUILD_DIR"
ensure_packages iperf3=iperf3
bench_init services-scale

# new_token FILE: 256 random bits, mode 600 (the daemons refuse a token file others can read).
new_token() { (umask 077 && head -c 32 /dev/urandom | base64 >"$1"); }

echo "==> building the bench tools"
build_tools "$work" pingpong connrate echo

# --- the targets, shared by both setups ---
iperf_port=
for attempt in 1 2 3 4 5; do
  pick_port iperf_port
  iperf3 -s -B 127.0.0.1 -p "$iperf_port" >"$work/iperf3-server.log" 2>&1 &
  pids+=($!)
  wait_for 10 "${pids[-1]}" listening "$iperf_port" && break
  stop_pids "${pids[-1]}"
  ((attempt < 5)) || die "iperf3 -s did not start (see $work/iperf3-server.log)"
done
# start_echo VAR NAME: a bench/echo on a free port, its port in VAR.
start_echo() {
  "$work/echo" 0 >"$work/$2.out" 2>&1 &
  pids+=($!)
  wait_for 10 "${pids[-1]}" grep -q '^listening port=' "$work/$2.out" || die "$2 did not start"
  printf -v "$1" '%s' "$(sed -n 's/^listening port=//p' "$work/$2.out")"
}
echo_port='' other_port='' # set by start_echo
start_echo echo_port echo          # the measured target
start_echo other_port echo-others # the target of the other services, idle during the tests

# --- the configs ---
# Tokens: one per client name, the same files for both setups (c000 is in both).
mkdir -p "$work/tokens"
for ((c = 0; c < CLIENTS; c++)); do new_token "$work/tokens/c$(printf %03d "$c").token"; done
# The other services are svc0001.. and svcNNNN is served by client c(1 + (NNNN-1) % (CLIENTS-1)),
# so that each of the other clients serves about (SERVICES-1)/(CLIENTS-1) of them.
other_name() { printf 'svc%04d' "$1"; }
server_of() { printf 'c%03d' $((1 + ($1 - 1) % (CLIENTS - 1))); }
declare -A served_by # client name -> its --service flags, space separated
for ((s = 1; s < SERVICES; s++)); do
  served_by[$(server_of "$s")]+="--service $(other_name "$s")=127.0.0.1:$other_port "
done

# write_config FILE N_SERVICES N_CLIENTS: the clients c000.. with their token files, `bench`
# (served by c000 only), and each other service, served only by its one client.
write_config() {
  local file=$1 n_services=$2 n_clients=$3 c s
  {
    echo "# bench/services-scale.sh: $n_services services, $n_clients clients"
    for ((c = 0; c < n_clients; c++)); do
      printf '[client.c%03d]\ntoken-file = "%s/tokens/c%03d.token"\n\n' "$c" "$work" "$c"
    done
    printf '[service.bench]\nlisten = "127.0.0.1:0"\nclients = ["c000"]\n\n'
    for ((s = 1; s < n_services; s++)); do
      printf '[service.%s]\nlisten = "127.0.0.1:0"\nclients = ["%s"]\n\n' "$(other_name "$s")" \
        "$(server_of "$s")"
    done
  } >"$file"
}
write_config "$work/small.conf" 1 1
write_config "$work/large.conf" "$SERVICES" "$CLIENTS"

# kb_of PID FIELD: VmRSS or VmHWM of the process, in kB.
kb_of() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
fds_of() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
# log_seconds LINE: the daemon log line's timestamp (UTC, ms) as seconds since the epoch.
log_seconds() { date -d "$(cut -d' ' -f1 <<<"$1")" +%s.%N; }

declare -A results # "SETUP METRIC" -> the value of each round, space separated
record() { results["$1 $2"]+="$3 "; }
declare -A server_pid metrics_port b_port bench_port c000_pid others_pids

# metrics SETUP: the server's /metrics page.
metrics() { curl -fsS --max-time 10 "http://127.0.0.1:${metrics_port[$1]}/metrics"; }
# all_online SETUP N: N clients online and every service served by at least one session.
all_online() {
  metrics "$1" 2>/dev/null | awk -v n="$2" -v services="$3" '
    /^tunnel_clients_online / {online = $2}
    /^tunnel_service_clients_serving\{/ && $2 > 0 {served++}
    END {exit !(online == n && served == services)}'
}

# start_server SETUP: the server of SETUP with its config; fills server_pid, b_port,
# metrics_port, bench_port, and records the time from launch to event=ready.
start_server() {
  local setup=$1 attempt pb pm pid log launched ready
  for attempt in 1 2 3 4 5; do
    pick_port pb
    pick_port pm
    log=$work/$setup-server-$round.log
    : >"$log"
    launched=$(date +%s.%N)
    # --log-level info for the listening and ready lines; nothing is logged per connection that
    # succeeds at info, in either setup.
    "$server_exe" --config "$work/$setup.conf" --listen-b "127.0.0.1:$pb" \
      --metrics-listen "127.0.0.1:$pm" --log-level info >>"$log" 2>&1 &
    pid=$!
    pids+=("$pid")
    if ! wait_for 60 "$pid" grep -q 'event=ready' "$log"; then
      kill -0 "$pid" 2>/dev/null && die "$setup: tunnel-server not ready after 60 s (see $log)"
      grep -q 'in use' "$log" || die "$setup: tunnel-server exited: $(tail -3 "$log")"
      stop_pids "$pid" # a port was taken between the pick and the bind: pick others
      continue
    fi
    ready=$(log_seconds "$(grep -m1 'event=ready' "$log")")
    record "$setup" start_ms "$(awk -v r="$ready" -v l="$launched" 'BEGIN {printf "%.0f", (r - l) * 1000}')"
    server_pid[$setup]=$pid
    b_port[$setup]=$pb
    metrics_port[$setup]=$pm
    bench_port[$setup]=$(sed -n 's/.*event=listening side=a addr=127\.0\.0\.1:\([0-9]*\) service=bench$/\1/p' "$log")
    [[ -n ${bench_port[$setup]} ]] || die "$setup: no listening line for bench in $log"
    return 0
  done
  die "$setup: tunnel-server could not bind in 5 attempts"
}

# start_client SETUP NAME LOG FLAGS...: a named client of SETUP's server; its pid in last_pid
# (not printed: a command substitution would start it in a subshell, out of reach of `wait`).
last_pid=
start_client() {
  local setup=$1 name=$2 log=$3
  shift 3
  "$client_exe" --server "127.0.0.1:${b_port[$setup]}" --name "$name" \
    --token-file "$work/tokens/$name.token" --log-level info "$@" >>"$log" 2>&1 &
  last_pid=$!
  pids+=("$last_pid")
}

# start_bench_client SETUP TARGET_PORT KIND: (re)starts c000 serving `bench` towards TARGET_PORT,
# and waits until the server has answered SERVING.
start_bench_client() {
  local setup=$1 target=$2 kind=$3 log
  log=$work/$setup-c000-$kind-$round.log
  if [[ -n ${c000_pid[$setup]:-} ]]; then stop_pids "${c000_pid[$setup]}"; fi
  start_client "$setup" c000 "$log" --service "bench=127.0.0.1:$target"
  c000_pid[$setup]=$last_pid
  wait_for 20 "${c000_pid[$setup]}" grep -q 'event=service-serving service=bench' "$log" ||
    die "$setup: c000 not serving bench within 20 s (see $log)"
}

# start_setup SETUP: its server, c000 towards iperf3, and (large) the other clients; waits until
# every client is online and every service served, then records the server's RSS and fds.
start_setup() {
  local setup=$1 c name n=1 services=1 t0
  start_server "$setup"
  c000_pid[$setup]=
  start_bench_client "$setup" "$iperf_port" iperf
  others_pids[$setup]=
  if [[ $setup == large ]]; then
    n=$CLIENTS
    services=$SERVICES
    for ((c = 1; c < CLIENTS; c++)); do
      name=c$(printf %03d "$c")
      # shellcheck disable=SC2086 # the --service flags are words on purpose
      start_client "$setup" "$name" "$work/$setup-$name-$round.log" ${served_by[$name]}
      others_pids[$setup]+="$last_pid "
    done
  fi
  t0=$SECONDS
  wait_for 120 "${server_pid[$setup]}" all_online "$setup" "$n" "$services" ||
    die "$setup: not all $n clients online and $services services served within 120 s"
  echo "    $setup: server ready in $(results_last "$setup" start_ms) ms after launch," \
    "$n clients online and $services services served $((SECONDS - t0)) s after that"
  record "$setup" rss_idle "$(kb_of "${server_pid[$setup]}" VmRSS)"
  record "$setup" fds "$(fds_of "${server_pid[$setup]}")"
}
results_last() {
  local v
  read -r -a v <<<"${results["$1 $2"]}"
  echo "${v[-1]}"
}

# iperf SETUP up|down: throughput, and the server's + c000's CPU per GB moved.
iperf() {
  local setup=$1 dir=$2 flags=() before after out gbps bytes cpu
  [[ $dir == down ]] && flags=(-R)
  before=$(cpu_seconds "${server_pid[$setup]}" "${c000_pid[$setup]}")
  # The first second (slow start) is left out of the rate, but its bytes count for CPU per GB,
  # since the daemons' CPU covers the whole run.
  out=$(timeout $((IPERF_SECONDS + 30)) iperf3 -c 127.0.0.1 -p "${bench_port[$setup]}" \
    -t "$IPERF_SECONDS" -O 1 --connect-timeout 5000 -J "${flags[@]}" 2>&1) ||
    die "$setup: iperf3 $dir failed: $out"
  read -r gbps bytes < <(python3 -c '
import json, sys
d = json.load(sys.stdin)
if "error" in d: sys.exit("iperf3: " + d["error"])
print("%.3f %d" % (d["end"]["sum_received"]["bits_per_second"] / 1e9,
                   sum(i["sum"]["bytes"] for i in d["intervals"])))' <<<"$out") ||
    die "$setup: cannot read iperf3's result"
  after=$(cpu_seconds "${server_pid[$setup]}" "${c000_pid[$setup]}")
  cpu=$(awk -v a="$after" -v b="$before" -v n="$bytes" 'BEGIN {printf "%.3f", (a - b) / (n / 1e9)}')
  record "$setup" "$dir" "$gbps"
  record "$setup" "cpu_$dir" "$cpu"
  printf '    %-5s iperf3 %-4s %7s Gbit/s  daemons %s CPU-s/GB\n' "$setup" "$dir" "$gbps" "$cpu"
}

# pingpong SETUP: 1-byte round trips over one connection.
pingpong() {
  local setup=$1 out p50 p99
  out=$(timeout 300 "$work/pingpong" client "127.0.0.1:${bench_port[$setup]}" --size 1 \
    --count "$PP_COUNT" --warmup "$PP_WARMUP" 2>&1) || die "$setup: pingpong failed: $out"
  read -r p50 p99 < <(sed -n 's/.*p50_us=\([0-9.]*\) p99_us=\([0-9.]*\).*/\1 \2/p' <<<"$out")
  [[ -n $p50 && -n $p99 ]] || die "$setup: cannot read pingpong's result: $out"
  record "$setup" pp50 "$p50"
  record "$setup" pp99 "$p99"
  printf '    %-5s ping-pong   p50 %7s us  p99 %7s us\n' "$setup" "$p50" "$p99"
}

declare -A conn_errors
# connrate SETUP WORKERS: new connections per second, time to first byte, and the server's +
# c000's CPU per connection.
connrate() {
  local setup=$1 w=$2 out rate p50 p99 errors conns before after cpu
  before=$(cpu_seconds "${server_pid[$setup]}" "${c000_pid[$setup]}")
  out=$(timeout $((CONN_SECONDS + 60)) "$work/connrate" "127.0.0.1:${bench_port[$setup]}" \
    --workers "$w" --seconds "$CONN_SECONDS" --size 1 2>&1) || die "$setup: connrate failed: $out"
  after=$(cpu_seconds "${server_pid[$setup]}" "${c000_pid[$setup]}")
  conns=$(sed -n 's/^conns=\([0-9]*\) .*/\1/p' <<<"$out")
  rate=$(sed -n 's/.* rate_per_s=\([0-9.]*\) .*/\1/p' <<<"$out")
  p50=$(sed -n 's/.* ttfb_p50_us=\([0-9.]*\) .*/\1/p' <<<"$out")
  p99=$(sed -n 's/.* ttfb_p99_us=\([0-9.]*\) .*/\1/p' <<<"$out")
  errors=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<<"$out")
  [[ -n $conns && -n $rate && -n $p50 && -n $p99 && -n $errors ]] ||
    die "$setup: cannot read connrate's result: $out"
  cpu=$(awk -v a="$after" -v b="$before" -v n="$conns" 'BEGIN {printf "%.1f", (a - b) * 1e6 / n}')
  record "$setup" "cr${w}_rate" "$rate"
  record "$setup" "cr${w}_p50" "$p50"
  record "$setup" "cr${w}_p99" "$p99"
  record "$setup" "cr${w}_cpu" "$cpu"
  conn_errors["$setup $w"]=$((${conn_errors["$setup $w"]:-0} + errors))
  printf '    %-5s connrate %sw %6s conn/s  ttfb p50 %7s us  p99 %8s us  errors %s  daemons %s CPU-us/conn\n' \
    "$setup" "$w" "$rate" "$p50" "$p99" "$errors" "$cpu"
}

echo "==> machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)"
echo "==> daemons: $bin ($(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null || echo 'source not a git work tree'))"
echo "==> load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "==> large: $SERVICES services, $CLIENTS clients; $ROUNDS rounds; iperf3 ${IPERF_SECONDS}s each way;" \
  "ping-pong $PP_COUNT x 1 byte after $PP_WARMUP; connrate ${CONN_SECONDS}s with 1 and 8 workers"
setups=(small large)
loads=()
for ((round = 0; round < ROUNDS; round++)); do
  # Alternate the order each round, so that neither setup always runs first.
  order=("${setups[@]:round%2}" "${setups[@]:0:round%2}")
  loads+=("$(cut -d' ' -f1 /proc/loadavg)")
  echo "--- round $((round + 1)): ${order[*]} (load ${loads[-1]})"
  for setup in "${order[@]}"; do start_setup "$setup"; done
  for setup in "${order[@]}"; do iperf "$setup" up; done
  for setup in "${order[@]}"; do iperf "$setup" down; done
  for setup in "${order[@]}"; do start_bench_client "$setup" "$echo_port" echo; done
  for setup in "${order[@]}"; do pingpong "$setup"; done
  for setup in "${order[@]}"; do connrate "$setup" 1; done
  for setup in "${order[@]}"; do connrate "$setup" 8; done
  for setup in "${order[@]}"; do
    record "$setup" rss_peak "$(kb_of "${server_pid[$setup]}" VmHWM)"
    # shellcheck disable=SC2086 # the pid lists are words on purpose
    stop_pids "${server_pid[$setup]}" "${c000_pid[$setup]}" ${others_pids[$setup]}
    c000_pid[$setup]=
  done
done

# --- the bound: 2048 services and 10,000 services ---
# big_config FILE N: N services on 127.0.0.1:0, no clients (no tokens: `default` serves them all).
big_config() {
  local s
  {
    echo "# bench/services-scale.sh: $2 services"
    for ((s = 0; s < $2; s++)); do printf '[service.s%05d]\nlisten = "127.0.0.1:0"\n\n' "$s"; done
  } >"$1"
}
# try_big N: --check-config, then a start: the first lines of its refusal, or (stopped at once)
# the time from launch to event=ready, RSS and fds.
declare -A big_check big_start
try_big() {
  local n=$1 file=$work/big-$1.conf log=$work/big-$1.log pb pm rc=0 out pid launched ready
  big_config "$file" "$n"
  out=$(timeout 60 "$server_exe" --config "$file" --listen-b 127.0.0.1:0 --check-config 2>&1) ||
    rc=$?
  big_check[$n]="exit $rc: $(head -3 <<<"$out")"
  pick_port pb
  launched=$(date +%s.%N)
  "$server_exe" --config "$file" --listen-b "127.0.0.1:$pb" --log-level info >"$log" 2>&1 &
  pid=$!
  pids+=("$pid")
  if wait_for 60 "$pid" grep -q 'event=ready' "$log"; then
    ready=$(log_seconds "$(grep -m1 'event=ready' "$log")")
    big_start[$n]="ready $(awk -v r="$ready" -v l="$launched" 'BEGIN {printf "%.0f", (r - l) * 1000}') ms after launch, $(grep -c 'event=listening side=a' "$log") service ports listening, RSS $(kb_of "$pid" VmRSS) kB, $(fds_of "$pid") fds"
    stop_pids "$pid"
  elif kill -0 "$pid" 2>/dev/null; then
    big_start[$n]="neither ready nor exited after 60 s: $(tail -2 "$log")"
    stop_pids "$pid"
  else
    rc=0
    wait "$pid" || rc=$?
    stop_pids "$pid"
    big_start[$n]="exit $rc: $(grep -v 'event=started' "$log" | head -3)"
  fi
}
echo "==> the bound: 2048 and 10000 services in a config"
try_big 2048
try_big 10000

# --- the tables ---
# stats FORMAT VALUES...: "median min max"

metrics_list=(up down cpu_up cpu_down pp50 pp99 cr1_rate cr1_p50 cr1_p99 cr1_cpu cr8_rate cr8_p50
  cr8_p99 cr8_cpu start_ms rss_idle rss_peak fds)
declare -A label=(
  [up]="iperf3 A->target Gbit/s" [down]="iperf3 target->A Gbit/s"
  [cpu_up]="daemons CPU-s/GB, A->target" [cpu_down]="daemons CPU-s/GB, target->A"
  [pp50]="ping-pong p50 us" [pp99]="ping-pong p99 us"
  [cr1_rate]="connrate 1w conn/s" [cr1_p50]="connrate 1w ttfb p50 us" [cr1_p99]="connrate 1w ttfb p99 us"
  [cr1_cpu]="connrate 1w daemons CPU-us/conn"
  [cr8_rate]="connrate 8w conn/s" [cr8_p50]="connrate 8w ttfb p50 us" [cr8_p99]="connrate 8w ttfb p99 us"
  [cr8_cpu]="connrate 8w daemons CPU-us/conn"
  [start_ms]="server launch to ready, ms" [rss_idle]="server RSS all online, kB"
  [rss_peak]="server peak RSS (VmHWM), kB" [fds]="server fds all online"
)
declare -A format=([up]=%.2f [down]=%.2f [cpu_up]=%.2f [cpu_down]=%.2f [pp50]=%.1f [pp99]=%.1f
  [cr1_rate]=%.0f [cr1_p50]=%.0f [cr1_p99]=%.0f [cr1_cpu]=%.0f
  [cr8_rate]=%.0f [cr8_p50]=%.0f [cr8_p99]=%.0f [cr8_cpu]=%.0f
  [start_ms]=%.0f [rss_idle]=%.0f [rss_peak]=%.0f [fds]=%.0f)

echo
echo "==> median [min-max] of $ROUNDS rounds; large/small: the ratio of the medians, and in brackets the"
echo "    min-max of the per-round ratios (both setups measured back to back in each round)"
printf '%-34s %24s %24s %20s\n' metric small large large/small
for m in "${metrics_list[@]}"; do
  printf '%-34s' "${label[$m]}"
  declare -A md=()
  for setup in "${setups[@]}"; do
    # shellcheck disable=SC2086 # the stored values are space-separated on purpose
    read -r md[$setup] lo hi < <(stats "${format[$m]}" ${results["$setup $m"]})
    printf ' %24s' "${md[$setup]} [$lo-$hi]"
  done
  read -r -a s_vals <<<"${results["small $m"]}"
  read -r -a l_vals <<<"${results["large $m"]}"
  per_round=()
  for ((r = 0; r < ${#s_vals[@]}; r++)); do per_round+=("$(ratio "${l_vals[r]}" "${s_vals[r]}")"); done
  read -r _ lo hi < <(stats %.2f "${per_round[@]}")
  printf ' %20s\n' "$(ratio "${md[large]}" "${md[small]}") [$lo-$hi]"
done
echo
echo "==> connrate errors, all rounds: small ${conn_errors["small 1"]}/${conn_errors["small 8"]}," \
  "large ${conn_errors["large 1"]}/${conn_errors["large 8"]} (1w/8w)"
echo "==> 2048 services (the bound):"
echo "    --check-config: ${big_check[2048]}"
echo "    start:          ${big_start[2048]}"
echo "==> 10000 services:"
echo "    --check-config: ${big_check[10000]}"
echo "    start:          ${big_start[10000]}"
echo
echo "(whole run: ${SECONDS}s; load average at the start of each round: ${loads[*]}; at end: $(cut -d' ' -f1-3 /proc/loadavg))"
bench_ok=1
