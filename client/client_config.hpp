// Everything tunnel-client can be told, from flags or the --config file.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "service_config.hpp"
#include "tunnel/address.hpp"
#include "tunnel/daemon_options.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/tls_context.hpp"

namespace tunnel::client {

using namespace std::chrono_literals;

struct ClientConfig {
  HostPort server;
  std::vector<ClientService> services;  // at least one; --target is the one named `default`
  Duration dial_timeout = 5s;
  Duration reconnect_max = 30s;
  std::string token;            // the auth extension's token, from --token-file; empty: no auth
  std::string name{"default"};  // the name the token proves (auth)
  // TLS to port B: the options as given, and the context loaded from them at start-up (null: off).
  bool tls_on = false;
  std::string tls_ca_file;
  std::string tls_pin;
  std::string tls_cert_file;
  std::string tls_key_file;
  bool tls_resume = true;  // data connections resume the TLS session (off: to measure its worth)
  // Data connections kept open in advance (the pool extension), so that a visitor needs no dial:
  // 8 covers the handful of connections a browser opens to one site at once, for a few KiB of
  // kernel memory and two descriptors each; 0 turns the pool off. The server may grant fewer.
  size_t pool = 8;
  std::shared_ptr<tls::ClientContext> tls;
  DaemonOptions daemon;
  bool check_config = false;  // --check-config: parse, say so, exit
};

// Fills `config` from argv. Returns -1 to go on, or the exit code (0 after --help/--version or a
// --check-config that found nothing wrong, 2 after a bad flag or config, with one line on stderr).
int parse_arguments(int argc, char** argv, ClientConfig& config);
// Checks the TLS options that go together and loads the context (a file error names the option
// and the file). Returns -1 to go on, or 2 after one line on stderr. Called by parse_arguments.
int load_tls(ClientConfig& config);

}  // namespace tunnel::client
