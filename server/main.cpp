// tunnel-server entry point: flags -> config -> one event loop until SIGTERM/SIGINT and drain;
// SIGHUP reloads the services and clients.
#include <csignal>
#include <cstdio>

#include "server.hpp"
#include "tunnel/log.hpp"
#include "tunnel/shutdown.hpp"
#include "tunnel/signals.hpp"
#include "tunnel/systemd_notify.hpp"

int main(int argc, char** argv) {
  tunnel::prepare_process();  // first: SIGPIPE ignored and stderr non-blocking before any output
  using namespace tunnel;
  server::ServerConfig config;
  if (int code = server::parse_arguments(argc, argv, config); code >= 0) return code;
  log::set_level(log::parse_level(config.daemon.log_level));
  auto fd_limit = raise_fd_limit();

  EventLoop loop;
  std::unique_ptr<server::Server> server;
  try {
    server = std::make_unique<server::Server>(loop, config);
  } catch (const std::exception& e) {
    fmt::print(stderr, "tunnel-server: {}\n", e.what());
    return 1;
  }
  GracefulShutdown shutdown(
      loop, config.daemon.drain_timeout,
      {[&](std::function<void()> drained) { server->drain(std::move(drained)); },
       [&] { server->abort_relays(); }});
  systemd::Watchdog watchdog(loop);
  // The file is parsed whole before anything changes: any error keeps the running config.
  SignalWatcher reload(loop, {SIGHUP}, [&](int) {
    systemd::notify("RELOADING=1");
    std::string error;
    auto next = server::reparse_arguments(config.args, error);
    if (next) error = server->reload(*next);
    if (error.empty())
      config = std::move(*next);
    else
      TLOG_ERROR("event=reload-refused detail=\"{}\"", log::escaped(error));
    systemd::notify("READY=1");
  });
  TLOG_INFO("event=started version={} fd_limit={} poller={}", TUNNEL_VERSION, fd_limit,
            loop.poller().name());
  // Both listeners are bound: from here on, connections are accepted.
  systemd::notify("READY=1");
  loop.run();
  return 0;
}
