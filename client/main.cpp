// tunnel-client entry point: flags -> config -> one event loop until SIGTERM/SIGINT and drain.
#include <cstdio>

#include "client.hpp"
#include "tunnel/log.hpp"
#include "tunnel/shutdown.hpp"
#include "tunnel/systemd_notify.hpp"

int main(int argc, char** argv) {
  using namespace tunnel;
  client::ClientConfig config;
  if (int code = client::parse_arguments(argc, argv, config); code >= 0) return code;
  log::set_level(log::parse_level(config.daemon.log_level));
  auto fd_limit = raise_fd_limit();

  // Names are resolved once, here, before the loop runs: DNS never blocks the loop.
  SocketAddress server, target;
  try {
    server = resolve(config.server, false).front();
  } catch (const std::exception& e) {
    fmt::print(stderr, "tunnel-client: --server: {}\n", e.what());
    return 1;
  }
  try {
    target = resolve(config.target, false).front();
  } catch (const std::exception& e) {
    fmt::print(stderr, "tunnel-client: --target: {}\n", e.what());
    return 1;
  }

  EventLoop loop;
  std::unique_ptr<client::Client> client;
  try {
    client = std::make_unique<client::Client>(loop, config, server, target);
  } catch (const std::exception& e) {
    fmt::print(stderr, "tunnel-client: {}\n", e.what());
    return 1;
  }
  TLOG_INFO("event=started version={} fd_limit={} target={}", TUNNEL_VERSION, fd_limit,
            target.to_string());
  GracefulShutdown shutdown(
      loop, config.daemon.drain_timeout,
      {[&](std::function<void()> drained) { client->drain(std::move(drained)); },
       [&] { client->abort_relays(); }});
  systemd::Watchdog watchdog(loop);
  client->start();
  loop.run();
  return 0;
}
