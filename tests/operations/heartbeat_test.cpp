// Failure behaviour (docs/ARCHITECTURE.md), rows "network silently drops (no FIN)" and "second
// control connection": a frozen client (SIGSTOP keeps its sockets open and silent) is found dead by
// the heartbeat, and a client restarted after such a failure takes over at once while the stale one
// is refused and backs off.
#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>

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

long long ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<Millis>(to - from).count();
}

// The bound of the n-th reconnect delay (from 0): starts at 100 ms and doubles, capped at 30 s.
long long backoff_bound(size_t n) {
  long long bound = 100;
  for (size_t i = 0; i < n && bound < 30000; ++i) bound *= 2;
  return std::min(bound, 30000LL);
}

}  // namespace

TEST_CASE(
    "client frozen (SIGSTOP): heartbeat timeout takes it offline, A waits as no-client, SIGCONT "
    "reconnects") {
  const std::vector<std::string> heartbeat = {"--heartbeat-interval", "200ms",
                                              "--heartbeat-timeout", "1s"};
  std::vector<std::string> server_flags = heartbeat;
  server_flags.insert(server_flags.end(), {"--pair-timeout", "1s"});
  EchoTarget echo;
  Server server(server_flags);
  Client client(server.port_b(), echo.address(), heartbeat);
  wait_session(server, client);
  echo_round_trip(server.port_a(), "before the freeze\n");

  // Frozen, the client neither reads nor answers, and its socket sends no FIN: only the
  // heartbeat can tell.
  const size_t before_freeze = server.mark();
  client.process().signal(SIGSTOP);
  const auto frozen = Clock::now();
  const LogLine offline = server.log().wait_for(
      Match::regex("event=client-offline session=1 .*reason=\"heartbeat-timeout\""), 10s,
      before_freeze);
  const long long detect_ms = ms_between(frozen, offline.arrived);
  MEASURED("heartbeat: frozen client declared offline " << detect_ms
                                                        << " ms after SIGSTOP (timeout 1s)");
  CHECK(detect_ms <= 2000);

  // No session now: a new A connection is treated as "no client" and closed at pair-timeout.
  const size_t before_a = server.mark();
  const auto a_start = Clock::now();
  Socket a = connect_tcp(server.port_a());
  send_all(a, "sent while the client is frozen\n");
  ReadResult r = read_to_end(a, 5s);
  const long long closed_ms = ms_since(a_start);
  INFO("A while frozen: " << r.describe() << " after " << closed_ms << " ms");
  MEASURED("heartbeat: A connection while frozen closed after " << closed_ms
                                                                << " ms (pair-timeout 1s)");
  CHECK(closed_without_data(r));
  CHECK(closed_ms >= 800);
  CHECK(closed_ms <= 2500);
  server.wait_for_line(Match::regex("event=conn-failed .*reason=no-client( |$)"), 2s, before_a);

  const size_t server_before_cont = server.mark();
  const size_t client_before_cont = client.mark();
  client.process().signal(SIGCONT);
  const auto resumed = Clock::now();
  const LogLine back =
      server.log().wait_for("event=client-online session=2", 10s, server_before_cont);
  client.wait_online(5s, client_before_cont);
  MEASURED("heartbeat: client back online (session=2) " << ms_between(resumed, back.arrived)
                                                        << " ms after SIGCONT");
  CHECK(client.log().find("event=control-lost", client_before_cont).has_value());
  echo_round_trip(server.port_a(), "after SIGCONT\n");
}

TEST_CASE(
    "restarted client after a silent failure: serves after the 1 s probe, long before the 30 s "
    "heartbeat timeout; the stale one is refused busy and backs off while A keeps working") {
  EchoTarget echo;
  Server server;  // default --probe-timeout 1s and heartbeat settings
  Client first(server.port_b(), echo.address(), {}, "tunnel-client-1");
  wait_session(server, first);
  echo_round_trip(server.port_a(), "through the first client\n");

  // A silent failure: the first client's socket stays open and says nothing, not even FIN.
  first.process().signal(SIGSTOP);
  const size_t server_mark = server.mark();
  const auto second_start = Clock::now();
  Client second(server.port_b(), echo.address(), {}, "tunnel-client-2");
  second.wait_online(5s);
  echo_round_trip(server.port_a(), "through the restarted client\n", 5s);
  const long long takeover_ms = ms_since(second_start);
  MEASURED("restarted client: round trip through A works " << takeover_ms << " ms after its start");
  // The takeover comes from the probe (1 s), not from the heartbeat timeout (30 s). The bound is
  // loose on purpose: it includes a sanitised process start on a loaded 2-core machine, which has
  // taken over a second (a 2 s bound failed once that way); the log line below names the cause.
  CHECK(takeover_ms <= 10000);
  server.wait_for_line("event=session-replaced session=1 reason=probe-timeout", 2s, server_mark);
  server.wait_for_line("event=client-online session=2", 2s, server_mark);

  // The stale client wakes up: it must find its place taken and keep out of the way.
  const size_t first_mark = first.mark();
  const size_t second_mark = second.mark();
  const size_t server_cont_mark = server.mark();
  first.process().signal(SIGCONT);
  const Match refused = Match::regex("event=control-refused .*code=busy");
  // Five refusals have delay bounds of 200..3200 ms: about 3 s of backoff at most.
  constexpr size_t kRefusals = 5;
  size_t trips = 0;
  const auto deadline = Clock::now() + 15s;
  while (first.log().count(refused, first_mark) < kRefusals && Clock::now() < deadline) {
    echo_round_trip(server.port_a(), "round trip " + std::to_string(trips) + "\n", 5s);
    ++trips;
    poll_until([&] { return first.log().count(refused, first_mark) >= kRefusals; }, 250ms);
  }
  INFO(first.log().tail(20));
  REQUIRE(first.log().count(refused, first_mark) >= kRefusals);
  echo_round_trip(server.port_a(), "after the refusals\n", 5s);
  ++trips;

  // Every failure line of the first client, from its start: the backoff grows with each one.
  const auto all = retry_values(first.log(), Match::regex("event=control-(lost|refused) "));
  const auto busy = retry_values(first.log(), refused, first_mark);
  MEASURED("stale client: " << busy.size() << " busy refusals, retry_in_ms of every failure: "
                            << join(all) << "; " << trips << " round trips through A meanwhile");
  for (size_t i = 0; i < all.size(); ++i) {
    INFO("failure " << i << " retry_in_ms=" << all[i] << " bound " << backoff_bound(i));
    CHECK(all[i] <= backoff_bound(i));
  }
  // Bounds 200, 400, 800, 1600, 3200: all five at or under 100 ms has odds of 1 in 32768.
  CHECK(*std::max_element(busy.begin(), busy.end()) > 100);
  CHECK(trips >= 3);
  // The server logs refusals rate-limited (at most one a second), so it has at least one line.
  CHECK(server.log().count("event=control-refused reason=busy", server_cont_mark) >= 1);
  CHECK_FALSE(server.log().find("event=client-online session=3").has_value());
  CHECK_FALSE(second.log().find("event=control-lost", second_mark).has_value());
}
