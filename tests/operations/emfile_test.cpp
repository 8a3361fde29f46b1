// Failure behaviour (docs/ARCHITECTURE.md), row "out of file descriptors (EMFILE)": under a
// 64-descriptor limit, a flood on A is shed without a busy loop, logged at most once a second, and
// the server serves again afterwards.
#include <catch2/catch.hpp>
#include <cmath>
#include <thread>

#include "ops_support.hpp"
#include "support/daemons.hpp"
#include "support/echo_tunnel.hpp"
#include "support/report.hpp"
#include "support/scripted_target.hpp"
#include "support/socket_io.hpp"

using namespace tunnel::test;
using namespace tunnel::test::ops;
using namespace std::chrono_literals;

TEST_CASE(
    "out of file descriptors (EMFILE): no busy loop, shed and logged at most once a second, "
    "recovers when descriptors free") {
  const std::string prlimit = find_program("prlimit");
  if (prlimit.empty()) FAIL("prlimit is not on PATH: install Debian's util-linux package");
  auto server = start_process("tunnel-server", {prlimit, "--nofile=64:64"}, server_binary(),
                              {"--listen-a", "127.0.0.1:0", "--listen-b", "127.0.0.1:0",
                               "--pair-timeout", "1s", "--log-level", "info"});
  server->wait_for_line("event=ready", kStartTimeout);
  const std::string started = server->wait_for_line("event=started", kStartTimeout);
  // The server raises its soft limit to the hard one; prlimit set both, so 64 it stays.
  REQUIRE(field(started, "fd_limit") == "64");
  const uint16_t port_a = bound_port(*server, "a");
  const uint16_t port_b = bound_port(*server, "b");

  // The flood: 450 connections at ~150/s, all held, none of them ever paired. Pending ones expire
  // after 1 s and make room, so the server keeps running into the limit for the whole window.
  const size_t log_from = server->log().size();
  const Millis cpu_before = cpu_time(server->pid());
  const auto flood_start = Clock::now();
  std::vector<Socket> flood;
  for (size_t i = 0; i < 450; ++i) {
    try {
      flood.push_back(connect_tcp(port_a, 5s));
    } catch (const std::exception& e) {
      // A refused connect means the listener is gone: say whether the server died and how.
      INFO(server->log().tail(30));
      INFO("server " << (server->running() ? "still running" : server->wait_exit(1s).describe()));
      FAIL("flood connection " << i << " failed: " << e.what());
    }
    if (i % 15 == 14) std::this_thread::sleep_for(100ms);  // pacing the load, not waiting on it
  }
  // Held for one more second after the last connection, while the server must stay idle.
  const Millis cpu_flooded = cpu_time(server->pid());
  const auto flood_end = Clock::now();
  std::this_thread::sleep_for(1s);
  const Millis cpu_after = cpu_time(server->pid());
  const long long wall_ms = ms_since(flood_start);
  const long long cpu_ms = (cpu_after - cpu_before).count();
  const long long hold_ms = ms_since(flood_end);
  const long long hold_cpu_ms = (cpu_after - cpu_flooded).count();
  REQUIRE(server->running());

  const size_t exhausted = server->log().count("event=fd-exhausted", log_from);
  const long long allowed = static_cast<long long>(std::ceil(wall_ms / 1000.0)) + 1;
  MEASURED("EMFILE: " << flood.size() << " connections over " << wall_ms << " ms; server CPU "
                      << cpu_ms << " ms (" << (100 * cpu_ms / std::max(wall_ms, 1LL))
                      << "%), of which " << hold_cpu_ms << " ms in the last " << hold_ms << " ms; "
                      << exhausted << " fd-exhausted lines (allowed " << allowed << ")");
  INFO(server->log().tail(30));
  CHECK(exhausted >= 1);
  CHECK(static_cast<long long>(exhausted) <= allowed);
  CHECK(cpu_ms * 2 < wall_ms);
  CHECK(hold_cpu_ms * 2 < hold_ms);
  const auto first = server->log().find("event=fd-exhausted", log_from);
  REQUIRE(first);
  CHECK(first->text.find("listener=a action=shed") != std::string::npos);

  // Descriptors free again: a client registers and a round trip goes through.
  flood.clear();
  EchoTarget echo;
  const size_t before_client = server->log().size();
  Client client(port_b, echo.address());
  server->wait_for_line("event=client-online", kStartTimeout, before_client);
  client.wait_online();
  echo_round_trip(port_a, "served again after the flood\n");
  REQUIRE(server->running());
}
