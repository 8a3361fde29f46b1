// Everything tunnel-server can be told, from flags or the --config file.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tunnel/address.hpp"
#include "tunnel/daemon_options.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/proxy_protocol.hpp"
#include "tunnel/tls_context.hpp"

namespace tunnel::server {

using namespace std::chrono_literals;

// One service the server offers (docs/PROTOCOL.md, "Services"): where external traffic for it
// arrives, and which clients may serve it. The seed's --listen-a is the service named `default`.
struct ServiceConfig {
  std::string name;
  HostPort listen;
  // Client names allowed to serve it; empty: any client the server accepts.
  std::vector<std::string> clients;
  // A PROXY protocol header sent ahead of the visitor's bytes, so the target sees its address.
  std::optional<proxy_protocol::Version> send_proxy;
  // External connections start with a PROXY header (a load balancer in front); its source
  // address is the visitor's. A connection without a valid header is closed and counted.
  bool accept_proxy = false;

  bool operator==(const ServiceConfig&) const = default;
};

// A client the server knows by name, with its own token ([client.<name>] in the config file).
struct NamedClient {
  std::string name;
  std::string token;  // the file's content, never logged
  std::string token_file;

  bool operator==(const NamedClient&) const = default;
};

// The service name of the seed's one-service case (--listen-a, --target, a v1 client).
inline constexpr std::string_view kDefaultService = "default";

// Bounds of the config file: services (the protocol's bound) and named clients.
inline constexpr size_t kMaxClients = 1024;

struct ServerConfig {
  // The arguments after the program's name, as given: what a reload parses again.
  std::vector<std::string> args;
  // The `default` service's address when there is one (it is also in `services`).
  HostPort listen_a{"", 18080};
  HostPort listen_b{"", 19090};
  Duration pair_timeout = 10s;
  Duration probe_timeout = 1s;
  Duration handshake_timeout = 5s;
  size_t max_pending = 1024;
  // The most pooled data connections one client session may keep (the pool extension); 0: the
  // pool is not offered. A client asks for its own number (tunnel-client --pool) up to this.
  size_t pool_max = 64;
  // The auth extension's token, from --token-file: the token of every client name not listed in
  // `clients`. Empty, and no named clients: no auth.
  std::string token;
  // Every service, the `default` one (from --listen-a) included when there is one.
  std::vector<ServiceConfig> services;
  std::vector<NamedClient> clients;
  // TLS on port B: the files as given, and the context loaded from them at start-up (null: off).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  std::shared_ptr<tls::ServerContext> tls;
  DaemonOptions daemon;
};

// Fills `config` from argv (flags and the --config file, its [service.<name>] and
// [client.<name>] tables, token and TLS files). Returns -1 to go on, or the exit code: 0 after
// --help/--version or a good --check-config (printed), 2 after a bad flag or config (one line on
// stderr, "tunnel-server: <error>").
int parse_arguments(int argc, char** argv, ServerConfig& config);
// The same parse of `args` (ServerConfig::args) for a reload, printing nothing: the new config,
// or nullopt with `error` set to the one line (without "tunnel-server: ").
std::optional<ServerConfig> reparse_arguments(const std::vector<std::string>& args,
                                              std::string& error);
// Checks the TLS options that go together and loads the context. Returns the error (naming the
// option and the file), or nullopt. Called by the two above.
std::optional<std::string> load_tls(ServerConfig& config);

}  // namespace tunnel::server
