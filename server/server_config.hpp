// Everything tunnel-server can be told, from flags or the --config file.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "tunnel/address.hpp"
#include "tunnel/daemon_options.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/tls_context.hpp"

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
  // TLS on port B: the files as given, and the context loaded from them at start-up (null: off).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  std::shared_ptr<tls::ServerContext> tls;
  DaemonOptions daemon;
};

// Fills `config` from argv. Returns -1 to go on, or the exit code (0 after --help/--version, 2
// after a bad flag or config, with one line on stderr).
int parse_arguments(int argc, char** argv, ServerConfig& config);
// Checks the TLS options that go together and loads the context (a file error names the option
// and the file). Returns -1 to go on, or 2 after one line on stderr. Called by parse_arguments.
int load_tls(ServerConfig& config);

}  // namespace tunnel::server
