// Failure behaviour (docs/ARCHITECTURE.md), row "client process dies mid-stream ... no leak":
// 300 connections ended normally or by a reset from either end; both daemons' fds return to
// baseline.
#include <catch2/catch.hpp>
#include <thread>

#include "support/daemons.hpp"
#include "support/fd_count.hpp"
#include "support/payload.hpp"
#include "support/report.hpp"
#include "support/scripted_target.hpp"
#include "support/socket_io.hpp"

using namespace tunnel::test;
using namespace std::chrono_literals;

namespace {

enum class Ending { normal, external_reset, target_reset };

Ending ending_for(size_t i) {
  switch (i % 3) {
    case 0:
      return Ending::external_reset;
    case 1:
      return Ending::target_reset;
    default:
      return Ending::normal;
  }
}

// Each connection starts with "<index>\n" so the target knows how this one must end.
void target_side(Socket& c, size_t) {
  ReadResult header = read_line(c, 10s, 32);
  if (header.end != End::complete) throw std::runtime_error("no header: " + header.describe());
  const size_t i = std::stoul(header.data);
  const std::string payload = make_payload(i, 1 + (i * 4099) % 32768);
  const std::string got = read_exact(c, payload.size(), 10s);
  if (got != payload) throw std::runtime_error("payload " + std::to_string(i) + " differs");
  if (ending_for(i) == Ending::target_reset) {
    send_all(c, "reset follows\n");
    reset_close(c);
    return;
  }
  send_all(c, got);
  // normal: until the external side's FIN; external_reset: until its RST.
  ReadResult rest = read_to_end(c, 10s);
  if (!rest.data.empty()) throw std::runtime_error("unexpected bytes after the payload");
  if (ending_for(i) == Ending::normal && rest.end != End::eof) {
    throw std::runtime_error("connection " + std::to_string(i) + " ended by " + rest.describe());
  }
}

// The external side of connection `i`; empty when everything went as required.
std::string external_side(uint16_t port_a, size_t i) {
  Socket a = connect_tcp(port_a, 10s);
  const std::string payload = make_payload(i, 1 + (i * 4099) % 32768);
  send_all(a, std::to_string(i) + "\n" + payload, 10s);
  switch (ending_for(i)) {
    case Ending::external_reset: {
      if (read_exact(a, payload.size(), 10s) != payload) return "echo differs";
      reset_close(a);
      return "";
    }
    case Ending::target_reset: {
      ReadResult r = read_to_end(a, 10s);
      const std::string sent = "reset follows\n";
      if (r.data != sent.substr(0, r.data.size())) return "unexpected bytes: " + r.describe();
      if (r.end != End::eof && r.end != End::reset) return "not closed: " + r.describe();
      return "";
    }
    case Ending::normal: {
      if (read_exact(a, payload.size(), 10s) != payload) return "echo differs";
      shutdown_write(a);
      ReadResult r = read_to_end(a, 10s);
      if (!r.data.empty() || r.end != End::eof) return "end: " + r.describe();
      return "";
    }
  }
  return "unreachable";
}

}  // namespace

TEST_CASE(
    "300 connections ended normally or by resets from either side leave no descriptor behind") {
  constexpr size_t kConnections = 300;
  constexpr size_t kWorkers = 10;
  ScriptedTarget target(target_side);
  Server server;
  Client client(server.port_b(), target.address());
  server.wait_for_line("event=client-online", kStartTimeout);
  client.wait_online();
  const FdCensus server_baseline = settled_census(server.pid());
  const FdCensus client_baseline = settled_census(client.pid());

  std::vector<std::string> failures(kConnections);
  std::vector<std::thread> workers;
  for (size_t w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      for (size_t i = w; i < kConnections; i += kWorkers) {
        try {
          failures[i] = external_side(server.port_a(), i);
        } catch (const std::exception& e) {
          failures[i] = e.what();
        }
      }
    });
  }
  for (auto& th : workers) th.join();
  size_t failed = 0;
  for (size_t i = 0; i < kConnections; ++i) {
    if (!failures[i].empty() && ++failed <= 5) {
      UNSCOPED_INFO("connection " << i << ": " << failures[i]);
    }
  }
  CHECK(failed == 0);
  wait_until([&] { return target.active() == 0; }, 10s,
             "every target connection to be closed by the client");
  CHECK(target.accepted() == kConnections);
  for (const auto& e : target.errors()) UNSCOPED_INFO("target: " << e);
  CHECK(target.errors().empty());

  // Exactly the baseline, pipes included: the pools close their idle pipes within a few seconds
  // of the last relay (PipeTrimmer), so nothing at all may remain.
  const auto settle = Clock::now();
  wait_fds_back(server.pid(), server_baseline, 0, 10s, "tunnel-server");
  wait_fds_back(client.pid(), client_baseline, 0, 10s, "tunnel-client");
  MEASURED("leak: server " << server_baseline.summary() << " before, "
                           << fd_census(server.pid()).summary() << " after; client "
                           << client_baseline.summary() << " before, "
                           << fd_census(client.pid()).summary() << " after (settled in "
                           << ms_since(settle) << " ms)");
  CHECK(server.log().count("event=client-offline") == 0);
}
