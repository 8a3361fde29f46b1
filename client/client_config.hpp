// Everything tunnel-client can be told, from flags or the --config file.
#pragma once

#include <chrono>
#include <string>

#include "tunnel/address.hpp"
#include "tunnel/daemon_options.hpp"
#include "tunnel/duration.hpp"

namespace tunnel::client {

using namespace std::chrono_literals;

struct ClientConfig {
  HostPort server;
  HostPort target;
  Duration dial_timeout = 5s;
  Duration reconnect_max = 30s;
  std::string token;            // the auth extension's token, from --token-file; empty: no auth
  std::string name{"default"};  // the name the token proves (auth)
  DaemonOptions daemon;
};

// Fills `config` from argv. Returns -1 to go on, or the exit code (0 after --help/--version, 2
// after a bad flag or config, with one line on stderr).
int parse_arguments(int argc, char** argv, ClientConfig& config);

}  // namespace tunnel::client
