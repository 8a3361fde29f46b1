// README "Running under systemd": sd_notify over $NOTIFY_SOCKET, with the test as systemd. READY=1
// only once the daemon can serve (server: listeners bound; client: registered), STOPPING=1 on
// SIGTERM, and WATCHDOG=1 every WATCHDOG_USEC/2.
#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>

#include "notify_socket.hpp"
#include "ops_support.hpp"
#include "support/daemons.hpp"
#include "support/report.hpp"
#include "support/scripted_target.hpp"
#include "support/socket_io.hpp"

using namespace tunnel::test;
using namespace tunnel::test::ops;
using namespace std::chrono_literals;

TEST_CASE("sd_notify (server): READY=1 only once the listeners are bound, STOPPING=1 on SIGTERM") {
  TempDir dir;
  NotifySocket notify(dir.file("notify"));
  // Ports known in advance, so that the listeners can be tried the moment READY=1 is in hand.
  const auto [port_a, port_b] = two_free_ports();
  auto server = start_process("tunnel-server", {"/usr/bin/env", notify.env()}, server_binary(),
                              concat(server_listen_args(port_a, port_b), {"--log-level", "debug"}));
  const auto ready = notify.receive(kStartTimeout);
  INFO(server->log().tail());
  REQUIRE(ready);
  CHECK(ready->text == "READY=1");
  CHECK(probe_connect("127.0.0.1", port_b, 2s) == Reach::connected);
  CHECK(probe_connect("127.0.0.1", port_a, 2s) == Reach::connected);
  // Written before READY=1 was sent, so it is already in the pipe.
  server->wait_for_line("event=listening side=b", 2s);
  // Without WATCHDOG_USEC nothing else is sent while the server runs.
  CHECK_FALSE(notify.receive(300ms).has_value());

  server->signal(SIGTERM);
  const auto stopping = notify.receive(5s);
  REQUIRE(stopping);
  CHECK(stopping->text == "STOPPING=1");
  const ExitStatus status = server->wait_exit(10s);
  CHECK((status.exited && status.code == 0));
}

TEST_CASE("sd_notify (client): READY=1 only after the server answered OK, STOPPING=1 on SIGTERM") {
  TempDir dir;
  NotifySocket notify(dir.file("notify"));
  EchoTarget echo;
  const auto [port_a, port_b] = two_free_ports();
  auto client = start_process("tunnel-client", {"/usr/bin/env", notify.env()}, client_binary(),
                              {"--server", loopback(port_b), "--target", echo.address(),
                               "--reconnect-max", "300ms", "--log-level", "debug"});
  // No server yet: the client fails and retries, and must not claim to be ready.
  client->wait_for_line("event=control-lost", kStartTimeout);
  const auto early = notify.receive(700ms);
  INFO("received before any server ran: " << (early ? early->text : "nothing"));
  CHECK_FALSE(early.has_value());

  const size_t before_server = client->log().size();
  const auto server_start = Clock::now();
  auto server = start_process("tunnel-server", {}, server_binary(),
                              concat(server_listen_args(port_a, port_b), {"--log-level", "debug"}));
  server->wait_for_line("event=ready", kStartTimeout);
  const auto ready = notify.receive(10s);
  INFO(client->log().tail());
  REQUIRE(ready);
  CHECK(ready->text == "READY=1");
  MEASURED("client READY=1 arrived "
           << std::chrono::duration_cast<Millis>(ready->arrived - server_start).count()
           << " ms after the server was started");
  client->wait_for_line("event=online", 2s, before_server);
  server->wait_for_line("event=client-online session=1", 2s);

  client->signal(SIGTERM);
  const auto stopping = notify.receive(5s);
  REQUIRE(stopping);
  CHECK(stopping->text == "STOPPING=1");
  const ExitStatus status = client->wait_exit(10s);
  CHECK((status.exited && status.code == 0));
}

TEST_CASE("sd_notify watchdog: with WATCHDOG_USEC=200000, WATCHDOG=1 about every 100 ms") {
  TempDir dir;
  NotifySocket notify(dir.file("notify"));
  auto server =
      start_process("tunnel-server", {"/usr/bin/env", notify.env(), "WATCHDOG_USEC=200000"},
                    server_binary(), concat(server_listen_args(0, 0), {"--log-level", "info"}));
  const auto ready = notify.receive(kStartTimeout);
  REQUIRE(ready);
  CHECK(ready->text == "READY=1");

  std::vector<Datagram> pings;
  const auto window_end = Clock::now() + 1500ms;
  while (Clock::now() < window_end) {
    auto d = notify.receive(std::chrono::duration_cast<Millis>(window_end - Clock::now()));
    if (d) pings.push_back(*d);
  }
  std::vector<long long> gaps;
  for (size_t i = 0; i + 1 < pings.size(); ++i) {
    gaps.push_back(
        std::chrono::duration_cast<Millis>(pings[i + 1].arrived - pings[i].arrived).count());
  }
  std::vector<long long> sorted = gaps;
  std::sort(sorted.begin(), sorted.end());
  const long long median = sorted.empty() ? -1 : sorted[sorted.size() / 2];
  MEASURED("watchdog: " << pings.size() << " datagrams in 1500 ms, gaps " << join(gaps)
                        << " ms, median " << median << " ms");
  for (const auto& d : pings) {
    INFO("datagram \"" << d.text << "\"");
    CHECK(d.text == "WATCHDOG=1");
  }
  CHECK(pings.size() >= 9);
  CHECK(pings.size() <= 18);
  CHECK(median >= 80);
  CHECK(median <= 150);
}
