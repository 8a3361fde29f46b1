#!/usr/bin/env bash
# The public benchmark: the tunnel against a direct connection and the other ways to relay TCP,
# measured side by side in ONE run (on a shared machine whose speed swings, only ratios within
# one run mean anything). docs/BENCHMARKS.md explains every setup and test, and holds a run.
#
# Setups (SETUPS, comma separated; all by default):
#   direct           straight to the target
#   floor            two chained bench/floor_relay (blocking splice, a thread per direction): the
#                    floor for any two-hop relay
#   socat            two chained socat relays (fork per connection, TCP_NODELAY)
#   ssh              ssh -R through a private sshd (throwaway keys, the faster of two ciphers)
#   tunnel           tunnel-server + tunnel-client, no TLS, --pool 0
#   tunnel-pool      the same with --pool 16
#   tunnel-tls       token + TLS 1.3 on port B (server --tls-cert/--tls-key, client --tls
#                    --tls-pin), --pool 0
#   tunnel-tls-pool  the same with --pool 16
#   (a client without --pool: the pool setups are reported as n/a)
# Tests (TESTS, comma separated; all by default), each on every setup back to back, the order of
# the setups rotated each round, ROUNDS rounds; median [min-max] of the rounds, and the ratio of the
# medians to direct and to floor:
#   iperf     iperf3 single stream each way and 4 streams, with the relay's CPU seconds per GB
#   pingpong  bench/pingpong, 1 byte and 1 KiB, p50/p99/p99.9
#   connrate  bench/connrate against bench/echo: new connections/s, time to first byte p50/p99,
#             1 and 32 workers
#   wrk       wrk against a private nginx serving a 1 KiB file: requests/s, latency p50/p99
#   idle      IDLE_N idle connections held by bench/hold: the relay's RSS and the system's
#             MemAvailable per connection, and the time to open them
#   wan       time to first byte across an emulated WAN (two network namespaces, TAP devices,
#             bench/wan_delay), in round trips, for a client-speaks-first (echo) and a
#             server-speaks-first (banner) service
#
# Usage: bench/run.sh            (as root: apt-get, network namespaces, a private sshd)
# Knobs (environment):
#   QUICK=1   a smoke run: 1 round, short tests, 1,000 idle connections, results in
#             $BUILD_DIR/results instead of docs/bench
#   ROUNDS=3 IPERF_SECONDS=5 PP_COUNT=10000 PP_WARMUP=1000 CONN_SECONDS=4 WRK_SECONDS=5
#   WRK_CONNS=32 IDLE_N=9000 IDLE_N_FLOOR=3000 IDLE_N_SOCAT=1000 WAN_DELAY_MS=10 WAN_COUNT=20
#   POOL_N=16 TESTS=... SETUPS=... BUILD_DIR=build/bench OUT_DIR=docs/bench
#   TUNNEL_PRELOAD=LIB   for experiments: LD_PRELOAD=LIB under tunnel-server and tunnel-client;
#                        TUNNEL_PRELOAD=nodelay builds and uses bench/nodelay_preload.cpp
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

QUICK=${QUICK:-0}
if ((QUICK)); then
  ROUNDS=${ROUNDS:-1} IPERF_SECONDS=${IPERF_SECONDS:-2} PP_COUNT=${PP_COUNT:-2000}
  PP_WARMUP=${PP_WARMUP:-200} CONN_SECONDS=${CONN_SECONDS:-2} WRK_SECONDS=${WRK_SECONDS:-2}
  IDLE_N=${IDLE_N:-1000} IDLE_N_FLOOR=${IDLE_N_FLOOR:-500} IDLE_N_SOCAT=${IDLE_N_SOCAT:-200}
  WAN_COUNT=${WAN_COUNT:-5}
fi
ROUNDS=${ROUNDS:-3}
IPERF_SECONDS=${IPERF_SECONDS:-5}
PP_COUNT=${PP_COUNT:-10000}
PP_WARMUP=${PP_WARMUP:-1000}
CONN_SECONDS=${CONN_SECONDS:-4}
WRK_SECONDS=${WRK_SECONDS:-5}
WRK_CONNS=${WRK_CONNS:-32}
# The hard descriptor limit here is 20,000: the tunnel's daemons hold 2 per connection, so 9,000
# is the most. floor_relay holds 6 (2 sockets, 2 pipes) and socat forks 2 processes per connection.
IDLE_N=${IDLE_N:-9000}
IDLE_N_FLOOR=${IDLE_N_FLOOR:-3000}
IDLE_N_SOCAT=${IDLE_N_SOCAT:-1000}
WAN_DELAY_MS=${WAN_DELAY_MS:-10}
WAN_COUNT=${WAN_COUNT:-20}
POOL_N=${POOL_N:-16}
TUNNEL_PRELOAD=${TUNNEL_PRELOAD:-}
TESTS=${TESTS:-iperf,pingpong,connrate,wrk,idle,wan}
SETUPS=${SETUPS:-direct,floor,socat,ssh,tunnel,tunnel-pool,tunnel-tls,tunnel-tls-pool}
BUILD_DIR=${BUILD_DIR:-$repo_root/build/bench}
if ((QUICK)); then OUT_DIR=${OUT_DIR:-$BUILD_DIR/results}; else OUT_DIR=${OUT_DIR:-$repo_root/docs/bench}; fi

all_setups=(direct floor socat ssh tunnel tunnel-pool tunnel-tls tunnel-tls-pool)
all_tests=(iperf pingpong connrate wrk idle wan)
IFS=, read -r -a setups <<<"$SETUPS"
IFS=, read -r -a tests <<<"$TESTS"
for s in "${setups[@]}"; do [[ " ${all_setups[*]} " == *" $s "* ]] || die "unknown setup '$s' (known: ${all_setups[*]})"; done
for t in "${tests[@]}"; do [[ " ${all_tests[*]} " == *" $t "* ]] || die "unknown test '$t' (known: ${all_tests[*]})"; done
want_setup() { [[ ",$SETUPS," == *",$1,"* ]]; }
want_test() { [[ ",$TESTS," == *",$1,"* ]]; }
((EUID == 0)) || die "run as root: it installs packages, makes network namespaces and runs an sshd"

# --- what it needs ---
# COMMAND=PACKAGE pairs for ensure_packages.
# shellcheck disable=SC2191 # the = is literal on purpose
packages=(cmake=cmake g++=g++ python3=python3 ss=iproute2 ip=iproute2 openssl=openssl curl=curl
  gnuplot=gnuplot-nox)
want_test iperf && packages+=(iperf3=iperf3)
want_test wrk && packages+=(wrk=wrk /usr/sbin/nginx=nginx-light)
want_setup socat && packages+=(socat=socat)
want_setup ssh && packages+=(ssh=openssh-client /usr/sbin/sshd=openssh-server ssh-keygen=openssh-client)
ensure_packages "${packages[@]}"

build_daemons "$BUILD_DIR"
bench_init bench-run
echo "==> building the bench tools"
build_tools "$work" echo pingpong connrate hold floor_relay wan_delay
if [[ $TUNNEL_PRELOAD == nodelay ]]; then
  g++ -O2 -std=c++20 -Wall -Wextra -shared -fPIC "$bench_dir/nodelay_preload.cpp" \
    -o "$work/nodelay_preload.so" -ldl || die "cannot build bench/nodelay_preload.cpp"
  TUNNEL_PRELOAD=$work/nodelay_preload.so
fi
mkdir -p "$OUT_DIR"

has_pool=0
"$client_exe" --help 2>&1 | grep -q -- '--pool' && has_pool=1
active=() # the setups this run measures
for s in "${setups[@]}"; do
  if [[ $s == *-pool ]] && ((!has_pool)); then continue; fi
  active+=("$s")
done

echo "==> token and self-signed certificate"
(umask 077 && head -c 32 /dev/urandom | base64 >"$work/token")
"$repo_root/scripts/gen-cert.sh" --name 127.0.0.1 --name 198.18.0.1 --out "$work/tls" \
  >"$work/gen-cert.log" 2>&1 || die "gen-cert.sh failed: $(cat "$work/gen-cert.log")"
pin=$("$repo_root/scripts/gen-cert.sh" --pin-of "$work/tls/server.crt")

# --- where each setup runs: loopback, or the two sides of the emulated WAN ---
# s_ns/c_ns: the network namespace of the server side (visitor, relay entry) and of the client
# side (relay exit, target); s_addr/c_addr: the address each side listens on for the other.
s_ns="" c_ns="" s_addr=127.0.0.1 c_addr=127.0.0.1
in_ns() { # in_ns NS COMMAND...: COMMAND in that namespace, or here when NS is empty
  local ns=$1
  shift
  if [[ -n $ns ]]; then ip netns exec "$ns" "$@"; else "$@"; fi
}
# spawn NS COMMAND... &: the same in the background; exec, so that $! is COMMAND itself (ip netns
# exec execs too) and stopping $! stops it.
spawn() {
  local ns=$1
  shift
  if [[ -n $ns ]]; then exec ip netns exec "$ns" "$@"; else exec "$@"; fi
}

# --- ssh: a private sshd per relay (so that each one's CPU and memory are its own) ---
ssh_cipher=aes128-gcm@openssh.com
sshd_created_run_dir=0
if want_setup ssh; then
  mkdir -p "$work/ssh"
  ssh-keygen -q -t ed25519 -N '' -C bench-host -f "$work/ssh/host_key"
  ssh-keygen -q -t ed25519 -N '' -C bench-user -f "$work/ssh/user_key"
  cp "$work/ssh/user_key.pub" "$work/ssh/authorized_keys"
  # PermitTTY: the client asks for a terminal (-tt), which makes both ends "interactive" and
  # turn Nagle off (TCP_NODELAY); with -N they keep it on and every new forwarded connection
  # waits about 40 ms for a delayed ACK (measured: 21 conn/s instead of about 1,000).
  cat >"$work/ssh/sshd_config" <<EOF
HostKey $work/ssh/host_key
PidFile none
AuthorizedKeysFile $work/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding remote
GatewayPorts no
X11Forwarding no
PermitTTY yes
Compression no
Ciphers aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com
MaxStartups 100
LogLevel ERROR
EOF
  # sshd refuses to start without its privilege separation directory; made (and removed at the
  # end) only when the system has none. The system's sshd and its config are not touched.
  if [[ ! -d /run/sshd ]]; then
    mkdir -m 755 /run/sshd
    sshd_created_run_dir=1 # read by the cleanup hook below
    : "$sshd_created_run_dir"
  fi
fi
# Removed only when no sshd is left: another one started meanwhile would need it for every login.
late_cleanup_hooks+=('((sshd_created_run_dir)) && ! pgrep -x sshd >/dev/null && rmdir /run/sshd 2>/dev/null')

# --- the relays ---
declare -A port_of pids_of # "SETUP KEY" -> the visitor's port; the relay's root pids
relay_started=()           # root pids of every relay up, for stop_relays
starts=0                   # numbers each relay's log files: a file of an earlier start must not
                           # be taken for this one's readiness

# start_relay SETUP TARGET_PORT KEY: a relay of SETUP towards TARGET_PORT (on the client side),
# its visitor's port in port_of["SETUP KEY"] (on the server side).
start_relay() {
  local setup=$1 target=$2 key=$3
  starts=$((starts + 1))
  case $setup in
    direct)
      port_of["$setup $key"]=$target
      pids_of["$setup $key"]=""
      return 0
      ;;
    floor) start_floor "$@" ;;
    socat) start_socat "$@" ;;
    ssh) start_ssh "$@" ;;
    tunnel*) start_tunnel "$@" ;;
  esac
  # shellcheck disable=SC2206 # the pid list is words on purpose
  relay_started+=(${pids_of["$setup $key"]})
}

stop_relays() {
  stop_tree "${relay_started[@]}"
  relay_started=()
}
cleanup_hooks+=(stop_relays) # a forking relay's children are not in $pids

start_floor() {
  local setup=$1 target=$2 key=$3 name="$1-$3-$starts" hop1 hop2 p2
  spawn "$c_ns" "$work/floor_relay" "$c_addr:0" "127.0.0.1:$target" >"$work/$name-2.out" 2>&1 &
  hop2=$!
  pids+=("$hop2")
  wait_for 10 "$hop2" grep -qs '^listening' "$work/$name-2.out" || die "$name: floor_relay 2 did not start"
  p2=$(listen_port "$work/$name-2.out")
  spawn "$s_ns" "$work/floor_relay" "127.0.0.1:0" "$c_addr:$p2" >"$work/$name-1.out" 2>&1 &
  hop1=$!
  pids+=("$hop1")
  wait_for 10 "$hop1" grep -qs '^listening' "$work/$name-1.out" || die "$name: floor_relay 1 did not start"
  port_of["$setup $key"]=$(listen_port "$work/$name-1.out")
  pids_of["$setup $key"]="$hop1 $hop2"
}

start_socat() {
  local setup=$1 target=$2 key=$3 name="$1-$3-$starts" hop1 hop2 p1 p2
  pick_port p2
  pick_port p1
  spawn "$c_ns" socat "TCP4-LISTEN:$p2,bind=$c_addr,reuseaddr,fork,nodelay,backlog=4096" \
    "TCP4:127.0.0.1:$target,nodelay" >"$work/$name-2.log" 2>&1 &
  hop2=$!
  pids+=("$hop2")
  wait_for 10 "$hop2" listening "$p2" "$c_ns" || die "$name: socat 2 not listening"
  spawn "$s_ns" socat "TCP4-LISTEN:$p1,bind=127.0.0.1,reuseaddr,fork,nodelay,backlog=4096" \
    "TCP4:$c_addr:$p2,nodelay" >"$work/$name-1.log" 2>&1 &
  hop1=$!
  pids+=("$hop1")
  wait_for 10 "$hop1" listening "$p1" "$s_ns" || die "$name: socat 1 not listening"
  port_of["$setup $key"]=$p1
  pids_of["$setup $key"]="$hop1 $hop2"
}

start_ssh() {
  local setup=$1 target=$2 key=$3 name="$1-$3-$starts" sshd client ps pa
  pick_port ps
  pick_port pa
  spawn "$s_ns" /usr/sbin/sshd -D -e -f "$work/ssh/sshd_config" -o "ListenAddress=$s_addr:$ps" \
    >"$work/$name-sshd.log" 2>&1 &
  sshd=$!
  pids+=("$sshd")
  wait_for 10 "$sshd" listening "$ps" "$s_ns" || die "$name: sshd not listening (see $work/$name-sshd.log)"
  spawn "$c_ns" ssh -tt -i "$work/ssh/user_key" -p "$ps" -c "$ssh_cipher" \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
    -o ExitOnForwardFailure=yes -o LogLevel=ERROR -o ServerAliveInterval=0 \
    -R "127.0.0.1:$pa:127.0.0.1:$target" "root@$s_addr" 'sleep 1000000' \
    </dev/null >"$work/$name-ssh.log" 2>&1 &
  client=$!
  pids+=("$client")
  wait_for 15 "$client" listening "$pa" "$s_ns" || die "$name: ssh -R not forwarding (see $work/$name-ssh.log)"
  port_of["$setup $key"]=$pa
  pids_of["$setup $key"]="$sshd $client"
}

start_tunnel() {
  local setup=$1 target=$2 key=$3 name="$1-$3-$starts" attempt pa pb server client
  local sflags=(--log-level warn) cflags=(--log-level info) pre=()
  [[ -n $TUNNEL_PRELOAD ]] && pre=(env "LD_PRELOAD=$TUNNEL_PRELOAD")
  if [[ $setup == tunnel-tls* ]]; then
    sflags+=(--token-file "$work/token" --tls-cert "$work/tls/server.crt" --tls-key "$work/tls/server.key")
    cflags+=(--token-file "$work/token" --tls --tls-pin "$pin")
  fi
  if ((has_pool)); then
    if [[ $setup == *-pool ]]; then cflags+=(--pool "$POOL_N"); else cflags+=(--pool 0); fi
  fi
  for attempt in 1 2 3 4 5; do
    pick_port pa
    pick_port pb
    spawn "$s_ns" "${pre[@]}" "$server_exe" --listen-a "127.0.0.1:$pa" --listen-b "$s_addr:$pb" \
      "${sflags[@]}" >>"$work/$name-server.log" 2>&1 &
    server=$!
    pids+=("$server")
    if ! wait_for 10 "$server" in_ns "$s_ns" bash -c "ss -Hltn '( sport = :$pa )' | grep -q . && ss -Hltn '( sport = :$pb )' | grep -q ."; then
      kill -0 "$server" 2>/dev/null && die "$name: tunnel-server not listening after 10 s"
      stop_pids "$server" # a port was taken between the pick and the bind: pick others
      continue
    fi
    # --log-level info: readiness is the client's event=online line.
    spawn "$c_ns" "${pre[@]}" "$client_exe" --server "$s_addr:$pb" --target "127.0.0.1:$target" \
      "${cflags[@]}" >>"$work/$name-client.log" 2>&1 &
    client=$!
    pids+=("$client")
    wait_for 15 "$client" grep -qs 'event=online' "$work/$name-client.log" ||
      die "$name: tunnel-client not online within 15 s (see $work/$name-client.log)"
    port_of["$setup $key"]=$pa
    pids_of["$setup $key"]="$server $client"
    return 0
  done
  die "$name: tunnel-server could not bind in 5 attempts (see $work/$name-server.log)"
}

# --- results ---
declare -A results # "SETUP METRIC" -> the value of each round, space separated
record() { results["$1 $2"]+="$3 "; }
say() { printf '    %-16s %s\n' "$1" "$2"; }
relay_pids() { echo "${pids_of["$1 $2"]}"; }

# --- the targets on loopback, shared by every setup ---
iperf_port="" echo_port="" nginx_port=""
start_targets() {
  local attempt
  if want_test iperf; then
    for attempt in 1 2 3 4 5; do
      pick_port iperf_port
      iperf3 -s -B 127.0.0.1 -p "$iperf_port" >"$work/iperf3-server.log" 2>&1 &
      pids+=($!)
      wait_for 10 "${pids[-1]}" listening "$iperf_port" && break
      stop_pids "${pids[-1]}"
      ((attempt < 5)) || die "iperf3 -s did not start (see $work/iperf3-server.log)"
    done
  fi
  # bench/echo in a process of its own: it holds the target's side of the idle connections.
  "$work/echo" 0 >"$work/echo.out" 2>&1 &
  pids+=($!)
  wait_for 10 "${pids[-1]}" grep -qs '^listening' "$work/echo.out" || die "echo did not start"
  echo_port=$(listen_port "$work/echo.out")
  if want_test wrk; then
    pick_port nginx_port
    mkdir -p "$work/nginx/www" "$work/nginx/tmp"
    head -c 1024 /dev/zero | tr '\0' 'x' >"$work/nginx/www/index.html"
    cat >"$work/nginx/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx/tmp/body;
  proxy_temp_path $work/nginx/tmp/proxy;
  fastcgi_temp_path $work/nginx/tmp/fastcgi;
  uwsgi_temp_path $work/nginx/tmp/uwsgi;
  scgi_temp_path $work/nginx/tmp/scgi;
  server {
    listen 127.0.0.1:$nginx_port;
    root $work/nginx/www;
  }
}
EOF
    /usr/sbin/nginx -e "$work/nginx/error.log" -p "$work/nginx" -c "$work/nginx/nginx.conf" \
      >"$work/nginx/stdout.log" 2>&1 &
    pids+=($!)
    wait_for 10 "${pids[-1]}" listening "$nginx_port" || die "nginx did not start (see $work/nginx/error.log)"
  fi
}

# --- the tests ---
# iperf SETUP up|down|x4: throughput, and the relay's CPU per GB moved.
iperf() {
  local setup=$1 dir=$2 port flags=() before="" after out gbps bytes cpu=""
  port=${port_of["$setup iperf"]}
  [[ $dir == down ]] && flags=(-R)
  [[ $dir == x4 ]] && flags=(-P 4)
  # shellcheck disable=SC2046 # the pid list is words on purpose
  [[ $setup != direct ]] && before=$(cpu_seconds $(relay_pids "$setup" iperf))
  # The first second (slow start) is left out of the rate, but its bytes count for CPU per GB,
  # since the relay's CPU covers the whole run.
  out=$(timeout $((IPERF_SECONDS + 30)) iperf3 -c 127.0.0.1 -p "$port" -t "$IPERF_SECONDS" -O 1 \
    --connect-timeout 5000 -J "${flags[@]}" 2>&1) || die "$setup: iperf3 $dir failed: $out"
  read -r gbps bytes < <(python3 -c '
import json, sys
d = json.load(sys.stdin)
if "error" in d: sys.exit("iperf3: " + d["error"])
print("%.3f %d" % (d["end"]["sum_received"]["bits_per_second"] / 1e9,
                   sum(i["sum"]["bytes"] for i in d["intervals"])))' <<<"$out") ||
    die "$setup: cannot read iperf3's result"
  record "$setup" "iperf_$dir" "$gbps"
  if [[ $setup != direct ]]; then
    # shellcheck disable=SC2046
    after=$(cpu_seconds $(relay_pids "$setup" iperf))
    cpu=$(awk -v a="$after" -v b="$before" -v n="$bytes" 'BEGIN {printf "%.3f", (a - b) / (n / 1e9)}')
    record "$setup" "cpu_$dir" "$cpu"
  fi
  say "$setup" "iperf3 $dir $gbps Gbit/s${cpu:+  relay $cpu CPU-s/GB}"
}

# pingpong SETUP BYTES: round trips over one connection.
pingpong() {
  local setup=$1 size=$2 out p50 p99 p999 tag=pp1
  ((size > 1)) && tag=ppk
  out=$(timeout 300 "$work/pingpong" client "127.0.0.1:${port_of["$setup echo"]}" --size "$size" \
    --count "$PP_COUNT" --warmup "$PP_WARMUP" 2>&1) || die "$setup: pingpong failed: $out"
  read -r p50 p99 p999 < <(sed -n 's/.*p50_us=\([0-9.]*\) p99_us=\([0-9.]*\) p999_us=\([0-9.]*\).*/\1 \2 \3/p' <<<"$out")
  [[ -n $p50 && -n $p99 && -n $p999 ]] || die "$setup: cannot read pingpong's result: $out"
  record "$setup" "${tag}_p50" "$p50"
  record "$setup" "${tag}_p99" "$p99"
  record "$setup" "${tag}_p999" "$p999"
  say "$setup" "ping-pong ${size} B  p50 $p50 us  p99 $p99 us  p99.9 $p999 us"
}

# connrate SETUP WORKERS: new connections per second and time to first byte (1 byte echoed).
connrate() {
  local setup=$1 w=$2 out rate p50 p99 errors conns before="" after cpu=""
  # shellcheck disable=SC2046 # the pid list is words on purpose
  [[ $setup != direct ]] && before=$(cpu_seconds $(relay_pids "$setup" echo))
  out=$(timeout $((CONN_SECONDS + 60)) "$work/connrate" "127.0.0.1:${port_of["$setup echo"]}" \
    --workers "$w" --seconds "$CONN_SECONDS" --size 1 2>&1) || die "$setup: connrate failed: $out"
  rate=$(sed -n 's/.* rate_per_s=\([0-9.]*\) .*/\1/p' <<<"$out")
  p50=$(sed -n 's/.* ttfb_p50_us=\([0-9.]*\) .*/\1/p' <<<"$out")
  p99=$(sed -n 's/.* ttfb_p99_us=\([0-9.]*\) .*/\1/p' <<<"$out")
  errors=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<<"$out")
  [[ -n $rate && -n $p50 && -n $p99 && -n $errors ]] || die "$setup: cannot read connrate's result: $out"
  record "$setup" "cr${w}_rate" "$rate"
  record "$setup" "cr${w}_p50" "$p50"
  record "$setup" "cr${w}_p99" "$p99"
  record "$setup" "cr${w}_errors" "$errors"
  if [[ $setup != direct ]]; then
    # shellcheck disable=SC2046
    after=$(cpu_seconds $(relay_pids "$setup" echo))
    conns=$(sed -n 's/^conns=\([0-9]*\) .*/\1/p' <<<"$out")
    cpu=$(awk -v a="$after" -v b="$before" -v n="$conns" 'BEGIN {if (n > 0) printf "%.0f", (a - b) * 1e6 / n}')
    [[ -n $cpu ]] && record "$setup" "cr${w}_cpu" "$cpu"
  fi
  say "$setup" "connrate ${w}w $rate conn/s  ttfb p50 $p50 us  p99 $p99 us  errors $errors${cpu:+  relay $cpu CPU-us/conn}"
}

# to_us VALUE: a wrk duration (12.3us, 1.2ms, 2s) in microseconds.
to_us() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /m$/) m = 60e6; else m = 1e6
    sub(/[a-z]+$/, "", v); printf "%.1f", v * m}'
}

# wrk_test SETUP: HTTP requests per second and latency through the relay to nginx.
wrk_test() {
  local setup=$1 out rps p50 p99 errors
  out=$(timeout $((WRK_SECONDS + 60)) wrk --latency -t 2 -c "$WRK_CONNS" -d "${WRK_SECONDS}s" \
    "http://127.0.0.1:${port_of["$setup nginx"]}/" 2>&1) || die "$setup: wrk failed: $out"
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errors=$(awk '/Socket errors|Non-2xx/ {e = e $0 "; "} END {print e}' <<<"$out")
  [[ -n $rps && -n $p50 && -n $p99 ]] || die "$setup: cannot read wrk's result: $out"
  record "$setup" wrk_rps "$rps"
  record "$setup" wrk_p50 "$(to_us "$p50")"
  record "$setup" wrk_p99 "$(to_us "$p99")"
  say "$setup" "wrk $rps req/s  latency p50 $p50  p99 $p99${errors:+  $errors}"
}

# idle SETUP: N idle connections (each echoed once) through a fresh relay, held by bench/hold;
# the relay's RSS and the system's MemAvailable before and after, per connection, and the time
# to open them all.
idle() {
  local setup=$1 n=$IDLE_N rss0=0 rss1=0 mem0 mem1 hold out secs relay kib_relay="" kib_sys
  [[ $setup == floor ]] && n=$IDLE_N_FLOOR
  [[ $setup == socat ]] && n=$IDLE_N_SOCAT
  start_relay "$setup" "$echo_port" idle
  relay=$(relay_pids "$setup" idle)
  sleep 1 # a pool fills, the daemons settle
  # shellcheck disable=SC2086
  [[ -n $relay ]] && rss0=$(rss_kb $relay)
  mem0=$(mem_available_kb)
  "$work/hold" "127.0.0.1:${port_of["$setup idle"]}" "$n" --parallel 64 >"$work/hold.out" 2>&1 &
  hold=$!
  pids+=("$hold")
  wait_for 300 "$hold" grep -qs '^open' "$work/hold.out" ||
    die "$setup: hold did not open $n connections: $(cat "$work/hold.out")"
  sleep 2 # let buffers and lazily freed memory settle before reading memory
  # shellcheck disable=SC2086
  [[ -n $relay ]] && rss1=$(rss_kb $relay)
  mem1=$(mem_available_kb)
  out=$(cat "$work/hold.out")
  secs=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<"$out")
  stop_pids "$hold"
  stop_relays
  [[ -n $relay ]] && kib_relay=$(awk -v a="$rss1" -v b="$rss0" -v n="$n" 'BEGIN {printf "%.2f", (a - b) / n}')
  kib_sys=$(awk -v a="$mem0" -v b="$mem1" -v n="$n" 'BEGIN {printf "%.2f", (a - b) / n}')
  record "$setup" idle_n "$n"
  record "$setup" idle_open_s "$secs"
  record "$setup" idle_open_per_k "$(awk -v s="$secs" -v n="$n" 'BEGIN {printf "%.3f", s * 1000 / n}')"
  [[ -n $kib_relay ]] && record "$setup" idle_relay_kib "$kib_relay"
  record "$setup" idle_sys_kib "$kib_sys"
  say "$setup" "idle $n conns opened in $secs s  relay RSS ${kib_relay:--} KiB/conn  MemAvailable $kib_sys KiB/conn"
  sleep 1 # the closed connections' memory goes back before the next setup reads MemAvailable
}

# --- the emulated WAN ---
ns_a=bench-wan-a-$$ ns_b=bench-wan-b-$$ wan_echo_port="" wan_banner_port=""
wan_up=0 wan_pids=() delay_pid=""
wan_setup() {
  # 198.18.0.0/15 is set aside for benchmarking (RFC 2544); these two addresses live only in the
  # two namespaces, joined only to each other.
  ip netns add "$ns_a"
  ip netns add "$ns_b"
  wan_up=1
  "$work/wan_delay" bw-a-$$ bw-b-$$ "$WAN_DELAY_MS" >"$work/wan_delay.out" 2>&1 &
  delay_pid=$!
  pids+=("$delay_pid")
  wait_for 10 "$delay_pid" grep -qs '^ready' "$work/wan_delay.out" || die "wan_delay did not start: $(cat "$work/wan_delay.out")"
  ip link set "bw-a-$$" netns "$ns_a"
  ip link set "bw-b-$$" netns "$ns_b"
  ip -n "$ns_a" addr add 198.18.0.1/30 dev "bw-a-$$"
  ip -n "$ns_b" addr add 198.18.0.2/30 dev "bw-b-$$"
  ip -n "$ns_a" link set lo up
  ip -n "$ns_b" link set lo up
  ip -n "$ns_a" link set "bw-a-$$" up
  ip -n "$ns_b" link set "bw-b-$$" up
  # The targets, on the client side, reachable from both (direct goes across the link).
  ip netns exec "$ns_b" "$work/echo" 0 --bind 0.0.0.0 >"$work/wan-echo.out" 2>&1 &
  pids+=($!)
  wan_pids=("${pids[-1]}")
  wait_for 10 "${pids[-1]}" grep -qs '^listening' "$work/wan-echo.out" || die "WAN echo did not start"
  wan_echo_port=$(listen_port "$work/wan-echo.out")
  ip netns exec "$ns_b" "$work/echo" 0 --bind 0.0.0.0 --banner "220 bench banner" \
    >"$work/wan-banner.out" 2>&1 &
  pids+=($!)
  wan_pids+=("${pids[-1]}")
  wait_for 10 "${pids[-1]}" grep -qs '^listening' "$work/wan-banner.out" || die "WAN banner did not start"
  wan_banner_port=$(listen_port "$work/wan-banner.out")
}
wan_teardown() {
  ((wan_up)) || return 0
  stop_pids "${wan_pids[@]}" "$delay_pid"
  # Whatever is left in them (nothing, after a run that ended well) goes with them.
  { ip netns pids "$ns_a" 2>/dev/null | xargs -r kill -KILL; } 2>/dev/null || true
  { ip netns pids "$ns_b" 2>/dev/null | xargs -r kill -KILL; } 2>/dev/null || true
  ip netns del "$ns_a" 2>/dev/null || true
  ip netns del "$ns_b" 2>/dev/null || true
  wan_up=0
}
late_cleanup_hooks+=(wan_teardown)

# wan_ttfb NETNS HOST:PORT MODE COUNT: "p50_us" of COUNT sequential connections (MODE: echo,
# banner, connect).
wan_ttfb() {
  local flags=(--count "$4" --size 1) out p50
  [[ $3 == banner ]] && flags+=(--banner)
  [[ $3 == connect ]] && flags+=(--connect-only)
  out=$(timeout 120 ip netns exec "$1" "$work/connrate" "$2" "${flags[@]}" 2>&1) || die "WAN connrate $2 $3: $out"
  p50=$(sed -n 's/.* ttfb_p50_us=\([0-9.]*\) .*/\1/p' <<<"$out")
  [[ -n $p50 ]] || die "WAN connrate $2 $3: $out"
  echo "$p50"
}

wan_round() {
  local order=("$@") setup rtt host e b e_rtt b_rtt
  rtt=$(wan_ttfb "$ns_a" "198.18.0.2:$wan_echo_port" connect "$WAN_COUNT")
  record wan rtt_us "$rtt"
  say "link" "TCP connect across the link (1 RTT): p50 $rtt us"
  s_ns=$ns_a c_ns=$ns_b s_addr=198.18.0.1 c_addr=198.18.0.2
  for setup in "${order[@]}"; do
    start_relay "$setup" "$wan_echo_port" wecho
    start_relay "$setup" "$wan_banner_port" wbanner
    if [[ $setup == direct ]]; then
      host=198.18.0.2
    else
      host=127.0.0.1
      sleep 1 # a pool fills before the first visitor
    fi
    # A first connection each, not counted: any set-up left (first TLS ticket, ARP) is paid there.
    wan_ttfb "$ns_a" "$host:${port_of["$setup wecho"]}" echo 2 >/dev/null
    wan_ttfb "$ns_a" "$host:${port_of["$setup wbanner"]}" banner 2 >/dev/null
    e=$(wan_ttfb "$ns_a" "$host:${port_of["$setup wecho"]}" echo "$WAN_COUNT")
    b=$(wan_ttfb "$ns_a" "$host:${port_of["$setup wbanner"]}" banner "$WAN_COUNT")
    e_rtt=$(awk -v t="$e" -v r="$rtt" 'BEGIN {printf "%.3f", t / r}')
    b_rtt=$(awk -v t="$b" -v r="$rtt" 'BEGIN {printf "%.3f", t / r}')
    record "$setup" wan_echo_us "$e"
    record "$setup" wan_banner_us "$b"
    record "$setup" wan_echo_rtt "$e_rtt"
    record "$setup" wan_banner_rtt "$b_rtt"
    say "$setup" "WAN first byte: client speaks first $e us = $e_rtt RTT, server speaks first $b us = $b_rtt RTT"
    stop_relays
  done
  s_ns="" c_ns="" s_addr=127.0.0.1 c_addr=127.0.0.1
}

# --- ssh: which cipher is faster here ---
pick_ssh_cipher() {
  local cipher best="" best_gbps=0 out gbps
  for cipher in aes128-gcm@openssh.com chacha20-poly1305@openssh.com; do
    ssh_cipher=$cipher
    start_relay ssh "$iperf_port" cipher
    out=$(timeout 60 iperf3 -c 127.0.0.1 -p "${port_of["ssh cipher"]}" -t 3 -O 1 -J 2>&1) ||
      die "ssh $cipher: iperf3 failed: $out"
    gbps=$(python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))' <<<"$out")
    stop_relays
    say ssh "cipher $cipher: iperf3 up $gbps Gbit/s"
    if awk -v a="$gbps" -v b="$best_gbps" 'BEGIN {exit !(a > b)}'; then
      best=$cipher
      best_gbps=$gbps
    fi
  done
  ssh_cipher=$best
  echo "    ssh -R uses $ssh_cipher"
}

# --- the run ---
start_targets
echo "==> machine: $(machine_line)"
echo "==> $(iperf3 --version 2>/dev/null | head -1 || true); $(socat -V 2>/dev/null | sed -n 's/^socat version \([^ ]*\).*/socat \1/p' || true); $(ssh -V 2>&1); nginx $(/usr/sbin/nginx -v 2>&1 | sed 's/.*nginx\///'); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2 || true); $(openssl version)"
if git -C "$repo_root" rev-parse --git-dir >/dev/null 2>&1; then
  source_note="commit $(git -C "$repo_root" rev-parse --short HEAD)$(git -C "$repo_root" diff --quiet HEAD -- libtunnel server client || echo ', with uncommitted changes')"
else
  source_note="$repo_root is not a git tree"
fi
echo "==> daemons: $server_exe, $client_exe ($source_note)"
[[ -n $TUNNEL_PRELOAD ]] && echo "==> the daemons run with LD_PRELOAD=$TUNNEL_PRELOAD"
if ((has_pool)); then
  echo "==> tunnel-client has --pool: pool off is --pool 0, pool on is --pool $POOL_N"
else
  echo "==> tunnel-client has no --pool flag: the pool setups are n/a"
fi
echo "==> setups: ${active[*]}; tests: ${tests[*]}; $ROUNDS rounds"
echo "==> load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
loads=()
want_setup ssh && [[ " ${active[*]} " == *" ssh "* ]] && want_test iperf && pick_ssh_cipher

loopback_tests=()
for t in iperf pingpong connrate wrk; do want_test "$t" && loopback_tests+=("$t"); done
n=${#active[@]}
for ((round = 0; round < ROUNDS; round++)); do
  # Rotate the order each round, so that no setup always runs first or right after another.
  order=("${active[@]:round%n}" "${active[@]:0:round%n}")
  loads+=("$(cut -d' ' -f1 /proc/loadavg)")
  echo "--- round $((round + 1)): ${order[*]} (load ${loads[-1]})"
  if ((${#loopback_tests[@]})); then
    for setup in "${order[@]}"; do
      want_test iperf && start_relay "$setup" "$iperf_port" iperf
      start_relay "$setup" "$echo_port" echo
      want_test wrk && start_relay "$setup" "$nginx_port" nginx
    done
    sleep 1 # pools fill
    if want_test iperf; then
      for dir in up down x4; do for setup in "${order[@]}"; do iperf "$setup" "$dir"; done; done
    fi
    if want_test pingpong; then
      for size in 1 1024; do for setup in "${order[@]}"; do pingpong "$setup" "$size"; done; done
    fi
    if want_test connrate; then
      for w in 1 32; do for setup in "${order[@]}"; do connrate "$setup" "$w"; done; done
    fi
    if want_test wrk; then
      for setup in "${order[@]}"; do wrk_test "$setup"; done
    fi
    stop_relays
  fi
  if want_test idle; then
    for setup in "${order[@]}"; do idle "$setup"; done
  fi
  if want_test wan; then
    ((wan_up)) || wan_setup
    wan_round "${order[@]}"
  fi
done
wan_teardown
loads+=("$(cut -d' ' -f1 /proc/loadavg)")

# --- the tables ---
metrics=(iperf_up iperf_down iperf_x4 cpu_up cpu_down cpu_x4
  pp1_p50 pp1_p99 pp1_p999 ppk_p50 ppk_p99 ppk_p999
  cr1_rate cr1_p50 cr1_p99 cr1_cpu cr32_rate cr32_p50 cr32_p99 cr32_cpu
  wrk_rps wrk_p50 wrk_p99
  idle_n idle_open_s idle_open_per_k idle_relay_kib idle_sys_kib
  wan_echo_rtt wan_banner_rtt wan_echo_us wan_banner_us)
declare -A label=(
  [iperf_up]="iperf3 1 stream visitor->target, Gbit/s (higher is better)"
  [iperf_down]="iperf3 1 stream target->visitor, Gbit/s (higher is better)"
  [iperf_x4]="iperf3 4 streams visitor->target, Gbit/s (higher is better)"
  [cpu_up]="relay CPU-s per GB, 1 stream visitor->target (lower is better)"
  [cpu_down]="relay CPU-s per GB, 1 stream target->visitor (lower is better)"
  [cpu_x4]="relay CPU-s per GB, 4 streams (lower is better)"
  [pp1_p50]="ping-pong 1 B p50, us" [pp1_p99]="ping-pong 1 B p99, us" [pp1_p999]="ping-pong 1 B p99.9, us"
  [ppk_p50]="ping-pong 1 KiB p50, us" [ppk_p99]="ping-pong 1 KiB p99, us" [ppk_p999]="ping-pong 1 KiB p99.9, us"
  [cr1_rate]="new connections/s, 1 worker (higher is better)"
  [cr1_p50]="time to first byte p50, 1 worker, us" [cr1_p99]="time to first byte p99, 1 worker, us"
  [cr32_rate]="new connections/s, 32 workers (higher is better)"
  [cr32_p50]="time to first byte p50, 32 workers, us" [cr32_p99]="time to first byte p99, 32 workers, us"
  [cr1_cpu]="relay CPU-us per new connection, 1 worker" [cr32_cpu]="relay CPU-us per new connection, 32 workers"
  [wrk_rps]="wrk requests/s, $WRK_CONNS connections (higher is better)"
  [wrk_p50]="wrk latency p50, us" [wrk_p99]="wrk latency p99, us"
  [idle_n]="idle: connections held"
  [idle_open_s]="idle: seconds to open them all"
  [idle_open_per_k]="idle: seconds per 1,000 opened"
  [idle_relay_kib]="idle: relay RSS per connection, KiB"
  [idle_sys_kib]="idle: MemAvailable per connection, KiB"
  [wan_echo_rtt]="WAN first byte, client speaks first, in RTTs"
  [wan_banner_rtt]="WAN first byte, server speaks first, in RTTs"
  [wan_echo_us]="WAN first byte, client speaks first, us"
  [wan_banner_us]="WAN first byte, server speaks first, us"
)
declare -A format=([iperf_up]=%.2f [iperf_down]=%.2f [iperf_x4]=%.2f [cpu_up]=%.2f [cpu_down]=%.2f
  [cpu_x4]=%.2f [pp1_p50]=%.1f [pp1_p99]=%.1f [pp1_p999]=%.1f [ppk_p50]=%.1f [ppk_p99]=%.1f
  [ppk_p999]=%.1f [cr1_rate]=%.0f [cr1_p50]=%.0f [cr1_p99]=%.0f [cr32_rate]=%.0f [cr32_p50]=%.0f
  [cr32_p99]=%.0f [cr1_cpu]=%.0f [cr32_cpu]=%.0f [wrk_rps]=%.0f [wrk_p50]=%.0f [wrk_p99]=%.0f [idle_n]=%.0f [idle_open_s]=%.2f
  [idle_open_per_k]=%.3f [idle_relay_kib]=%.2f [idle_sys_kib]=%.2f [wan_echo_rtt]=%.2f
  [wan_banner_rtt]=%.2f [wan_echo_us]=%.0f [wan_banner_us]=%.0f)

declare -A med
tsv=$OUT_DIR/results.tsv
table=$OUT_DIR/results.txt
{
  echo "==> median [min-max] of $ROUNDS rounds; /direct and /floor: the ratio of the medians to those"
  echo "    of direct and floor in this run (n/a: not measured in this run)"
  for m in "${metrics[@]}"; do
    any=0
    for setup in "${setups[@]}"; do [[ -n ${results["$setup $m"]:-} ]] && any=1; done
    ((any)) || continue
    echo
    printf '%s\n' "${label[$m]}"
    for setup in "${setups[@]}"; do
      if [[ -n ${results["$setup $m"]:-} ]]; then
        # shellcheck disable=SC2086 # the stored values are space-separated on purpose
        read -r md lo hi < <(stats "${format[$m]}" ${results["$setup $m"]})
        med["$setup $m"]=$md
        printf '    %-16s %26s\n' "$setup" "$md [$lo-$hi]"
      else
        printf '    %-16s %26s\n' "$setup" "n/a"
      fi
    done
  done
} >"$table.tmp"
# Ratios need every median first: a second pass adds the two columns.
{
  current=""
  while IFS= read -r line; do
    if [[ $line =~ ^\ \ \ \ ([a-z-]+)\ +(.*)$ && -n $current ]]; then
      setup=${BASH_REMATCH[1]}
      value=${med["$setup $current"]:-}
      if [[ $current == idle_n ]]; then
        printf '%s %8s %8s\n' "$line" - -
      else
        printf '%s %8s %8s\n' "$line" "$(ratio "$value" "${med["direct $current"]:-}")" \
          "$(ratio "$value" "${med["floor $current"]:-}")"
      fi
    else
      for m in "${metrics[@]}"; do [[ $line == "${label[$m]}" ]] && current=$m; done
      if [[ -n $current && $line == "${label[$current]}" ]]; then
        printf '%-47s %8s %8s\n' "$line" /direct /floor
      else
        echo "$line"
      fi
    fi
  done <"$table.tmp"
} >"$table"
rm -f "$table.tmp"
if [[ -n ${results["wan rtt_us"]:-} ]]; then
  # shellcheck disable=SC2086
  read -r md lo hi < <(stats %.0f ${results["wan rtt_us"]})
  wan_rtt_line="WAN: ${WAN_DELAY_MS} ms each way; RTT measured as a TCP connect across the link, p50 of $WAN_COUNT, each round: median $md us [$lo-$hi]"
  echo "$wan_rtt_line" >>"$table"
fi

# The results as a table for plot.sh: metric setup median min max ratio_direct ratio_floor.
{
  printf 'metric\tsetup\tmedian\tmin\tmax\tratio_direct\tratio_floor\n'
  for m in "${metrics[@]}"; do
    for setup in "${setups[@]}"; do
      if [[ -n ${results["$setup $m"]:-} ]]; then
        # shellcheck disable=SC2086
        read -r md lo hi < <(stats "${format[$m]}" ${results["$setup $m"]})
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$m" "$setup" "$md" "$lo" "$hi" \
          "$(ratio "$md" "${med["direct $m"]:-}")" "$(ratio "$md" "${med["floor $m"]:-}")"
      else
        printf '%s\t%s\tn/a\tn/a\tn/a\t-\t-\n' "$m" "$setup"
      fi
    done
  done
} >"$tsv"

# --- the targets of issue 9, checked against this run's medians ---
# check DESCRIPTION VALUE OP LIMIT: prints the line; VALUE empty: not measured.
targets=$OUT_DIR/targets.txt
check() {
  local what=$1 value=$2 op=$3 limit=$4 verdict
  if [[ -z $value || $value == - ]]; then
    verdict="n/a (not measured)"
    value="-"
  elif awk -v v="$value" -v l="$limit" -v o="$op" 'BEGIN {exit !((o == "<=") ? v <= l : v >= l)}'; then
    verdict=met
  else
    verdict="NOT met"
  fi
  printf '    %-62s %8s %s %-5s %s\n' "$what" "$value" "$op" "$limit" "$verdict"
}
r() { ratio "${med["$1 $3"]:-}" "${med["$2 $3"]:-}"; } # r SETUP REFERENCE METRIC
m() { echo "${med["$1 $2"]:-}"; }
{
  echo "==> the targets of issue 9 (ratios of this run's medians)"
  for t in tunnel tunnel-pool; do
    check "$t: iperf3 visitor->target / floor" "$(r "$t" floor iperf_up)" ">=" 0.95
    check "$t: iperf3 target->visitor / floor" "$(r "$t" floor iperf_down)" ">=" 0.95
  done
  for t in tunnel-tls tunnel-tls-pool; do
    plain=${t/-tls/}
    check "$t: iperf3 visitor->target / ssh" "$(r "$t" ssh iperf_up)" ">=" 1.5
    check "$t: iperf3 target->visitor / ssh" "$(r "$t" ssh iperf_down)" ">=" 1.5
    check "$t: iperf3 visitor->target / $plain" "$(r "$t" "$plain" iperf_up)" ">=" 0.6
    check "$t: iperf3 target->visitor / $plain" "$(r "$t" "$plain" iperf_down)" ">=" 0.6
  done
  for t in tunnel tunnel-pool; do
    check "$t: ping-pong 1 B p50 / floor" "$(r "$t" floor pp1_p50)" "<=" 1.05
    check "$t: ping-pong 1 B p99.9 / floor" "$(r "$t" floor pp1_p999)" "<=" 1.5
    check "$t: ping-pong 1 KiB p50 / floor" "$(r "$t" floor ppk_p50)" "<=" 1.05
    check "$t: ping-pong 1 KiB p99.9 / floor" "$(r "$t" floor ppk_p999)" "<=" 1.5
  done
  for t in tunnel-tls tunnel-tls-pool; do
    check "$t: ping-pong 1 B p50 / ${t/-tls/}" "$(r "$t" "${t/-tls/}" pp1_p50)" "<=" 1.2
  done
  check "tunnel-pool: WAN client-speaks-first first byte, RTTs" "$(m tunnel-pool wan_echo_rtt)" "<=" 1.1
  check "tunnel-tls-pool: WAN client-speaks-first first byte, RTTs" "$(m tunnel-tls-pool wan_echo_rtt)" "<=" 1.1
  check "tunnel: WAN client-speaks-first first byte, RTTs" "$(m tunnel wan_echo_rtt)" "<=" 3.1
  check "tunnel-tls: WAN client-speaks-first first byte, RTTs" "$(m tunnel-tls wan_echo_rtt)" "<=" 3.1
  check "tunnel-pool: new connections/s, 32 workers / direct" "$(r tunnel-pool direct cr32_rate)" ">=" 0.5
  check "tunnel-pool: time to first byte p50, 1 worker / direct" "$(r tunnel-pool direct cr1_p50)" "<=" 2
  check "tunnel-tls-pool: new connections/s, 32 workers / direct" "$(r tunnel-tls-pool direct cr32_rate)" ">=" 0.4
  for t in tunnel tunnel-pool; do
    check "$t: idle, daemons' RSS per connection, KiB" "$(m "$t" idle_relay_kib)" "<=" 1.5
    check "$t: idle, MemAvailable per connection, KiB" "$(m "$t" idle_sys_kib)" "<=" 25
  done
  ((has_pool)) || echo "    (the pool setups are n/a: this tunnel-client has no --pool flag)"
} >"$targets"

echo
cat "$table"
echo
cat "$targets"
echo
echo "==> charts"
"$bench_dir/plot.sh" "$tsv" "$OUT_DIR" || echo "    (plot.sh failed: the tables above stand)"
echo
echo "(whole run: ${SECONDS}s; load average at the start of each round and at the end: ${loads[*]}; now $(cut -d' ' -f1-3 /proc/loadavg))"
echo "(tables: $table, $targets, $tsv)"
bench_ok=1
