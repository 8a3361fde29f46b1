// Polling waits for the integration tests.
#include "support/wait.hpp"

#include <thread>

namespace tunnel::test {

namespace {
constexpr Millis kPollInterval{3};
}

bool poll_until(const std::function<bool()>& predicate, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    if (predicate()) return true;
    if (Clock::now() >= deadline) return predicate();
    std::this_thread::sleep_for(kPollInterval);
  }
}

void wait_until(const std::function<bool()>& predicate, Millis timeout,
                const std::string& description) {
  if (!poll_until(predicate, timeout)) {
    throw WaitTimeout("timed out after " + std::to_string(timeout.count()) +
                      " ms waiting for: " + description);
  }
}

long long ms_since(Clock::time_point start) {
  return std::chrono::duration_cast<Millis>(Clock::now() - start).count();
}

}  // namespace tunnel::test
