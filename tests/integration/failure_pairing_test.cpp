// Failure behaviour (docs/ARCHITECTURE.md), the rows about an A connection waiting to be paired: no
// client, no DATA in time, bad ids on B, --max-pending. Outcome and timing
// asserted; bad flags and garbage on B are in cli_test and protocol_test, the others in
// failure_session_test.
#include <catch2/catch.hpp>
#include <regex>

#include "support/daemons.hpp"
#include "support/echo_tunnel.hpp"
#include "support/fake_control.hpp"
#include "support/report.hpp"
#include "support/scripted_target.hpp"
#include "support/socket_io.hpp"

using namespace tunnel::test;
using namespace std::chrono_literals;

namespace {

// A data connection opened by hand on B for an id the fake control received, paired with `a`.
struct RawPair {
  Socket a;
  Socket data;
  std::string id;
};

Socket open_data(uint16_t port_b, const std::string& id) {
  Socket data = connect_tcp(port_b);
  send_all(data, "TUNNEL/1 DATA " + id + "\n");
  return data;
}

// Sends distinct bytes each way through the pair and requires them to arrive unchanged.
void check_relays(const RawPair& pair, const std::string& tag) {
  const std::string up = "up " + tag + "\n", down = "down " + tag + "\n";
  send_all(pair.a, up);
  CHECK(read_exact(pair.data, up.size(), 5s) == up);
  send_all(pair.data, down);
  CHECK(read_exact(pair.a, down.size(), 5s) == down);
}

RawPair open_raw_pair(const Server& server, FakeControl& control) {
  RawPair pair;
  pair.a = connect_tcp(server.port_a());
  pair.id = control.wait_new(5s);
  pair.data = open_data(server.port_b(), pair.id);
  check_relays(pair, "pairing " + pair.id);
  return pair;
}

// Requires a B connection to be closed by the server without a byte, promptly (not at the
// handshake timeout of 5 s).
void require_refused(const Socket& b, const std::string& what) {
  const auto start = Clock::now();
  ReadResult r = read_to_end(b, 3s);
  const auto ms = ms_since(start);
  INFO(what << ": " << r.describe() << " after " << ms << " ms");
  CHECK(closed_without_data(r));
  CHECK(ms < 1000);
}

}  // namespace

// Row 1 ---------------------------------------------------------------------------------------

TEST_CASE("no client online when A accepts: served if a client registers within pair-timeout") {
  EchoTarget echo;
  Server server({"--pair-timeout", "3s"});
  const auto start = Clock::now();
  Socket a = connect_tcp(server.port_a());
  const std::string request = "sent while no client is online\n";
  send_all(a, request);
  server.wait_for_line("event=accepted", 5s);

  Client client(server.port_b(), echo.address());
  wait_session(server, client);
  CHECK(read_exact(a, request.size(), 5s) == request);
  const auto served_ms = ms_since(start);
  shutdown_write(a);
  ReadResult end = read_to_end(a, 5s);
  INFO(end.describe());
  CHECK(end.data.empty());
  CHECK(end.end == End::eof);
  MEASURED("row 1 (served): A connection waited and was served after " << served_ms << " ms");
  CHECK(served_ms < 3000);
  CHECK_FALSE(server.log().find("reason=no-client").has_value());
}

TEST_CASE("no client online when A accepts: closed at pair-timeout and logged reason=no-client") {
  Server server({"--pair-timeout", "500ms"});
  const auto start = Clock::now();
  Socket a = connect_tcp(server.port_a());
  send_all(a, "nobody will read this\n");
  ReadResult r = read_to_end(a, 5s);
  const auto ms = ms_since(start);
  INFO("A: " << r.describe() << " after " << ms << " ms");
  MEASURED("row 1 (no client): A closed after " << ms << " ms for --pair-timeout 500ms");
  CHECK(closed_without_data(r));
  CHECK(ms >= 400);
  CHECK(ms <= 1500);
  const std::string failed = server.wait_for_line(conn_failed("no-client"), 2s);
  const int waited = std::stoi(field(failed, "waited_ms").value_or("-1"));
  INFO(failed);
  CHECK(waited >= 400);
  CHECK(waited <= 1500);
}

// Row 2 ---------------------------------------------------------------------------------------

TEST_CASE(
    "client online but no DATA arrives in time: A closed at pair-timeout, late DATA refused") {
  Server server({"--pair-timeout", "500ms"});
  FakeControl control(server.port_b());
  REQUIRE(control.answer() == "OK");

  const auto start = Clock::now();
  Socket a = connect_tcp(server.port_a());
  send_all(a, "must never be delivered\n");
  const std::string id = control.wait_new(2s);
  CHECK(std::regex_match(id, std::regex("[0-9a-f]{32}")));

  ReadResult r = read_to_end(a, 5s);
  const auto ms = ms_since(start);
  INFO("A: " << r.describe() << " after " << ms << " ms");
  MEASURED("row 2: A closed after " << ms << " ms for --pair-timeout 500ms");
  CHECK(closed_without_data(r));
  CHECK(ms >= 400);
  CHECK(ms <= 1500);
  const std::string failed = server.wait_for_line(
      Match::regex("event=conn-failed conn=" + id.substr(0, 8) + " .*reason=pair-timeout( |$)"),
      2s);
  const int waited = std::stoi(field(failed, "waited_ms").value_or("-1"));
  INFO(failed);
  CHECK(waited >= 400);
  CHECK(waited <= 1500);

  const size_t mark = server.mark();
  Socket late = open_data(server.port_b(), id);
  require_refused(late, "late DATA for the expired id");
  server.wait_for_line("event=b-refused", 2s, mark);
  CHECK_FALSE(control.closed());
}
// Row 3 ---------------------------------------------------------------------------------------

TEST_CASE("unknown, malformed, reused or duplicate id on B: an unknown id is closed") {
  Server server({"--pair-timeout", "5s"});
  FakeControl control(server.port_b());
  REQUIRE(control.online());
  RawPair active = open_raw_pair(server, control);

  Socket unknown = open_data(server.port_b(), random_id());
  require_refused(unknown, "DATA with an unknown id");
  server.wait_for_line(Match::regex("event=b-refused reason=unknown-id"), 2s);

  check_relays(active, "after the unknown id");
  RawPair next = open_raw_pair(server, control);
  check_relays(next, "new pair after the unknown id");
  CHECK_FALSE(control.closed());
}

TEST_CASE("unknown, malformed, reused or duplicate id on B: a malformed id is closed") {
  Server server({"--pair-timeout", "5s"});
  FakeControl control(server.port_b());
  REQUIRE(control.online());
  RawPair active = open_raw_pair(server, control);

  // A pending connection whose id is then offered in malformed variants: none may pair it.
  Socket pending_a = connect_tcp(server.port_a());
  const std::string id = control.wait_new(5s);
  std::string upper = id;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::vector<std::string> malformed = {
      id.substr(0, 31),        // 31 digits
      id + "0",                // 33 digits
      upper,                   // not lowercase (all-digit ids are vanishingly rare)
      id.substr(0, 31) + "g",  // not hex
      "",                      // no id at all
  };
  const size_t mark = server.mark();
  for (const auto& bad : malformed) {
    Socket b = connect_tcp(server.port_b());
    send_all(b, (bad.empty() ? "TUNNEL/1 DATA" : "TUNNEL/1 DATA " + bad) + "\n");
    require_refused(b, "DATA \"" + bad + "\"");
  }
  server.wait_for_line("event=b-refused", 2s, mark);

  // The pending connection is still pairable with its exact id, and the active pair unaffected.
  RawPair pending{std::move(pending_a), open_data(server.port_b(), id), id};
  check_relays(pending, "pending pairs after the malformed ones");
  check_relays(active, "after the malformed ids");
  CHECK_FALSE(control.closed());
}

TEST_CASE("unknown, malformed, reused or duplicate id on B: a reused id is closed") {
  Server server({"--pair-timeout", "5s"});
  FakeControl control(server.port_b());
  REQUIRE(control.online());
  RawPair active = open_raw_pair(server, control);

  Socket again = open_data(server.port_b(), active.id);
  require_refused(again, "DATA for an id already paired");
  check_relays(active, "after the reuse attempt");

  // Ended, the id stays forgotten.
  shutdown_write(active.a);
  shutdown_write(active.data);
  CHECK(closed_without_data(read_to_end(active.a, 5s)));
  CHECK(closed_without_data(read_to_end(active.data, 5s)));
  Socket after_end = open_data(server.port_b(), active.id);
  require_refused(after_end, "DATA for an id whose connection has ended");

  RawPair next = open_raw_pair(server, control);
  check_relays(next, "new pair after the reuse attempts");
}

TEST_CASE(
    "unknown, malformed, reused or duplicate id on B: of two DATA with one id only one pairs") {
  Server server({"--pair-timeout", "5s"});
  FakeControl control(server.port_b());
  REQUIRE(control.online());
  RawPair active = open_raw_pair(server, control);

  Socket a = connect_tcp(server.port_a());
  const std::string id = control.wait_new(5s);
  Socket first = open_data(server.port_b(), id);
  Socket second = open_data(server.port_b(), id);
  const std::string hello = "which one of you?\n";
  send_all(a, hello);
  ReadResult r1 = read_up_to(first, hello.size(), 3s);
  ReadResult r2 = read_up_to(second, hello.size(), 3s);
  INFO("first DATA: " << r1.describe() << "; second DATA: " << r2.describe());
  const bool first_paired = r1.end == End::complete && r1.data == hello;
  const bool second_paired = r2.end == End::complete && r2.data == hello;
  REQUIRE(first_paired != second_paired);
  CHECK(closed_without_data(first_paired ? r2 : r1));
  RawPair paired{std::move(a), std::move(first_paired ? first : second), id};
  check_relays(paired, "the duplicate's winner");
  check_relays(active, "after the duplicate");
}
// Row 9 ---------------------------------------------------------------------------------------

TEST_CASE(
    "max-pending: the A connection beyond --max-pending is closed at once and the first ones keep "
    "waiting") {
  EchoTarget echo;
  Server server({"--max-pending", "3", "--pair-timeout", "10s"});
  std::vector<Socket> waiting;
  for (int i = 0; i < 3; ++i) waiting.push_back(connect_tcp(server.port_a()));
  wait_until([&] { return server.log().count("event=accepted") >= 3; }, 5s,
             "the server to log event=accepted for the first three A connections");

  const auto start = Clock::now();
  Socket fourth = connect_tcp(server.port_a());
  ReadResult r = read_to_end(fourth, 3s);
  const auto ms = ms_since(start);
  INFO("fourth A connection: " << r.describe() << " after " << ms << " ms");
  MEASURED("row 9: the fourth A connection was closed after " << ms << " ms");
  CHECK(closed_without_data(r));
  CHECK(ms < 200);
  server.wait_for_line(shed("max-pending"), 2s);

  for (auto& s : waiting) CHECK_FALSE(wait_readable(s, 0ms));
  Client client(server.port_b(), echo.address());
  wait_session(server, client);
  for (size_t i = 0; i < waiting.size(); ++i) {
    const std::string msg = "waiting connection " + std::to_string(i) + " served\n";
    send_all(waiting[i], msg);
    CHECK(read_exact(waiting[i], msg.size(), 5s) == msg);
    shutdown_write(waiting[i]);
    CHECK(read_to_end(waiting[i], 5s).end == End::eof);
  }
}
