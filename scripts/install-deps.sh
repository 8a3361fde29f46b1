#!/usr/bin/env bash
# Installs what building and running tunnel needs on Debian 12, and nothing when it is all there.
#   scripts/install-deps.sh           compiler, CMake, libraries, and the demo's tools
#   scripts/install-deps.sh --tests   the same, plus the tools the operations tests call
#   scripts/install-deps.sh --fuzz    the same, plus clang and libFuzzer (scripts/fuzz.sh)
# Run as root (or as a user with sudo). Safe to run again: only missing packages are installed.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

packages=(
  build-essential g++ cmake make   # compiler and build tools (CMake >= 3.25 for the presets)
  libfmt-dev libcli11-dev catch2   # the libraries (see third_party/CMakeLists.txt)
  libssl-dev                       # OpenSSL 3: HMAC-SHA256 for auth (and TLS, to come)
  libtomlplusplus-dev              # toml++: the --config file
  python3 curl ca-certificates     # the demo's target and client
  procps iproute2                  # ps and kill for process checks; ss to find free ports
)
case "${1:-}" in
  --tests)
    packages+=(
      systemd      # systemd-analyze verify, for the unit files in systemd/
      prometheus   # promtool check metrics, for the /metrics text
      nginx        # a real target that reads the PROXY protocol header
    )
    ;;
  --fuzz)
    packages+=(
      clang libclang-rt-14-dev   # libFuzzer and the sanitizer runtimes, for scripts/fuzz.sh
    )
    ;;
  "") ;;
  *)
    echo "usage: $0 [--tests | --fuzz]" >&2
    exit 2
    ;;
esac

missing=()
for pkg in "${packages[@]}"; do
  # "ii " means installed; anything else (absent, removed with config left, half-installed) is missing.
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "ii "* ]]; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

as_root=()
if ((EUID != 0)); then
  if command -v sudo >/dev/null 2>&1; then
    as_root=(sudo --preserve-env=DEBIAN_FRONTEND)
  else
    echo "install-deps: missing ${missing[*]}; run this script as root to install them" >&2
    exit 1
  fi
fi

echo "install-deps: installing ${missing[*]}"
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
