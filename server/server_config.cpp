// tunnel-server's command line and config file.
#include "server_config.hpp"

#include "tunnel/cli_common.hpp"

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
  cli::add_daemon_options(app, config.daemon);
  return cli::parse(app, argc, argv);
}

}  // namespace tunnel::server
