// Protocol v1 on port B (docs/PROTOCOL.md) spoken by hand over raw sockets, independent of
// tunnel-client, and Failure behaviour (docs/ARCHITECTURE.md), row "garbage, slow or flooding peers
// on B": none of them disturbs a live tunnel.
#include <catch2/catch.hpp>
#include <regex>

#include "support/daemons.hpp"
#include "support/echo_tunnel.hpp"
#include "support/fake_control.hpp"
#include "support/report.hpp"
#include "support/socket_io.hpp"

using namespace tunnel::test;
using namespace std::chrono_literals;

namespace {

// An external connection kept open through the whole test, checked before and after the abuse.
struct LiveConnection {
  Socket a;
  int round = 0;
  explicit LiveConnection(const EchoTunnel& t) : a(connect_tcp(t.server.port_a())) { check(); }
  void check() {
    const std::string msg = "live connection, round " + std::to_string(round++) + "\n";
    send_all(a, msg);
    CHECK(read_exact(a, msg.size(), 5s) == msg);
  }
};

// The session and the live connection survived whatever happened on B.
void check_undisturbed(EchoTunnel& t, LiveConnection& live) {
  live.check();
  echo_round_trip(t.server.port_a(), "a new connection still works\n");
  CHECK_FALSE(t.server.log().find("event=client-offline").has_value());
  CHECK_FALSE(t.client.log().find("event=control-lost").has_value());
}

// The server closed `b` without a byte, or with nothing but one `ERR ...` line.
void require_closed(const Socket& b, const std::string& what, Millis within) {
  const auto start = Clock::now();
  ReadResult r = read_to_end(b, within + 2s);
  const auto ms = ms_since(start);
  INFO(what << ": " << r.describe() << " after " << ms << " ms");
  CHECK((r.end == End::eof || r.end == End::reset));
  CHECK((r.data.empty() || std::regex_match(r.data, std::regex("ERR [^\n]*\n"))));
  CHECK(ms < within.count());
}

Socket raw_b(const Server& server, const std::string& bytes) {
  Socket b = connect_tcp(server.port_b());
  if (!bytes.empty()) send_all(b, bytes);
  return b;
}

}  // namespace

TEST_CASE("TUNNEL/1 CONTROL is answered OK") {
  Server server;
  Socket control = raw_b(server, "TUNNEL/1 CONTROL\n");
  ReadResult answer = read_line(control, 5s);
  INFO(answer.describe());
  CHECK(answer.end == End::complete);
  CHECK(std::regex_match(answer.data, std::regex("OK( [!-~]+)*")));
  server.wait_for_line("event=client-online", 2s);
}

TEST_CASE("a second TUNNEL/1 CONTROL while the first answers PING gets ERR busy and is closed") {
  Server server;
  FakeControl first(server.port_b());
  REQUIRE(first.answer() == "OK");

  const auto start = Clock::now();
  Socket second = raw_b(server, "TUNNEL/1 CONTROL\n");
  ReadResult answer = read_line(second, 5s);
  const auto ms = ms_since(start);
  INFO("second: " << answer.describe() << " after " << ms << " ms");
  CHECK(answer.end == End::complete);
  CHECK(std::regex_match(answer.data, std::regex("ERR busy( .*)?")));
  CHECK(ms < 1000);
  ReadResult rest = read_to_end(second, 3s);
  INFO("after the answer: " << rest.describe());
  CHECK(closed_without_data(rest));
  CHECK(first.pings_seen() >= 1);
  server.wait_for_line(Match::regex("event=control-refused reason=busy"), 2s);

  // The first session still works: it is told about a new A connection.
  Socket a = connect_tcp(server.port_a());
  const std::string id = first.wait_new(3s);
  CHECK(std::regex_match(id, std::regex("[0-9a-f]{32}")));
  CHECK_FALSE(first.closed());
}

TEST_CASE("DATA with an unknown random id is closed without a byte") {
  EchoTunnel t;
  LiveConnection live(t);
  Socket b = raw_b(t.server, "TUNNEL/1 DATA " + random_id() + "\n");
  const auto start = Clock::now();
  ReadResult r = read_to_end(b, 3s);
  INFO(r.describe() << " after " << ms_since(start) << " ms");
  CHECK(closed_without_data(r));
  CHECK(ms_since(start) < 1000);
  t.server.wait_for_line(Match::regex("event=b-refused reason=unknown-id"), 2s);
  check_undisturbed(t, live);
}

TEST_CASE("a malformed first line on B is closed") {
  EchoTunnel t({"--handshake-timeout", "10s"});
  LiveConnection live(t);
  const std::vector<std::string> garbage = {
      "HELLO\n",
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
      "TUNNEL/1\n",
      "TUNNEL/1 FOO\n",
      "\n",
      "TUNNEL/1 DATA\n",
      "tunnel/1 control\n",
      "TUNNEL/2 CONTROL\n",
      std::string("\x00\x01\x02\xff\n", 5),
  };
  for (const auto& line : garbage) {
    Socket b = raw_b(t.server, line);
    // Well before the 10 s handshake timeout: the line itself is refused.
    require_closed(b, "first line \"" + line + "\"", 1000ms);
  }
  t.server.wait_for_line("event=b-refused", 2s);
  check_undisturbed(t, live);
}

TEST_CASE("an oversize line on B is closed") {
  EchoTunnel t({"--handshake-timeout", "10s"});
  LiveConnection live(t);
  Socket b = raw_b(t.server, std::string(300, 'A'));  // more than 256 bytes, no newline
  require_closed(b, "300 bytes without a newline", 1000ms);
  t.server.wait_for_line(Match::regex("event=b-refused reason=line-too-long"), 2s);
  check_undisturbed(t, live);
}

TEST_CASE("a first line of 256 bytes with its newline is accepted and one of 257 is refused") {
  Server server({"--handshake-timeout", "10s"});
  auto line_of = [](size_t total) {
    std::string line = "TUNNEL/1 CONTROL";
    while (line.size() + 1 < total) line += line.size() + 2 < total ? " x" : "x";
    return line + "\n";
  };
  REQUIRE(line_of(257).size() == 257);
  Socket too_long = raw_b(server, line_of(257));
  require_closed(too_long, "a 257-byte first line", 1000ms);

  REQUIRE(line_of(256).size() == 256);
  Socket longest = raw_b(server, line_of(256));
  ReadResult answer = read_line(longest, 5s);
  INFO("answer to a 256-byte CONTROL line (unknown features): " << answer.describe());
  CHECK(answer.end == End::complete);
  CHECK(answer.data.rfind("OK", 0) == 0);
}

TEST_CASE("a silent B connection is closed after the handshake timeout") {
  EchoTunnel t({"--handshake-timeout", "300ms"});
  LiveConnection live(t);
  const auto start = Clock::now();
  Socket silent = raw_b(t.server, "");
  Socket slow = raw_b(t.server, "TUNNEL/1 CONT");  // a first line that never ends
  ReadResult r1 = read_to_end(silent, 5s);
  const auto ms1 = ms_since(start);
  ReadResult r2 = read_to_end(slow, 5s);
  const auto ms2 = ms_since(start);
  INFO("silent: " << r1.describe() << " after " << ms1 << " ms; slow: " << r2.describe()
                  << " after " << ms2 << " ms");
  MEASURED("row 8: silent B closed after " << ms1 << " ms, unfinished line after " << ms2
                                           << " ms, for --handshake-timeout 300ms");
  CHECK(closed_without_data(r1));
  CHECK(closed_without_data(r2));
  CHECK(ms1 >= 250);
  CHECK(ms1 <= 1500);
  CHECK(ms2 <= 1500);
  t.server.wait_for_line(Match::regex("event=b-refused reason=handshake-timeout"), 2s);
  check_undisturbed(t, live);
}

TEST_CASE("none of the bad B peers disturbs an active tunnel connection") {
  EchoTunnel t({"--handshake-timeout", "300ms"});
  LiveConnection live(t);
  std::vector<Socket> peers;
  peers.push_back(raw_b(t.server, ""));
  peers.push_back(raw_b(t.server, "TUNNEL/1 CONT"));
  peers.push_back(raw_b(t.server, "GET / HTTP/1.1\r\n\r\n"));
  peers.push_back(raw_b(t.server, std::string(4096, 'x')));
  peers.push_back(raw_b(t.server, "TUNNEL/1 DATA " + random_id() + "\n"));
  peers.push_back(raw_b(t.server, "TUNNEL/1 DATA 0123\n"));
  peers.push_back(raw_b(t.server, "TUNNEL/1 CONTROL\n"));  // answered ERR busy: the client PONGs
  live.check();
  for (auto& p : peers) {
    ReadResult r = read_to_end(p, 5s);
    INFO(r.describe());
    CHECK((r.end == End::eof || r.end == End::reset));
  }
  check_undisturbed(t, live);
  live.check();
}

TEST_CASE("a control hello followed at once by a reset does not bring the server down") {
  // The OK answer meets a reset socket: the session must end from the loop, not under the code
  // that was still opening it (this once crashed the server).
  Server server;
  for (int i = 0; i < 50; ++i) {
    Socket b = raw_b(server, "TUNNEL/1 CONTROL\n");
    reset_close(b);
  }
  REQUIRE(server.process().running());
  FakeControl control(server.port_b());
  CHECK(control.answer() == "OK");
  CHECK(server.process().running());
}

TEST_CASE(
    "a flood of control hellos while the client answers is refused and logged at most once a "
    "second") {
  Server server;
  FakeControl first(server.port_b());
  REQUIRE(first.answer() == "OK");
  const size_t from = server.mark();
  const auto start = Clock::now();
  constexpr int kHellos = 40;
  for (int i = 0; i < kHellos; ++i) {
    Socket newcomer = raw_b(server, "TUNNEL/1 CONTROL\n");
    ReadResult answer = read_line(newcomer, 5s);
    INFO("hello " << i << ": " << answer.describe());
    REQUIRE(std::regex_match(answer.data, std::regex("ERR busy( .*)?")));
  }
  const auto seconds = ms_since(start) / 1000 + 1;
  // Anyone who reaches B can send these: the log must not grow with them.
  const size_t probing = server.log().count("event=probing", from);
  const size_t refused = server.log().count("event=control-refused", from);
  INFO(kHellos << " hellos in " << ms_since(start) << " ms: " << probing << " event=probing and "
               << refused << " event=control-refused lines");
  CHECK(probing <= static_cast<size_t>(seconds) + 1);
  CHECK(refused <= static_cast<size_t>(seconds) + 1);
  CHECK_FALSE(first.closed());
}
