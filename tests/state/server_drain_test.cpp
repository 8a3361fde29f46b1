// The whole Server in-process at shutdown: drain in the same batch as a B connection's first line.
#include <catch2/catch.hpp>
#include <string>

#include "server.hpp"
#include "state_support.hpp"
#include "tunnel/socket.hpp"

using namespace std::chrono_literals;
using namespace state_tests;

namespace {

tunnel::server::ServerConfig loopback_config() {
  tunnel::server::ServerConfig config;
  tunnel::server::ServiceConfig service;
  service.name = "default";
  service.listen = {"127.0.0.1", 0};
  config.services = {service};
  config.listen_b = {"127.0.0.1", 0};
  return config;
}

}  // namespace

// Review finding: the handshakes retired by drain() stayed registered until the batch ended; one
// whose first line was in that batch still reported it, to a server that no longer knew it (an
// internal error, and in debug builds an assertion that killed the daemon).
TEST_CASE(
    "drain in the same batch as a B connection's first line: the line is ignored, the socket "
    "closed") {
  ManualLoop manual;
  tunnel::server::Server server(manual.loop, loopback_config());
  std::error_code ec;
  tunnel::Fd b = tunnel::start_connect(server.address_b(), ec);
  REQUIRE(b);
  // Wait until the server has a handshake for it (accepted), then send the line and drain before
  // the loop reads it.
  manual.settle(20);
  REQUIRE(write_all(b.get(), "TUNNEL/1 CONTROL\n"));
  bool drained = false;
  server.drain([&] { drained = true; });
  manual.settle(10);
  CHECK(drained);
  CHECK(server.sessions().online() == 0);
  std::string got;
  REQUIRE(manual.pump_until([&] { return !read_available(b.get(), got); }));
  INFO("the B connection read: [" << got << "]");
  CHECK(got.empty());  // neither OK nor an error: it was closed unanswered
  CHECK(manual.loop.internal_errors() == 0);
}
