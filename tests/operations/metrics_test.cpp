// DESIGN §5 "Metrics": both daemons' /metrics pass promtool and a strict parser, every counter
// equals what the test did, and the endpoint answers anything else with 404/405/400 and goes on.
#include <catch2/catch.hpp>
#include <ctime>
#include <optional>

#include "exposition.hpp"
#include "ops_support.hpp"
#include "support/daemons.hpp"
#include "support/echo_tunnel.hpp"
#include "support/fake_control.hpp"
#include "support/payload.hpp"
#include "support/report.hpp"
#include "support/scripted_target.hpp"
#include "support/socket_io.hpp"

using namespace tunnel::test;
using namespace tunnel::test::ops;
using namespace std::chrono_literals;

namespace {

// Passes `text` through `promtool check metrics` and the strict parser; returns what was parsed.
Exposition check_exposition(const std::string& who, const std::string& text) {
  const std::string promtool = find_program("promtool");
  if (promtool.empty()) {
    FAIL(
        "promtool is not on PATH: install Debian's `prometheus` package (apt-get install "
        "prometheus), as the README's test set-up does");
  }
  TempDir dir;
  const std::string file = dir.file(who + ".prom");
  write_file(file, text);
  const CommandResult r =
      run_command({"/bin/sh", "-c", "exec \"$0\" check metrics < \"$1\"", promtool, file});
  INFO(who << " exposition:\n"
           << text << "promtool said (" << r.status.describe() << "):\n"
           << r.output());
  CHECK((r.status.exited && r.status.code == 0));
  CHECK(r.lines.empty());

  Exposition e = parse_exposition(text);
  std::string problems;
  for (const auto& problem : e.problems) problems += "  " + problem + "\n";
  INFO("the strict parser found in the " << who << " exposition:\n" << problems);
  CHECK(e.problems.empty());
  return e;
}

// An echo round trip that reads the whole echo before half-closing, so that it is paired for
// certain and counted as a relay, never as an A connection that ended early.
void round_trip(uint16_t port_a, const std::string& payload) {
  Socket a = connect_tcp(port_a);
  send_all(a, payload);
  REQUIRE(read_exact(a, payload.size(), 10s) == payload);
  shutdown_write(a);
  ReadResult end = read_to_end(a, 10s);
  INFO("after the echo: " << end.describe());
  REQUIRE(end.data.empty());
  REQUIRE(end.end == End::eof);
}

// Scrapes until the gauges show no connection in flight, so that the counters are final.
Exposition settled(uint16_t port, const std::string& active, const std::string& pending) {
  Exposition e;
  wait_until(
      [&] {
        e = parse_exposition(scrape(port));
        return e.has(active) && e.at(active) == 0 && (pending.empty() || e.at(pending) == 0);
      },
      5s, "no connection active or pending at /metrics on port " + std::to_string(port));
  return e;
}

}  // namespace

TEST_CASE(
    "metrics endpoint: both expositions pass promtool and a strict parser, and every counter "
    "equals what was done") {
  Server server({"--metrics-listen", "127.0.0.1:0", "--pair-timeout", "500ms"});
  const uint16_t server_metrics = bound_port(server.process(), "metrics");

  // M connections while no client is online: each closed at pair-timeout as no-client.
  constexpr size_t M = 3;
  {
    std::vector<Socket> waiting;
    for (size_t i = 0; i < M; ++i) waiting.push_back(connect_tcp(server.port_a()));
    for (auto& a : waiting) {
      ReadResult r = read_to_end(a, 5s);
      INFO("no-client connection: " << r.describe());
      CHECK(closed_without_data(r));
    }
  }

  std::optional<EchoTarget> echo(std::in_place);
  Client client(server.port_b(), echo->address(), {"--metrics-listen", "127.0.0.1:0"});
  wait_session(server, client);
  const uint16_t client_metrics = bound_port(client.process(), "metrics");

  // N successful round trips.
  constexpr size_t N = 5;
  uint64_t sent = 0;
  for (size_t i = 0; i < N; ++i) {
    const std::string payload = make_payload(i, 1000 + i * 7919);
    round_trip(server.port_a(), payload);
    sent += payload.size();
  }

  // K connections to a target that refuses: the echo target is gone, its port closed.
  echo.reset();
  constexpr size_t K = 2;
  for (size_t i = 0; i < K; ++i) {
    Socket a = connect_tcp(server.port_a());
    ReadResult r = read_to_end(a, 5s);
    INFO("connection to the refused target: " << r.describe());
    CHECK(closed_without_data(r));
  }

  // G garbage first lines and U unknown DATA ids on B.
  constexpr size_t G = 2, U = 2;
  for (size_t i = 0; i < G; ++i) {
    Socket b = connect_tcp(server.port_b());
    send_all(b, "HELLO this is not the tunnel protocol\n");
    ReadResult r = read_to_end(b, 5s);
    INFO("garbage on B: " << r.describe());
    CHECK((r.end == End::eof || r.end == End::reset));
  }
  for (size_t i = 0; i < U; ++i) {
    Socket b = connect_tcp(server.port_b());
    send_all(b, "TUNNEL/1 DATA " + random_id() + "\n");
    ReadResult r = read_to_end(b, 5s);
    INFO("unknown id on B: " << r.describe());
    CHECK(closed_without_data(r));
  }

  settled(server_metrics, "tunnel_connections_active", "tunnel_connections_pending");
  settled(client_metrics, "tunnel_connections_active", "");
  const Exposition s = check_exposition("server", scrape(server_metrics));
  const Exposition c = check_exposition("client", scrape(client_metrics));

  auto failed = [](const char* reason) {
    return std::string("tunnel_connections_failed_total{reason=\"") + reason + "\"}";
  };
  MEASURED("metrics: server relayed to_client="
           << s.at("tunnel_relayed_bytes_total{direction=\"to_client\"}")
           << " to_external=" << s.at("tunnel_relayed_bytes_total{direction=\"to_external\"}")
           << ", client to_target=" << c.at("tunnel_relayed_bytes_total{direction=\"to_target\"}")
           << " from_target=" << c.at("tunnel_relayed_bytes_total{direction=\"from_target\"}")
           << " for " << sent << " bytes sent each way");

  CHECK(s.at("tunnel_client_online") == 1);
  CHECK(s.at("tunnel_control_sessions_total") == 1);
  CHECK(s.at("tunnel_control_refused_total") == 0);
  CHECK(s.at("tunnel_connections_active") == 0);
  CHECK(s.at("tunnel_connections_pending") == 0);
  CHECK(s.at("tunnel_connections_accepted_total") == N + M + K);
  CHECK(s.at("tunnel_connections_paired_total") == N);
  CHECK(s.at(failed("no-client")) == M);
  CHECK(s.at(failed("target-unreachable")) == K);
  CHECK(s.at(failed("bad-handshake")) == G);
  CHECK(s.at(failed("unknown-id")) == U);
  for (const char* none : {"pair-timeout", "max-pending", "closed-early", "handshake-timeout"}) {
    INFO("server reason " << none);
    CHECK(s.at(failed(none)) == 0);
  }
  CHECK(s.at("tunnel_relayed_bytes_total{direction=\"to_client\"}") >= sent);
  CHECK(s.at("tunnel_relayed_bytes_total{direction=\"to_external\"}") >= sent);
  const double now = static_cast<double>(std::time(nullptr));
  CHECK(s.at("process_start_time_seconds") <= now + 1);
  CHECK(s.at("process_start_time_seconds") >= now - 300);

  CHECK(c.at("tunnel_control_online") == 1);
  CHECK(c.at("tunnel_control_reconnects_total") == 0);
  CHECK(c.at("tunnel_connections_active") == 0);
  CHECK(c.at("tunnel_connections_requested_total") == N + K);
  CHECK(c.at("tunnel_connections_relayed_total") == N);
  CHECK(c.at(failed("connection-refused")) == K);
  for (const char* none : {"timeout", "unreachable", "reset", "out-of-descriptors",
                           "connect-failed", "data-connect-failed"}) {
    INFO("client reason " << none);
    CHECK(c.at(failed(none)) == 0);
  }
  CHECK(c.at("tunnel_relayed_bytes_total{direction=\"to_target\"}") >= sent);
  CHECK(c.at("tunnel_relayed_bytes_total{direction=\"from_target\"}") >= sent);
  CHECK(c.at("process_start_time_seconds") <= now + 1);
  CHECK(c.at("process_start_time_seconds") >= now - 300);
}

TEST_CASE(
    "metrics endpoint HTTP: 404 for another path, 405 for another method, 400 for garbage or an "
    "oversize request, and serving goes on") {
  EchoTarget echo;
  Server server({"--metrics-listen", "127.0.0.1:0"});
  Client client(server.port_b(), echo.address(), {"--metrics-listen", "127.0.0.1:0"});
  wait_session(server, client);
  const std::vector<std::pair<std::string, uint16_t>> endpoints = {
      {"server", bound_port(server.process(), "metrics")},
      {"client", bound_port(client.process(), "metrics")}};

  for (const auto& [who, port] : endpoints) {
    INFO(who << " metrics endpoint on port " << port);
    HttpResponse other = http_exchange(port, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
    INFO("GET /other: " << other.raw);
    CHECK(other.status == 404);
    HttpResponse post =
        http_exchange(port, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    INFO("POST /metrics: " << post.raw);
    CHECK(post.status == 405);
    HttpResponse garbage = http_exchange(port, "\x01\x02 hello there\r\n\r\n");
    INFO("garbage: " << garbage.raw);
    CHECK(garbage.status == 400);

    // Past the 8 KiB bound, a complete head and one that never ends: 400, or closed unanswered,
    // at the bound rather than at the 5 s request timeout.
    const std::string big_request =
        "GET /metrics HTTP/1.1\r\nX-Fill: " + std::string(10000, 'a') + "\r\n\r\n";
    const auto big_start = Clock::now();
    HttpResponse big = http_exchange(port, big_request);
    const long long big_ms = ms_since(big_start);
    {
      INFO("complete head of " << big_request.size() << " bytes (over 8192), after " << big_ms
                               << " ms: " << big.head);
      CHECK((big.status == 400 || big.raw.empty()));
      CHECK(big_ms < 4000);
    }
    const auto endless_start = Clock::now();
    HttpResponse endless =
        http_exchange(port, "GET /metrics HTTP/1.1\r\nX-Fill: " + std::string(20000, 'b'));
    const long long endless_ms = ms_since(endless_start);
    {
      INFO("20 KB head without its end, after " << endless_ms << " ms: " << endless.head);
      CHECK((endless.status == 400 || endless.raw.empty()));
      CHECK(endless_ms < 4000);
    }

    const Exposition after = parse_exposition(scrape(port));
    CHECK(after.problems.empty());
  }
  CHECK(server.process().running());
  CHECK(client.process().running());
  echo_round_trip(server.port_a(), "the tunnel still works after the HTTP junk\n");
}

TEST_CASE("the strict exposition parser rejects what the text format forbids") {
  // Shows that the parser's silence about the daemons' expositions means something.
  const std::string good =
      "# HELP a_total Things.\n# TYPE a_total counter\na_total{reason=\"x\"} 1\n"
      "a_total{reason=\"y\"} 2\n# HELP g A gauge.\n# TYPE g gauge\ng 0.5\n";
  const Exposition ok = parse_exposition(good);
  INFO(ok.problems.size() << " problems in the good text, first: "
                          << (ok.problems.empty() ? "" : ok.problems[0]));
  CHECK(ok.problems.empty());
  CHECK(ok.at("a_total{reason=\"y\"}") == 2);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"counter without _total", "# HELP a x\n# TYPE a counter\na 1\n"},
      {"sample before TYPE", "a_total 1\n# HELP a_total x\n# TYPE a_total counter\n"},
      {"no HELP", "# TYPE a_total counter\na_total 1\n"},
      {"bad value", "# HELP g x\n# TYPE g gauge\ng one\n"},
      {"bad labels", "# HELP g x\n# TYPE g gauge\ng{a=b} 1\n"},
      {"repeated series", "# HELP g x\n# TYPE g gauge\ng 1\ng 2\n"},
      {"family split",
       "# HELP g x\n# TYPE g gauge\ng{a=\"1\"} 1\n# HELP h x\n# TYPE h gauge\n"
       "h 1\ng{a=\"2\"} 1\n"},
      {"no final newline", "# HELP g x\n# TYPE g gauge\ng 1"},
      {"gauge named _total", "# HELP g_total x\n# TYPE g_total gauge\ng_total 1\n"},
  };
  for (const auto& [what, text] : bad) {
    INFO(what);
    CHECK_FALSE(parse_exposition(text).problems.empty());
  }
}
