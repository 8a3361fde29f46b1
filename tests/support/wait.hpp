// Bounded waiting for conditions no event announces (fd counts, flags set by other threads): poll
// every few milliseconds and fail with a description of what was awaited when the deadline passes.
#pragma once

#include <chrono>
#include <functional>
#include <future>
#include <stdexcept>
#include <string>

namespace tunnel::test {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

// What every bounded wait of the support library throws when its deadline passes.
struct WaitTimeout : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Polls `predicate` until it holds; throws WaitTimeout naming `description` otherwise.
void wait_until(const std::function<bool()>& predicate, Millis timeout,
                const std::string& description);

// Polls `predicate` until it holds; false when `timeout` passed first.
bool poll_until(const std::function<bool()>& predicate, Millis timeout);

// The value of `future` once ready; throws WaitTimeout naming `description` if it is not in time.
template <typename T>
T get_within(std::future<T>& future, Millis timeout, const std::string& description) {
  if (future.wait_for(timeout) != std::future_status::ready) {
    throw WaitTimeout("timed out after " + std::to_string(timeout.count()) +
                      " ms waiting for: " + description);
  }
  return future.get();
}

// Milliseconds elapsed since `start`, as a plain number for messages and comparisons.
long long ms_since(Clock::time_point start);

}  // namespace tunnel::test
