// tunnel-server's command line and config file.
#include "server_config.hpp"

#include <fmt/format.h>

#include "tunnel/cli_common.hpp"
#include "tunnel/token_file.hpp"

namespace tunnel::server {

int parse_arguments(int argc, char** argv, ServerConfig& config) {
  CLI::App app{
      "tunnel-server: the public end of a reverse TCP tunnel. Connections accepted on port A are\n"
      "carried to the service behind the tunnel-client that is connected on port B.",
      "tunnel-server"};
  app.get_formatter()->column_width(36);
  cli::add_address(app, "--listen-a", config.listen_a, true,
                   "Address for external traffic (A): :port, host:port or [v6]:port");
  cli::add_address(app, "--listen-b", config.listen_b, true,
                   "Address the tunnel-client connects to (B); keep it private, see README");
  cli::add_duration(app, "--pair-timeout", config.pair_timeout,
                    "How long an A connection may wait for the client to pick it up",
                    cli::Zero::refused);
  cli::add_duration(app, "--probe-timeout", config.probe_timeout,
                    "How long the current client has to answer a liveness probe when another "
                    "client connects",
                    cli::Zero::refused);
  cli::add_duration(app, "--handshake-timeout", config.handshake_timeout,
                    "How long a B connection may take to send its first line", cli::Zero::refused);
  app.add_option("--max-pending", config.max_pending,
                 "A connections waiting for pairing at once; more are closed at once")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 20))
      ->type_name("N");
  cli::add_token_file(app, config.token,
                      "Require clients to prove they hold the token in FILE (mode 600; a name "
                      "relative to $CREDENTIALS_DIRECTORY works with systemd's LoadCredential=)");
  app.add_option("--tls-cert", config.tls_cert_file,
                 "Speak TLS 1.3 on port B with this certificate (PEM; with --tls-key)")
      ->type_name("FILE");
  app.add_option("--tls-key", config.tls_key_file, "The private key of --tls-cert (PEM)")
      ->type_name("FILE");
  app.add_option("--tls-client-ca", config.tls_client_ca_file,
                 "Require client certificates that chain to this CA (PEM): mutual TLS")
      ->type_name("FILE");
  cli::add_daemon_options(app, config.daemon);
  if (int code = cli::parse(app, argc, argv); code >= 0) return code;
  return load_tls(config);
}

int load_tls(ServerConfig& config) {
  auto refuse = [](std::string_view option, std::string_view what) {
    fmt::print(stderr, "tunnel-server: {}: {}\n", option, what);
    return 2;
  };
  if (config.tls_cert_file.empty() != config.tls_key_file.empty())
    return refuse(config.tls_cert_file.empty() ? "--tls-key" : "--tls-cert",
                  "--tls-cert and --tls-key go together");
  if (config.tls_cert_file.empty()) {
    if (!config.tls_client_ca_file.empty())
      return refuse("--tls-client-ca", "needs --tls-cert and --tls-key (TLS on port B)");
    return -1;
  }
  try {
    // Relative names are looked up in $CREDENTIALS_DIRECTORY first, like --token-file.
    config.tls = std::make_shared<tls::ServerContext>(tls::ServerContext::load(
        resolve_token_path(config.tls_cert_file), resolve_token_path(config.tls_key_file),
        config.tls_client_ca_file.empty() ? "" : resolve_token_path(config.tls_client_ca_file)));
  } catch (const std::exception& e) {
    return refuse("--tls-cert", e.what());
  }
  return -1;
}

}  // namespace tunnel::server
