// tunnel-client's command line and config file.
#include "client_config.hpp"

#include "tunnel/auth.hpp"
#include "tunnel/cli_common.hpp"

namespace tunnel::client {

int parse_arguments(int argc, char** argv, ClientConfig& config) {
  CLI::App app{
      "tunnel-client: the private end of a reverse TCP tunnel. Keeps a connection to the\n"
      "tunnel-server's port B and carries each external connection to the --target service.",
      "tunnel-client"};
  app.get_formatter()->column_width(36);
  cli::add_address(app, "--server", config.server, false,
                   "The tunnel-server's port B: host:port or [v6]:port")
      ->required();
  cli::add_address(app, "--target", config.target, false,
                   "The service to expose, as seen from this host: host:port")
      ->required();
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
  cli::add_daemon_options(app, config.daemon);
  return cli::parse(app, argc, argv);
}

}  // namespace tunnel::client
