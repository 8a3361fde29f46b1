// Deadlines kept in a binary heap; cancellation is lazy (the entry is forgotten and skipped when it
// surfaces) so cancel is O(1) and thousands of pending timers stay cheap.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <queue>
#include <unordered_map>
#include <vector>

namespace tunnel {

using Clock = std::chrono::steady_clock;
using TimerId = uint64_t;

class TimerQueue {
 public:
  TimerId schedule(Clock::time_point deadline, std::function<void()> callback);
  void cancel(TimerId id);
  // Milliseconds until the earliest live deadline, rounded up; -1 when there is none.
  int next_timeout_ms(Clock::time_point now);
  // Runs every callback whose deadline is at or before `now`, earliest first.
  void run_expired(Clock::time_point now);
  size_t size() const { return live_.size(); }

 private:
  struct Entry {
    Clock::time_point deadline;
    TimerId id;
    bool operator>(const Entry& other) const {
      return deadline != other.deadline ? deadline > other.deadline : id > other.id;
    }
  };
  struct Live {
    Clock::time_point deadline;
    std::function<void()> callback;
  };
  void drop_cancelled_top();
  void compact_if_mostly_cancelled();

  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap_;
  std::unordered_map<TimerId, Live> live_;
  TimerId next_id_ = 1;
};

}  // namespace tunnel
