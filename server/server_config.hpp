// Everything tunnel-server can be told, from flags or the --config file.
#pragma once

#include <chrono>
#include <string>

#include "tunnel/address.hpp"
#include "tunnel/daemon_options.hpp"
#include "tunnel/duration.hpp"

namespace tunnel::server {

using namespace std::chrono_literals;

struct ServerConfig {
  HostPort listen_a{"", 18080};
  HostPort listen_b{"", 19090};
  Duration pair_timeout = 10s;
  Duration probe_timeout = 1s;
  Duration handshake_timeout = 5s;
  size_t max_pending = 1024;
  std::string token;  // the auth extension's token, from --token-file; empty: no auth
  DaemonOptions daemon;
};

// Fills `config` from argv. Returns -1 to go on, or the exit code (0 after --help/--version, 2
// after a bad flag or config, with one line on stderr).
int parse_arguments(int argc, char** argv, ServerConfig& config);

}  // namespace tunnel::server
