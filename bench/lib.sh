# shellcheck shell=bash
# What the bench scripts share: sourced by run.sh, tls-vs-plain.sh, services-scale.sh and
# compare-builds.sh (after `set -euo pipefail`). It defines functions and a few globals only:
#   pids     every process started in the background and not yet stopped (stop_pids forgets them)
#   work     the run's temporary directory, once bench_init made it
# Nothing here starts a process or traps a signal until bench_init is called.

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$bench_dir/.." && pwd)
pids=()
work=
bench_ok=0
cleanup_hooks=() # commands run by bench_cleanup before it stops what is left

die() {
  echo "FAIL: $*" >&2
  exit 1
}

# need_tools TOOL...: fails unless each is on PATH.
need_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps.sh installs it)"
  done
}

# ensure_packages COMMAND=PACKAGE...: installs from Debian, with apt-get, the packages whose
# command is missing. As root, or through sudo.
ensure_packages() {
  local pair missing=() as_root=()
  for pair in "$@"; do
    if [[ ${pair%%=*} == /* ]]; then
      [[ -x ${pair%%=*} ]] || missing+=("${pair#*=}")
    else
      command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
    fi
  done
  ((${#missing[@]})) || return 0
  echo "==> installing from Debian: ${missing[*]}"
  if ((EUID != 0)); then
    command -v sudo >/dev/null || die "missing: ${missing[*]}; install them as root (apt-get install)"
    as_root=(sudo --preserve-env=DEBIAN_FRONTEND)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update >/dev/null
  "${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
}

# build_daemons [DIR]: tunnel-server and tunnel-client, Release with debug info (so that perf can
# read them), tests off (only the daemons are needed, and a tree under edit may not build its
# tests). No DIR: the release preset in build/release. Sets bin (their build directory),
# server_exe and client_exe.
build_daemons() {
  local dir=${1:-}
  if [[ -z $dir ]]; then
    echo "==> building the release preset"
    (cd "$repo_root" && cmake --preset release && cmake --build --preset release -j2) >/dev/null
    bin=$repo_root/build/release
  else
    echo "==> building tunnel-server and tunnel-client in $dir"
    cmake -S "$repo_root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTUNNEL_WERROR=ON \
      -DTUNNEL_BUILD_TESTS=OFF >/dev/null
    cmake --build "$dir" -j2 --target tunnel-server tunnel-client >/dev/null
    bin=$(cd "$dir" && pwd)
  fi
  server_exe=$bin/server/tunnel-server
  client_exe=$bin/client/tunnel-client
  [[ -x $server_exe && -x $client_exe ]] || die "no daemons in $bin/{server,client}"
}

# build_tools DIR NAME...: bench/NAME.cpp -> DIR/NAME (C++20, -O2, warnings on).
build_tools() {
  local dir=$1 name
  shift
  for name in "$@"; do
    g++ -O2 -std=c++20 -Wall -Wextra -pthread "$bench_dir/$name.cpp" -o "$dir/$name" ||
      die "cannot build bench/$name.cpp"
  done
}

# bench_init NAME: the temporary directory ($work) and the traps that stop everything started,
# run the cleanup hooks, and remove $work when the run ended well (kept, and named, otherwise).
bench_init() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

bench_cleanup() {
  local rc=$? hook
  set +e
  trap - INT TERM
  for hook in "${cleanup_hooks[@]}"; do eval "$hook"; done
  stop_pids "${pids[@]}"
  # Hooks may need the processes gone first (a network namespace with nothing left in it).
  for hook in "${late_cleanup_hooks[@]}"; do eval "$hook"; done
  if ((bench_ok)); then rm -rf "$work"; elif [[ -n $work ]]; then echo "logs kept in $work" >&2; fi
  exit "$rc"
}
late_cleanup_hooks=()

# stop_pids PID...: SIGTERM to all at once, SIGKILL to those left after 3 s, all reaped, and
# forgotten (so that a reused pid is never signalled later).
stop_pids() {
  local pid i rest=()
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < 30; i++)); do
    any_alive "$@" || break
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    [[ " $* " == *" $pid "* ]] || rest+=("$pid")
  done
  pids=("${rest[@]}")
}
any_alive() {
  local pid
  for pid in "$@"; do kill -0 "$pid" 2>/dev/null && return 0; done
  return 1
}

# tree_pids PID...: the processes and all their descendants (a forking relay: socat, sshd).
tree_pids() {
  (($#)) || return 0
  ps -e -o pid=,ppid= | awk -v roots="$*" '
    BEGIN {n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1}
    {parent[$1] = $2}
    END {
      do {
        added = 0
        for (p in parent) if (!(p in keep) && (parent[p] in keep)) {keep[p] = 1; added = 1}
      } while (added)
      for (p in keep) if (p in parent) print p
    }'
}

# stop_tree PID...: stop_pids on the processes and their descendants (those not ours are signalled
# but not waited for: they are not our children).
stop_tree() {
  local all
  (($#)) || return 0
  all=$(tree_pids "$@")
  # shellcheck disable=SC2086 # the pid list is words on purpose
  [[ -n $all ]] && { kill -TERM $all 2>/dev/null || true; }
  stop_pids "$@"
  # shellcheck disable=SC2086
  [[ -n $all ]] && { kill -KILL $all 2>/dev/null || true; }
  return 0
}

# listening PORT [NETNS]: something listens on TCP PORT (in that network namespace).
listening() {
  if [[ -n ${2:-} ]]; then
    [[ -n $(ip netns exec "$2" ss -Hltn "( sport = :$1 )") ]]
  else
    [[ -n $(ss -Hltn "( sport = :$1 )") ]]
  fi
}
both_listening() { listening "$1" && listening "$2"; }

# pick_port VAR: a port nothing listens on, not used before in this run, and below the ephemeral
# range (32768+), so that the many outgoing connections of connrate cannot take it first.
taken_ports=" "
pick_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 12000))
    [[ $taken_ports == *" $port "* ]] && continue
    listening "$port" && continue
    taken_ports+="$port "
    printf -v "$1" '%s' "$port"
    return 0
  done
}

# wait_for SECONDS PID COMMAND...: polls COMMAND; fails if PID exits or time runs out.
wait_for() {
  local seconds=$1 pid=$2 i
  shift 2
  for ((i = 0; i < seconds * 20; i++)); do
    "$@" && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# listen_port FILE: the N of a "listening port=N" line (bench/echo, floor_relay, pingpong serve).
listen_port() { sed -n 's/^listening port=//p' "$1"; }

clk_tck=$(getconf CLK_TCK)
# cpu_seconds PID...: user + system CPU time so far of the processes and their descendants, with
# the children they already reaped (cutime, cstime), as a forking relay's finished children count.
cpu_seconds() {
  local pid ticks=0 fields f
  for pid in $(tree_pids "$@"); do
    fields=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    fields=${fields##*) } # the name may hold spaces; fields 3.. follow the last ')'
    read -r -a f <<<"$fields"
    ticks=$((ticks + f[11] + f[12] + f[13] + f[14])) # utime stime cutime cstime: fields 14-17
  done
  awk -v t="$ticks" -v h="$clk_tck" 'BEGIN {printf "%.3f", t / h}'
}

# rss_kb PID...: resident memory of the processes and their descendants, summed (VmRSS, kB).
rss_kb() {
  local pid sum=0 kb
  for pid in $(tree_pids "$@"); do
    kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
    sum=$((sum + ${kb:-0}))
  done
  echo "$sum"
}
mem_available_kb() { awk '/^MemAvailable:/ {print $2}' /proc/meminfo; }

# stats FORMAT VALUES...: "median min max".
stats() {
  local format=$1
  shift
  printf '%s\n' "$@" | sort -g | awk -v f="$format" '{v[NR] = $1}
    END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
         printf f " " f " " f "\n", m, v[1], v[NR]}'
}
# ratio A B: A/B with two decimals, or "-" when either is missing.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a != "" && b != "" && b > 0) printf "%.2f", a / b; else printf "-"}'; }

machine_line() {
  echo "$(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)"
}
