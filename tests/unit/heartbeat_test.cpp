// Heartbeat: pings at the interval, death declared after the timeout of silence, hearing postpones.
#include "tunnel/heartbeat.hpp"

#include <catch2/catch.hpp>

#include "tunnel/event_loop.hpp"

using namespace std::chrono_literals;
using tunnel::Clock;

namespace {

// Runs the loop until `done` or the deadline; returns whether `done` became true.
template <typename Done>
bool run_until(tunnel::EventLoop& loop, Done done, Clock::duration limit) {
  auto deadline = Clock::now() + limit;
  while (!done() && Clock::now() < deadline) loop.run_once(10);
  return done();
}

}  // namespace

TEST_CASE("a silent peer is declared dead once, after the timeout", "[heartbeat]") {
  tunnel::EventLoop loop;
  int pings = 0, deaths = 0;
  tunnel::Heartbeat heartbeat(
      loop, {50ms, 200ms}, [&] { ++pings; }, [&] { ++deaths; });
  auto started = Clock::now();
  heartbeat.start();
  REQUIRE(run_until(
      loop, [&] { return deaths > 0; }, 2s));
  auto took = Clock::now() - started;
  CHECK(took >= 200ms);
  CHECK(took < 600ms);
  CHECK(pings >= 2);  // pings went out at the interval meanwhile
  // Dead is final: nothing more fires afterwards.
  int pings_at_death = pings;
  run_until(
      loop, [] { return false; }, 150ms);
  CHECK(deaths == 1);
  CHECK(pings == pings_at_death);
}

TEST_CASE("hearing from the peer keeps it alive", "[heartbeat]") {
  tunnel::EventLoop loop;
  int deaths = 0;
  tunnel::Heartbeat heartbeat(
      loop, {50ms, 200ms}, [] {}, [&] { ++deaths; });
  heartbeat.start();
  auto until = Clock::now() + 600ms;
  while (Clock::now() < until) {
    heartbeat.heard();
    loop.run_once(20);
  }
  CHECK(deaths == 0);
  // Then silence: death follows within about one timeout.
  REQUIRE(run_until(
      loop, [&] { return deaths > 0; }, 1s));
}

TEST_CASE("a stopped heartbeat neither pings nor declares death", "[heartbeat]") {
  tunnel::EventLoop loop;
  int pings = 0, deaths = 0;
  tunnel::Heartbeat heartbeat(
      loop, {20ms, 60ms}, [&] { ++pings; }, [&] { ++deaths; });
  heartbeat.start();
  heartbeat.stop();
  run_until(
      loop, [] { return false; }, 150ms);
  CHECK(pings == 0);
  CHECK(deaths == 0);
}
