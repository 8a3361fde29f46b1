// A one-shot timer owned by an object: arming again replaces the previous deadline, and destroying
// the Timer cancels it, so a callback never outlives its owner.
#pragma once

#include <chrono>
#include <functional>

#include "tunnel/event_loop.hpp"

namespace tunnel {

class Timer {
 public:
  Timer(EventLoop& loop, std::function<void()> callback);
  ~Timer() { cancel(); }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void arm(Clock::duration after);
  void cancel();
  bool armed() const { return id_ != 0; }

 private:
  EventLoop& loop_;
  std::function<void()> callback_;
  TimerId id_ = 0;
};

}  // namespace tunnel
