// Reconnect delays: exponential with full jitter (a uniformly random delay up to the current
// bound), so that many clients cut off together do not come back in step.
#pragma once

#include <random>

#include "tunnel/duration.hpp"

namespace tunnel {

class Backoff {
 public:
  Backoff(Duration first, Duration cap);
  // The delay before the next attempt; the bound doubles each time up to the cap.
  Duration next();
  // The bound the next delay will be drawn under.
  Duration bound() const { return bound_; }
  void reset() { bound_ = first_; }

 private:
  Duration first_;
  Duration cap_;
  Duration bound_;
  std::mt19937_64 random_;
};

}  // namespace tunnel
