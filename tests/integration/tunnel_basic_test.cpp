// Data through the real tunnel (docs/ARCHITECTURE.md, life of one external connection): round trip,
// 64 MiB each way at once, half-close both ways, bytes sent before pairing, 200 concurrent
// connections. Every byte is compared.
#include <catch2/catch.hpp>
#include <csignal>
#include <future>
#include <latch>
#include <thread>

#include "support/daemons.hpp"
#include "support/echo_tunnel.hpp"
#include "support/payload.hpp"
#include "support/report.hpp"
#include "support/scripted_target.hpp"
#include "support/socket_io.hpp"
#include "support/transfer.hpp"

using namespace tunnel::test;
using namespace std::chrono_literals;

TEST_CASE("round trip through the tunnel returns every byte and an orderly EOF") {
  EchoTunnel t;
  echo_round_trip(t.server.port_a(), "hello through the tunnel\n");
  echo_round_trip(t.server.port_a(), make_payload(1, 300 * 1000));
  CHECK(t.echo.errors().empty());
}

TEST_CASE("64 MiB each way at the same time arrive intact") {
  constexpr uint64_t kSize = 64ULL << 20;
  constexpr uint64_t kUpSeed = 0x1111, kDownSeed = 0x2222;
  std::promise<std::pair<SendReport, ReceiveReport>> at_target;
  ScriptedTarget target([&](Socket& c, size_t index) {
    if (index != 0) throw std::runtime_error("unexpected second connection");
    SendReport sent;
    std::thread down([&] { sent = send_stream(c, kDownSeed, kSize, 30s); });
    ReceiveReport got = receive_stream(c, kUpSeed, 30s);
    down.join();
    at_target.set_value({sent, got});
  });
  Server server;
  Client client(server.port_b(), target.address());
  wait_session(server, client);

  const auto start = Clock::now();
  Socket a = connect_tcp(server.port_a());
  SendReport sent_up;
  std::thread up([&] { sent_up = send_stream(a, kUpSeed, kSize, 30s); });
  ReceiveReport got_down = receive_stream(a, kDownSeed, 30s);
  up.join();
  auto target_side = at_target.get_future();
  auto [sent_down, got_up] = get_within(target_side, 30s, "the target's side of the transfer");
  const auto ms = ms_since(start);
  INFO("both transfers took " << ms << " ms");
  MEASURED("64 MiB each way at once through the tunnel in " << ms << " ms");

  INFO("external sender: " << sent_up.sent << " bytes sent, " << sent_up.error);
  INFO("target sender: " << sent_down.sent << " bytes sent, " << sent_down.error);
  CHECK(sent_up.error.empty());
  CHECK(sent_down.error.empty());
  INFO("external -> target: " << got_up.describe());
  CHECK(got_up.received == kSize);
  CHECK_FALSE(got_up.first_mismatch);
  CHECK(got_up.checksum == sent_up.checksum);
  CHECK(got_up.end == End::eof);
  INFO("target -> external: " << got_down.describe());
  CHECK(got_down.received == kSize);
  CHECK_FALSE(got_down.first_mismatch);
  CHECK(got_down.checksum == sent_down.checksum);
  CHECK(got_down.end == End::eof);
  CHECK(target.errors().empty());
}

TEST_CASE("half-close from the external side: the answer still flows back after the FIN") {
  std::promise<ReadResult> target_read;
  ScriptedTarget target([&](Socket& c, size_t) {
    ReadResult r = read_to_end(c, 10s);
    const bool got_request = r.end == End::eof;
    target_read.set_value(r);
    // Only after the external side's FIN has arrived here: the reverse direction must still work.
    if (got_request) send_all(c, "response sent after your FIN\n");
  });
  Server server;
  Client client(server.port_b(), target.address());
  wait_session(server, client);

  Socket a = connect_tcp(server.port_a());
  send_all(a, "request, then FIN\n");
  shutdown_write(a);
  ReadResult back = read_to_end(a, 10s);
  auto future = target_read.get_future();
  ReadResult at_target = get_within(future, 10s, "the target to read the request");
  INFO("target read: " << at_target.describe());
  CHECK(at_target.data == "request, then FIN\n");
  CHECK(at_target.end == End::eof);
  INFO("external read: " << back.describe());
  CHECK(back.data == "response sent after your FIN\n");
  CHECK(back.end == End::eof);
  CHECK(target.errors().empty());
}

TEST_CASE("half-close from the target side: the external side can still send after the FIN") {
  std::promise<ReadResult> target_read;
  ScriptedTarget target([&](Socket& c, size_t) {
    send_all(c, "greeting, then FIN\n");
    shutdown_write(c);
    target_read.set_value(read_to_end(c, 10s));
  });
  Server server;
  Client client(server.port_b(), target.address());
  wait_session(server, client);

  Socket a = connect_tcp(server.port_a());
  ReadResult greeting = read_to_end(a, 10s);
  INFO("external read: " << greeting.describe());
  CHECK(greeting.data == "greeting, then FIN\n");
  REQUIRE(greeting.end == End::eof);
  // The target's FIN arrived here; this direction must still carry bytes.
  const std::string late = make_payload(5, 100 * 1000);
  send_all(a, late);
  shutdown_write(a);
  auto future = target_read.get_future();
  ReadResult at_target = get_within(future, 10s, "the target to read until EOF");
  INFO("target read: " << at_target.describe());
  CHECK(at_target.data == late);
  CHECK(at_target.end == End::eof);
  CHECK(target.errors().empty());
}

TEST_CASE("bytes the external side sends before pairing are delivered") {
  EchoTarget echo;
  Server server;
  Socket a = connect_tcp(server.port_a());
  const std::string early = make_payload(7, 48 * 1024);
  send_all(a, early);
  server.wait_for_line("event=accepted", 5s);
  // Only now does a client exist: the bytes above were sent before any pairing was possible.
  Client client(server.port_b(), echo.address());
  wait_session(server, client);

  CHECK(read_exact(a, early.size(), 10s) == early);
  const std::string later = "and these after pairing\n";
  send_all(a, later);
  CHECK(read_exact(a, later.size(), 10s) == later);
  shutdown_write(a);
  ReadResult end = read_to_end(a, 10s);
  INFO(end.describe());
  CHECK(end.data.empty());
  CHECK(end.end == End::eof);
  CHECK(echo.errors().empty());
}

TEST_CASE("200 concurrent connections each carry their own payload intact") {
  constexpr int kConnections = 200;
  EchoTunnel t;
  std::latch all_connected(kConnections);
  std::latch all_verified(kConnections);
  std::vector<std::string> failures(kConnections);
  std::vector<std::thread> threads;
  for (int i = 0; i < kConnections; ++i) {
    threads.emplace_back([&, i] {
      Socket s;
      // Every thread arrives at both latches whatever happens, so a failure cannot hang the rest.
      try {
        s = connect_tcp(t.server.port_a(), 10s);
      } catch (const std::exception& e) {
        failures[i] = std::string("connect: ") + e.what();
      }
      all_connected.arrive_and_wait();
      const std::string payload = make_payload(1000 + i, 1 + (i * 7919) % 65536);
      if (failures[i].empty()) {
        try {
          send_all(s, payload, 30s);
          const std::string back = read_exact(s, payload.size(), 30s);
          if (back != payload) failures[i] = "payload came back different";
        } catch (const std::exception& e) {
          failures[i] = e.what();
        }
      }
      all_verified.arrive_and_wait();
      if (failures[i].empty()) {
        try {
          shutdown_write(s);
          ReadResult end = read_to_end(s, 30s);
          if (!end.data.empty() || end.end != End::eof) failures[i] = "end: " + end.describe();
        } catch (const std::exception& e) {
          failures[i] = e.what();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  size_t failed = 0;
  for (int i = 0; i < kConnections; ++i) {
    if (!failures[i].empty() && ++failed <= 5)
      UNSCOPED_INFO("connection " << i << ": " << failures[i]);
  }
  CHECK(failed == 0);
  // All were open at the target at once: held until every one was verified.
  CHECK(t.echo.max_active() == kConnections);
  CHECK(t.echo.errors().empty());
}

TEST_CASE("SIGHUP to the client: it says its config is read at start only and keeps serving") {
  EchoTarget echo;
  Server server;
  Client client(server.port_b(), echo.address());
  wait_session(server, client);
  const size_t mark = client.mark();
  client.process().signal(SIGHUP);
  client.wait_for_line("event=reload-unsupported", 5s, mark);
  Socket a = connect_tcp(server.port_a());
  const std::string request = "after the hangup\n";
  send_all(a, request);
  CHECK(read_exact(a, request.size(), 10s) == request);
  CHECK_FALSE(client.log().find("event=control-lost").has_value());
}
