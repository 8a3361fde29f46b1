// Exponential backoff with full jitter.
#include "tunnel/backoff.hpp"

#include <algorithm>

namespace tunnel {

Backoff::Backoff(Duration first, Duration cap)
    : first_(first), cap_(std::max(cap, first)), bound_(first), random_(std::random_device{}()) {}

Duration Backoff::next() {
  std::uniform_int_distribution<int64_t> pick(0, bound_.count());
  Duration delay(pick(random_));
  bound_ = std::min(cap_, bound_ * 2);
  return delay;
}

}  // namespace tunnel
