// A receiver that stops reading must stall the relay, not spin it: small segments can fill a
// splice pipe's slots long before its byte capacity, and the loop must then stop asking to read.
#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "ops_support.hpp"
#include "support/daemons.hpp"
#include "support/scripted_target.hpp"
#include "support/socket_io.hpp"
#include "support/wait.hpp"

using namespace tunnel::test;
using namespace std::chrono_literals;

TEST_CASE("a target that does not read while small segments keep coming costs no CPU") {
  std::atomic<bool> release{false};
  ScriptedTarget target([&](Socket&, size_t) {
    // Holds the connection open without reading until the test is over.
    while (!release.load()) std::this_thread::sleep_for(10ms);
  });
  Server server;
  Client client(server.port_b(), target.address());
  client.wait_online();

  Socket a = connect_tcp(server.port_a());
  set_nodelay(a);
  target.wait_for_accepted(1, 5s);
  // 7-byte segments for a few seconds, as fast as the windows allow: once the target's window is
  // shut, segments reach the relay one by one and each takes a pipe slot, far below its byte size.
  const std::string segment = "0123456";
  const auto stop_sending = Clock::now() + 3s;
  while (Clock::now() < stop_sending) {
    int error = 0;
    try_send_all(a, segment, 5ms, error);  // blocked windows are expected: keep pushing
  }

  // Now nothing moves: measure both daemons' CPU over a quiet second.
  const auto server_before = ops::cpu_time(server.pid());
  const auto client_before = ops::cpu_time(client.pid());
  const auto wall_start = Clock::now();
  std::this_thread::sleep_for(1s);  // proving that nothing happens takes a fixed wait
  const auto wall = ms_since(wall_start);
  const auto server_cpu = (ops::cpu_time(server.pid()) - server_before).count();
  const auto client_cpu = (ops::cpu_time(client.pid()) - client_before).count();
  INFO("over " << wall << " ms: server used " << server_cpu << " ms of CPU, client " << client_cpu
               << " ms");
  CHECK(server_cpu < 200);
  CHECK(client_cpu < 200);
  release = true;
}
