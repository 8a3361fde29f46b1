// A stream of short request/response connections to one port from a few threads, for checking
// that a tunnel keeps serving while something changes under it. Each attempt connects, sends a
// small request, half-closes and expects a BannerEcho's answer: "<banner>\n" then the request
// exactly, then EOF. Every attempt is recorded with its times, so that a test can judge those
// that started after some event.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/wait.hpp"

namespace tunnel::test {

struct Attempt {
  Clock::time_point start;
  Clock::time_point end;
  bool ok = false;
  std::string banner;  // who answered (when the answer had a banner line)
  std::string error;   // why it failed
};

class RequestLoad {
 public:
  // Starts `threads` workers on 127.0.0.1:port; each attempt may take up to `attempt_timeout`.
  RequestLoad(uint16_t port, size_t threads, size_t request_size = 600,
              Millis attempt_timeout = Millis(10000));
  ~RequestLoad();
  RequestLoad(const RequestLoad&) = delete;
  RequestLoad& operator=(const RequestLoad&) = delete;

  // Stops the workers (each finishes its attempt in progress) and joins them.
  void stop();
  std::vector<Attempt> attempts() const;
  size_t finished() const;
  // Waits until `n` more attempts than now have finished; throws WaitTimeout saying how many did.
  void wait_for_more(size_t n, Millis timeout) const;

 private:
  void work(size_t worker);

  uint16_t port_;
  size_t request_size_;
  Millis attempt_timeout_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::vector<Attempt> attempts_;
  std::vector<std::thread> workers_;
};

// Counts of a set of attempts, for assertions and reports.
struct LoadSummary {
  size_t total = 0;
  size_t failed = 0;
  std::map<std::string, size_t> by_banner;  // successful attempts by who answered
  std::string first_errors;                 // the first few failures, one per line
  std::string describe() const;             // "N attempts, F failed, banner: n, ..." + errors
};

// The attempts that started at or after `since` (all of them when `since` is the epoch).
std::vector<Attempt> started_since(const std::vector<Attempt>& attempts, Clock::time_point since);
LoadSummary summarize(const std::vector<Attempt>& attempts);

}  // namespace tunnel::test
