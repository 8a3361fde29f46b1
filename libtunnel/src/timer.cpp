// One-shot timers tied to their owner's lifetime.
#include "tunnel/timer.hpp"

#include <cassert>

namespace tunnel {

Timer::Timer(EventLoop& loop, std::function<void()> callback)
    : loop_(loop), callback_(std::move(callback)) {}

Timer::~Timer() {
  assert(!firing_ && "a Timer destroyed inside its own callback: use destroy_later");
  cancel();
}

void Timer::arm(Clock::duration after) {
  cancel();
  id_ = loop_.timers().schedule(loop_.now() + after, [this] {
    id_ = 0;
    // Cleared on the way out even if the callback throws (the loop catches it and goes on).
    struct Firing {
      bool& flag;
      ~Firing() { flag = false; }
    } firing{firing_ = true};
    callback_();
  });
}

PeriodicTimer::PeriodicTimer(EventLoop& loop, Clock::duration interval,
                             std::function<void()> callback)
    : interval_(interval), callback_(std::move(callback)), timer_(loop, [this] {
        // Re-armed before the callback runs, so the callback may stop() it.
        timer_.arm(interval_);
        callback_();
      }) {}

void Timer::cancel() {
  if (id_ != 0) loop_.timers().cancel(id_);
  id_ = 0;
}

}  // namespace tunnel
