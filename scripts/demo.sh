#!/usr/bin/env bash
# The first thing to run: builds tunnel (preset release), then shows it working on this machine.
# A web server stands in for the private service, tunnel-server and tunnel-client run on 127.0.0.1,
# and curl reaches the web server through port A. Everything it starts is stopped when it ends.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

say "Installing build dependencies (skipped when all are present)"
scripts/install-deps.sh

say "Building (cmake preset release)"
cmake --preset release
cmake --build --preset release -j"$(nproc)"

server_bin=$repo/build/release/server/tunnel-server
client_bin=$repo/build/release/client/tunnel-client
[[ -x $server_bin ]] || die "$server_bin was not built"
[[ -x $client_bin ]] || die "$client_bin was not built"

work=$(mktemp -d "${TMPDIR:-/tmp}/tunnel-demo.XXXXXX")
names=()     # what was started, in order
pids=()
succeeded=0

# Stops what was started, newest first: SIGTERM, then SIGKILL after 5 s. Prints the logs unless the
# demo succeeded.
cleanup() {
  local rc=$?
  set +e
  trap - INT TERM
  local i pid name code
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    name=${names[i]}
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "stopping $name: no exit 5 s after SIGTERM, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    code=$?
    if ((succeeded)); then
      if ((code > 128)); then
        echo "stopped $name (ended by SIG$(kill -l "$code"))"
      else
        echo "stopped $name (exit $code)"
      fi
    fi
  done
  if ((!succeeded)) && [[ -d $work ]]; then
    local log
    for log in "$work"/*.log; do
      [[ -e $log ]] || continue
      printf '\n--- %s ---\n' "$(basename "$log")"
      cat "$log"
    done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started() {  # name pid
  names+=("$1")
  pids+=("$2")
}

port_listening() { ss -Hltn "( sport = :$1 )" | grep -q .; }

# Prints the first port from $1 upwards that nothing listens on and that is not among $2...
pick_port() {
  local port=$1 tries taken
  shift
  for ((tries = 0; tries < 200; tries++, port++)); do
    port_listening "$port" && continue
    for taken in "$@"; do [[ $port == "$taken" ]] && continue 2; done
    echo "$port"
    return 0
  done
  die "no free port found from $1 upwards"
}

# wait_for <what> <seconds> <pid to watch> <command...>: polls every 0.1 s until the command
# succeeds; fails at once if the watched process exits, and after <seconds> otherwise.
wait_for() {
  local what=$1 seconds=$2 pid=$3 step
  shift 3
  for ((step = 0; step < seconds * 10; step++)); do
    "$@" && return 0
    kill -0 "$pid" 2>/dev/null || die "waiting for $what: the process exited"
    sleep 0.1
  done
  die "$what did not happen within ${seconds}s"
}

target_port=$(pick_port 8080)
a_port=$(pick_port 18080 "$target_port")
b_port=$(pick_port 19090 "$target_port" "$a_port")

say "Starting the target: python3 -m http.server on 127.0.0.1:$target_port"
site=$work/site
mkdir "$site"
marker=hello-from-the-target.txt
echo "This file sits behind the tunnel." >"$site/$marker"
python3 -m http.server "$target_port" --bind 127.0.0.1 --directory "$site" >"$work/target.log" 2>&1 &
started "target (python3 -m http.server)" $!
wait_for "the target to listen on port $target_port" 10 "${pids[-1]}" port_listening "$target_port"

say "Starting tunnel-server: port A 127.0.0.1:$a_port, port B 127.0.0.1:$b_port"
"$server_bin" --listen-a "127.0.0.1:$a_port" --listen-b "127.0.0.1:$b_port" 2>"$work/tunnel-server.log" &
started tunnel-server $!
server_pid=$!
wait_for "tunnel-server's event=ready" 10 "$server_pid" grep -q 'event=ready' "$work/tunnel-server.log"

say "Starting tunnel-client: server 127.0.0.1:$b_port, target 127.0.0.1:$target_port"
"$client_bin" --server "127.0.0.1:$b_port" --target "127.0.0.1:$target_port" 2>"$work/tunnel-client.log" &
started tunnel-client $!
wait_for "event=client-online in the server's log" 10 "$server_pid" \
  grep -q 'event=client-online' "$work/tunnel-server.log"

say "curl -sS --max-time 5 http://127.0.0.1:$a_port/"
body=$(curl -sS --max-time 5 "http://127.0.0.1:$a_port/" 2>"$work/curl.log") ||
  die "curl through port A failed: $(cat "$work/curl.log")"
sed -n '1,12p' <<<"$body"
echo "[... $(wc -l <<<"$body") lines in all]"
grep -q "$marker" <<<"$body" ||
  die "the answer through port A is not the target's directory listing (no $marker in it)"

for log in tunnel-server tunnel-client; do
  printf '\n--- %s log ---\n' "$log"
  cat "$work/$log.log"
done

echo
echo "OK: curl through port A (127.0.0.1:$a_port) reached the target (127.0.0.1:$target_port)"
succeeded=1
