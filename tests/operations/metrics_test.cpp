// README "Metrics": both daemons' /metrics pass promtool and a strict parser, every counter
// equals what the test did, and the endpoint answers anything else with 404/405/400 and goes on.
#include <catch2/catch.hpp>
#include <ctime>
#include <optional>
#include <regex>

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

// An exchange where how the stream ended matters: the answer must be followed by an orderly close,
// since a reset can destroy an answer the client has not read yet.
struct Ended {
  HttpResponse response;
  ReadResult read;
  int send_error = 0;  // 0 when the server took the whole request
};

Ended exchange_to_end(uint16_t port, const std::string& request) {
  Socket s = connect_tcp(port);
  Ended e;
  try_send_all(s, request, 5s, e.send_error);
  e.read = read_to_end(s, 5s);
  e.response.raw = e.read.data;
  e.response.head = e.read.data.substr(0, e.read.data.find("\r\n\r\n"));
  std::smatch m;
  if (std::regex_search(e.response.head, m, std::regex("^HTTP/1\\.[01] ([0-9]{3}) ")))
    e.response.status = std::stoi(m[1]);
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

  CHECK(s.at("tunnel_clients_online") == 1);
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
    "metrics endpoint HTTP: 404 for another path, 405 for another method, 400 for garbage, 431 "
    "for an oversize request, and serving goes on") {
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

    // Past the 8 KiB bound, a complete head and one that never ends: 431 (or 400) at the bound
    // rather than at the 5 s request timeout.
    const std::string big_request =
        "GET /metrics HTTP/1.1\r\nX-Fill: " + std::string(10000, 'a') + "\r\n\r\n";
    const auto big_start = Clock::now();
    HttpResponse big = http_exchange(port, big_request);
    const long long big_ms = ms_since(big_start);
    {
      INFO("complete head of " << big_request.size() << " bytes (over 8192), after " << big_ms
                               << " ms: " << big.head);
      CHECK((big.status == 431 || big.status == 400));
      CHECK(big_ms < 4000);
    }
    const auto endless_start = Clock::now();
    HttpResponse endless =
        http_exchange(port, "GET /metrics HTTP/1.1\r\nX-Fill: " + std::string(20000, 'b'));
    const long long endless_ms = ms_since(endless_start);
    {
      INFO("20 KB head without its end, after " << endless_ms << " ms: " << endless.head);
      CHECK((endless.status == 431 || endless.status == 400));
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

TEST_CASE("metrics endpoint HTTP: a request whose lines end in a bare LF is answered at once") {
  Server server({"--metrics-listen", "127.0.0.1:0"});
  const uint16_t port = bound_port(server.process(), "metrics");
  for (const std::string request :
       {"GET /metrics HTTP/1.1\nHost: x\n\n", "GET /metrics HTTP/1.0\n\n",
        "GET /metrics HTTP/1.1\r\nHost: x\n\r\n", "GET /other HTTP/1.1\nHost: x\n\n"}) {
    const auto start = Clock::now();
    const HttpResponse r = http_exchange(port, request);
    const long long ms = ms_since(start);
    INFO("request " << ::Catch::Detail::stringify(request) << " answered after " << ms
                    << " ms: " << r.head);
    CHECK(r.status == (request.find("/other") != std::string::npos ? 404 : 200));
    CHECK(ms < 2000);
  }
  CHECK(parse_exposition(scrape(port)).problems.empty());
}

TEST_CASE(
    "metrics endpoint HTTP: a POST with a body and an oversize request get their 4xx followed by "
    "an orderly close, never a reset") {
  Server server({"--metrics-listen", "127.0.0.1:0"});
  const uint16_t port = bound_port(server.process(), "metrics");
  const std::string big_body(256 * 1024, 'p');
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"POST with a small body",
       "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"},
      {"POST with a 256 KiB body", "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                                       std::to_string(big_body.size()) + "\r\n\r\n" + big_body},
      {"PUT with a 256 KiB body and bare LFs",
       "PUT /metrics HTTP/1.1\nContent-Length: " + std::to_string(big_body.size()) + "\n\n" +
           big_body},
      {"a 20 KB head without its end",
       "GET /metrics HTTP/1.1\r\nX-Fill: " + std::string(20000, 'b')},
      {"a 100 KB head",
       "GET /metrics HTTP/1.1\r\nX-Fill: " + std::string(100000, 'c') + "\r\n\r\n"},
  };
  for (const auto& [what, request] : cases) {
    const Ended e = exchange_to_end(port, request);
    INFO(what << ": the server took " << (e.send_error == 0 ? "all of it" : "not all of it")
              << " (errno " << e.send_error << "), then " << e.read.describe()
              << "; answer head: " << e.response.head);
    if (request.starts_with("GET")) {
      CHECK((e.response.status == 431 || e.response.status == 400));
    } else {
      CHECK(e.response.status == 405);
    }
    CHECK(e.read.end == End::eof);
    CHECK(e.send_error == 0);
  }
  CHECK(parse_exposition(scrape(port)).problems.empty());
  CHECK(server.process().running());
}

TEST_CASE(
    "metrics endpoint: at most 64 requests in progress, more are closed at once, and scraping "
    "goes on once they end") {
  Server server({"--metrics-listen", "127.0.0.1:0"});
  const uint16_t port = bound_port(server.process(), "metrics");
  // Idle connections that never send a request: each would hold an exchange for 5 s.
  constexpr size_t kIdle = 100, kCap = 64;
  std::vector<Socket> idle;
  for (size_t i = 0; i < kIdle; ++i) idle.push_back(connect_tcp(port));
  auto closed = [&] {
    size_t n = 0;
    for (const auto& s : idle) n += wait_readable(s, 0ms) ? 1 : 0;
    return n;
  };
  // Well before the request timeout, the ones past the cap are gone.
  poll_until([&] { return closed() >= kIdle - kCap; }, 2s);
  const size_t shed = closed();
  INFO(shed << " of " << kIdle << " idle connections closed at once");
  CHECK(shed >= kIdle - kCap);
  CHECK(shed < kIdle);
  for (const auto& s : idle) {
    if (!wait_readable(s, 0ms)) continue;
    const ReadResult r = read_to_end(s, 1s);
    INFO("a connection past the cap: " << r.describe());
    CHECK(closed_without_data(r));
  }
  server.wait_for_line("event=metrics-refused reason=too-many-requests", 2s);
  idle.clear();
  // The held exchanges see their clients go and end; then scrapes are served again.
  std::string text;
  wait_until(
      [&] {
        try {
          text = scrape(port);
          return true;
        } catch (const std::exception&) {
          return false;
        }
      },
      3s, "a scrape served after the idle connections closed");
  CHECK(parse_exposition(text).problems.empty());
  CHECK(server.process().running());
}
