// Binary-heap timers with lazy cancellation.
#include "tunnel/timer_queue.hpp"

namespace tunnel {

TimerId TimerQueue::schedule(Clock::time_point deadline, std::function<void()> callback) {
  TimerId id = next_id_++;
  heap_.push({deadline, id});
  live_.emplace(id, Live{deadline, std::move(callback)});
  compact_if_mostly_cancelled();
  return id;
}

void TimerQueue::cancel(TimerId id) {
  live_.erase(id);
}

int TimerQueue::next_timeout_ms(Clock::time_point now) {
  drop_cancelled_top();
  if (heap_.empty()) return -1;
  auto left = heap_.top().deadline - now;
  if (left <= Clock::duration::zero()) return 0;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return ms > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(ms);
}

void TimerQueue::run_expired(Clock::time_point now) {
  for (;;) {
    drop_cancelled_top();
    if (heap_.empty() || heap_.top().deadline > now) return;
    auto it = live_.find(heap_.top().id);
    heap_.pop();
    auto callback = std::move(it->second.callback);
    live_.erase(it);
    callback();  // may schedule or cancel others
  }
}

void TimerQueue::drop_cancelled_top() {
  while (!heap_.empty() && !live_.contains(heap_.top().id)) heap_.pop();
}

// Re-armed timers leave dead entries behind; rebuild when they outnumber the live ones, so the heap
// stays proportional to what is really pending.
void TimerQueue::compact_if_mostly_cancelled() {
  if (heap_.size() < 64 || heap_.size() < 4 * live_.size()) return;
  std::vector<Entry> entries;
  entries.reserve(live_.size());
  for (const auto& [id, live] : live_) entries.push_back({live.deadline, id});
  heap_ = decltype(heap_)(std::greater<>{}, std::move(entries));
}

}  // namespace tunnel
