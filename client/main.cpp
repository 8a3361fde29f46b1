// tunnel-client entry point: flags -> config -> one event loop until SIGTERM/SIGINT and drain.
#include <csignal>
#include <cstdio>
#include <optional>
#include <string_view>
#include <vector>

#include "client.hpp"
#include "tunnel/log.hpp"
#include "tunnel/shutdown.hpp"
#include "tunnel/signals.hpp"
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
  auto resolved = [](std::string_view origin,
                     const HostPort& name) -> std::optional<SocketAddresses> {
    try {
      return resolve(name, false);
    } catch (const std::exception& e) {
      fmt::print(stderr, "tunnel-client: {}: {}\n", origin, e.what());
      return std::nullopt;
    }
  };
  auto server = resolved("--server", config.server);
  if (!server) return 1;
  std::vector<client::ResolvedService> services;
  services.reserve(config.services.size());
  for (const auto& service : config.services) {
    auto target = resolved(service.origin, service.target);
    if (!target) return 1;
    services.push_back({service.name, std::move(*target)});
  }

  EventLoop loop;
  std::unique_ptr<client::Client> client;
  try {
    client =
        std::make_unique<client::Client>(loop, config, std::move(*server), std::move(services));
  } catch (const std::exception& e) {
    fmt::print(stderr, "tunnel-client: {}\n", e.what());
    return 1;
  }
  TLOG_INFO("event=started version={} fd_limit={} services={}", TUNNEL_VERSION, fd_limit,
            config.services.size());
  for (size_t i = 0; i < client->services().size(); ++i)
    TLOG_INFO("event=service-target service={} target={}", client->services().name(i),
              client->services().target(i).front().to_string());
  GracefulShutdown shutdown(
      loop, config.daemon.drain_timeout,
      {[&](std::function<void()> drained) { client->drain(std::move(drained)); },
       [&] { client->abort_relays(); }});
  systemd::Watchdog watchdog(loop);
  // SIGHUP would end the process by default; the client's services are read at start only (the
  // server's are reloadable: that is where services are added and removed).
  SignalWatcher hangup(loop, {SIGHUP}, [](int) {
    TLOG_WARN(
        "event=reload-unsupported detail=\"tunnel-client reads its config at start only: restart "
        "it to change its services\"");
  });
  client->start();
  loop.run();
  return 0;
}
