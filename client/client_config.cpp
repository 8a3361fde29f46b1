// tunnel-client's command line and config file.
#include "client_config.hpp"

#include <fmt/format.h>

#include <utility>

#include "tunnel/auth.hpp"
#include "tunnel/cli_common.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/token_file.hpp"

namespace tunnel::client {

int parse_arguments(int argc, char** argv, ClientConfig& config) {
  CLI::App app{
      "tunnel-client: the private end of a reverse TCP tunnel. Keeps a connection to the\n"
      "tunnel-server's port B and carries each external connection to its service's target.",
      "tunnel-client"};
  app.get_formatter()->column_width(36);
  cli::add_address(app, "--server", config.server, false,
                   "The tunnel-server's port B: host:port or [v6]:port")
      ->required();
  HostPort target;
  auto* target_option = cli::add_address(
      app, "--target", target, false,
      "The service to expose, as seen from this host: host:port (the service named default)");
  std::vector<ClientService> service_flags;
  app.add_option_function<std::vector<std::string>>(
         "--service",
         [&service_flags](const std::vector<std::string>& values) {
           for (const auto& value : values) service_flags.push_back(parse_service_flag(value));
         },
         "A service to expose, by name, and its target as seen from this host (repeatable)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            try {
              parse_service_flag(text);
              return {};
            } catch (const std::exception& e) {
              return e.what();
            }
          },
          ""))
      ->type_name("NAME=HOST:PORT");
  app.add_flag("--check-config", config.check_config,
               "Check the flags and the config file, say whether they are right, and exit");
  cli::add_duration(app, "--dial-timeout", config.dial_timeout,
                    "Bound on connecting to the target (and to the server)", cli::Zero::refused);
  cli::add_duration(app, "--reconnect-max", config.reconnect_max,
                    "Longest wait between attempts to reach the server (backoff starts near 100ms)",
                    cli::Zero::refused);
  cli::add_token_file(app, config.token,
                      "Prove to the server that this client holds the token in FILE (mode 600; a "
                      "name relative to $CREDENTIALS_DIRECTORY works with systemd's "
                      "LoadCredential=)");
  app.add_option("--name", config.name,
                 "This client's name, covered by the token's proof (letters, digits, . _ -)")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& name) -> std::string {
            return auth::is_name(name) ? "" : "1 to 64 of letters, digits, '.', '_' and '-'";
          },
          "NAME"))
      ->type_name("NAME");
  app.add_flag("--tls", config.tls_on,
               "Speak TLS 1.3 to port B; the server is verified with --tls-ca or --tls-pin");
  app.add_option("--tls-ca", config.tls_ca_file,
                 "Trust server certificates that chain to this CA, or this very certificate "
                 "(PEM); the --server host must be one of its names")
      ->type_name("FILE");
  app.add_option("--tls-pin", config.tls_pin,
                 "Trust only the server key with this pin (scripts/gen-cert.sh prints it)")
      ->type_name("sha256:HEX");
  app.add_option("--tls-cert", config.tls_cert_file,
                 "This client's certificate, for a server that requires one (with --tls-key)")
      ->type_name("FILE");
  app.add_option("--tls-key", config.tls_key_file, "The private key of --tls-cert (PEM)")
      ->type_name("FILE");
  app.add_option("--tls-resume", config.tls_resume,
                 "Data connections resume the TLS session from a ticket instead of a full "
                 "handshake (false: to measure what resumption saves)")
      ->capture_default_str()
      ->type_name("BOOL");
  app.add_option("--pool", config.pool,
                 "Data connections kept open to the server in advance, so that a new visitor "
                 "reaches the target in one round trip (0: none; the server may grant fewer)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{0}, protocol::kMaxPoolRequest))
      ->type_name("N");
  config::Tables tables;
  cli::add_daemon_options(app, config.daemon, &tables, {"service"});
  if (int code = cli::parse(app, argc, argv); code >= 0) return code;
  // In the order given: --target (the service named default), --service flags, the file's tables.
  config.services.clear();
  if (target_option->count() > 0)
    config.services.push_back({std::string(kDefaultService), target, "--target"});
  for (auto& service : service_flags) config.services.push_back(std::move(service));
  try {
    for (auto& service : services_from_tables(tables))
      config.services.push_back(std::move(service));
    check_services(config.services);
  } catch (const std::exception& e) {  // config::Error, ServiceConfigError: one line each
    fmt::print(stderr, "tunnel-client: {}\n", e.what());
    return 2;
  }
  if (int code = load_tls(config); code >= 0) return code;
  if (!config.check_config) return -1;
  fmt::print("tunnel-client: config OK: {} services\n", config.services.size());
  return 0;
}

int load_tls(ClientConfig& config) {
  auto refuse = [](std::string_view option, std::string_view what) {
    fmt::print(stderr, "tunnel-client: {}: {}\n", option, what);
    return 2;
  };
  if (!config.tls_on) {
    for (auto [option, value] :
         {std::pair{"--tls-ca", &config.tls_ca_file}, std::pair{"--tls-pin", &config.tls_pin},
          std::pair{"--tls-cert", &config.tls_cert_file},
          std::pair{"--tls-key", &config.tls_key_file}})
      if (!value->empty()) return refuse(option, "only with --tls");
    return -1;
  }
  if (config.tls_ca_file.empty() == config.tls_pin.empty())
    return refuse("--tls",
                  "give exactly one way to verify the server: --tls-ca FILE or --tls-pin "
                  "sha256:HEX (scripts/gen-cert.sh prints both)");
  tls::ClientTlsOptions options;
  // Relative names are looked up in $CREDENTIALS_DIRECTORY first, like --token-file.
  auto resolved = [](const std::string& file) {
    return file.empty() ? file : resolve_token_path(file);
  };
  options.ca_file = resolved(config.tls_ca_file);
  if (!config.tls_pin.empty()) {
    options.pin = tls::parse_pin(config.tls_pin);
    if (!options.pin) return refuse("--tls-pin", "expected sha256: and 64 hex digits");
  }
  options.cert_file = resolved(config.tls_cert_file);
  options.key_file = resolved(config.tls_key_file);
  options.server_name = config.server.host;
  options.resume = config.tls_resume;
  try {
    config.tls = std::make_shared<tls::ClientContext>(tls::ClientContext::load(options));
  } catch (const std::exception& e) {
    return refuse("--tls", e.what());
  }
  return -1;
}

}  // namespace tunnel::client
