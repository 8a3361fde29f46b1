// Reconnect backoff: full jitter under a bound that doubles from the first delay up to the cap.
#include "tunnel/backoff.hpp"

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using tunnel::Backoff;
using tunnel::Duration;

TEST_CASE("backoff delays stay under a bound that doubles up to the cap", "[backoff]") {
  Backoff backoff(100ms, 30s);
  Duration expected_bound = 100ms;
  for (int attempt = 0; attempt < 20; ++attempt) {
    INFO("attempt " << attempt << " bound " << expected_bound.count() << " ms");
    REQUIRE(backoff.bound() == expected_bound);
    Duration delay = backoff.next();
    CHECK(delay >= 0ms);
    CHECK(delay <= expected_bound);
    expected_bound = std::min<Duration>(expected_bound * 2, 30s);
  }
  CHECK(backoff.bound() == 30s);
}

TEST_CASE("backoff delays are jittered, not all equal to the bound", "[backoff]") {
  Backoff backoff(1s, 1s);
  int below_bound = 0;
  for (int i = 0; i < 100; ++i)
    if (backoff.next() < 1s) ++below_bound;
  // Full jitter draws uniformly in [0, bound]: all 100 landing on the bound would be a bug.
  CHECK(below_bound > 50);
}

TEST_CASE("backoff reset starts again from the first delay", "[backoff]") {
  Backoff backoff(100ms, 30s);
  for (int i = 0; i < 8; ++i) backoff.next();
  REQUIRE(backoff.bound() > 100ms);
  backoff.reset();
  CHECK(backoff.bound() == 100ms);
  CHECK(backoff.next() <= 100ms);
}

TEST_CASE("a cap below the first delay is raised to it", "[backoff]") {
  Backoff backoff(200ms, 50ms);
  CHECK(backoff.next() <= 200ms);
  CHECK(backoff.bound() == 200ms);
}
