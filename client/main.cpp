// tunnel-client entry point: flags -> config -> one event loop until SIGTERM/SIGINT and drain.
#include <cstdio>
#include <tuple>

#include "client.hpp"
#include "tunnel/log.hpp"
#include "tunnel/shutdown.hpp"
#include "tunnel/systemd_notify.hpp"

int main(int argc, char** argv) {
  tunnel::prepare_process();  // first: SIGPIPE ignored and stderr non-blocking before any output
  using namespace tunnel;
  client::ClientConfig config;
  if (int code = client::parse_arguments(argc, argv, config); code >= 0) return code;
  log::set_level(log::parse_level(config.daemon.log_level));
  auto fd_limit = raise_fd_limit();

  // Names are resolved once, here, before the loop runs: DNS never blocks the loop. Every address
  // is kept: connecting tries them in order (localhost may be ::1 first, the service on IPv4 only).
  SocketAddresses server, target;
  for (auto [option, name, out] : {std::tuple{"--server", &config.server, &server},
                                   std::tuple{"--target", &config.target, &target}}) {
    try {
      *out = resolve(*name, false);
    } catch (const std::exception& e) {
      fmt::print(stderr, "tunnel-client: {}: {}\n", option, e.what());
      return 1;
    }
  }
  std::string target_name = target.front().to_string();

  EventLoop loop;
  std::unique_ptr<client::Client> client;
  try {
    client = std::make_unique<client::Client>(loop, config, std::move(server), std::move(target));
  } catch (const std::exception& e) {
    fmt::print(stderr, "tunnel-client: {}\n", e.what());
    return 1;
  }
  TLOG_INFO("event=started version={} fd_limit={} target={}", TUNNEL_VERSION, fd_limit,
            target_name);
  GracefulShutdown shutdown(
      loop, config.daemon.drain_timeout,
      {[&](std::function<void()> drained) { client->drain(std::move(drained)); },
       [&] { client->abort_relays(); }});
  systemd::Watchdog watchdog(loop);
  client->start();
  loop.run();
  return 0;
}
