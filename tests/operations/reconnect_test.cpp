// Failure behaviour (docs/ARCHITECTURE.md), row "server goes away": the client reconnects with
// exponential backoff and full jitter, within its current bound once the server is back, logging
// each failure once, no flood.
#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>
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

namespace {

const Match kControlLost = Match::regex("event=control-lost ");

}  // namespace

TEST_CASE(
    "server stopped for 3 s and restarted on the same ports: the client serves again within its "
    "backoff bound, with a handful of log lines") {
  EchoTarget echo;
  auto first = start_process("tunnel-server-1", {}, server_binary(),
                             concat(server_listen_args(0, 0), {"--log-level", "debug"}));
  first->wait_for_line("event=ready", kStartTimeout);
  const uint16_t port_a = bound_port(*first, "a");
  const uint16_t port_b = bound_port(*first, "b");
  Client client(port_b, echo.address());
  first->wait_for_line("event=client-online", kStartTimeout);
  client.wait_online();
  echo_round_trip(port_a, "before the outage\n");

  const size_t outage_mark = client.mark();
  first->signal(SIGTERM);
  const ExitStatus stopped = first->wait_exit(10s);
  INFO("first server: " << stopped.describe());
  CHECK((stopped.exited && stopped.code == 0));
  client.wait_for_line(kControlLost, 5s, outage_mark);
  // The outage itself: the scenario is a server that is away for 3 s.
  std::this_thread::sleep_for(3s);

  const size_t restart_mark = client.mark();
  auto second = start_process("tunnel-server-2", {}, server_binary(),
                              concat(server_listen_args(port_a, port_b), {"--log-level", "debug"}));
  const LogLine ready = second->log().wait_for("event=ready", kStartTimeout);
  // Bounded by the default --reconnect-max of 30 s, plus room for the report.
  const LogLine online = client.log().wait_for("event=online", 35s, restart_mark);
  second->wait_for_line("event=client-online session=1", 5s);

  // The attempt that succeeded was scheduled by the last failure line before `online`.
  const auto lines = client.log().lines();
  long long last_retry = -1;
  size_t lost_lines = 0;
  for (size_t i = outage_mark;
       i < lines.size() && lines[i].text.find("event=online") == std::string::npos; ++i) {
    if (!kControlLost(lines[i].text)) continue;
    ++lost_lines;
    last_retry = std::stoll(field(lines[i].text, "retry_in_ms").value_or("-1"));
  }
  const long long reconnect_ms =
      std::chrono::duration_cast<Millis>(online.arrived - ready.arrived).count();
  const auto retries = retry_values(client.log(), kControlLost, outage_mark);
  MEASURED("server restart: client online " << reconnect_ms << " ms after the server was ready; "
                                            << "last retry_in_ms before it " << last_retry << "; "
                                            << lost_lines << " control-lost lines ("
                                            << join(retries) << ")");
  REQUIRE(last_retry >= 0);
  CHECK(reconnect_ms <= last_retry + 1000);
  CHECK(lost_lines >= 1);
  CHECK(lost_lines < 20);
  echo_round_trip(port_a, "after the restart\n");
}

TEST_CASE(
    "reconnect backoff: full jitter under --reconnect-max, each delay honoured, no flood of "
    "control-lost lines") {
  const uint16_t nowhere = refused_port();
  Client client(nowhere, loopback(refused_port()), {"--reconnect-max", "800ms"});
  client.wait_for_line(kControlLost, kStartTimeout);
  // The observation window: what the client does against a dead port in 3 s.
  std::this_thread::sleep_for(3s);

  const size_t in_window = client.log().count(kControlLost);
  // The jitter check wants nine delays; waiting for the later ones is not part of the count.
  wait_until([&] { return client.log().count(kControlLost) >= 9; }, 10s,
             "nine control-lost lines from the client");
  std::vector<LogLine> lost;
  for (const auto& line : client.log().lines()) {
    if (kControlLost(line.text)) lost.push_back(line);
  }
  const auto retries = retry_values(client.log(), kControlLost);
  MEASURED("backoff: " << in_window << " control-lost lines in ~3 s; retry_in_ms " << join(retries)
                       << " (--reconnect-max 800ms)");
  CHECK(in_window >= 3);
  CHECK(in_window < 30);
  long long bound = 100;
  for (size_t i = 0; i < retries.size(); ++i) {
    INFO("attempt " << i << ": retry_in_ms=" << retries[i] << ", bound " << bound);
    CHECK(retries[i] >= 0);
    CHECK(retries[i] <= 800);
    CHECK(retries[i] <= bound);
    bound = std::min(bound * 2, 800LL);
  }
  // From the fourth delay on the bound is 800 ms; six of them all <= 100 ms: 1 in 262144.
  CHECK(*std::max_element(retries.begin() + 3, retries.end()) > 100);
  // Each announced delay is really waited: the next failure is stamped no earlier than it.
  for (size_t i = 0; i + 1 < lost.size(); ++i) {
    const auto t0 = stamped_time(lost[i].text), t1 = stamped_time(lost[i + 1].text);
    REQUIRE(t0);
    REQUIRE(t1);
    const long long gap = std::chrono::duration_cast<Millis>(*t1 - *t0).count();
    INFO("between failure " << i << " and " << i + 1 << ": " << gap << " ms, announced "
                            << retries[i] << " ms");
    CHECK(gap >= retries[i] - 10);
  }
}
