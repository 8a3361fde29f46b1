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
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void arm(Clock::duration after);
  void cancel();
  bool armed() const { return id_ != 0; }

 private:
  EventLoop& loop_;
  std::function<void()> callback_;
  TimerId id_ = 0;
  bool firing_ = false;
};

// Calls `callback` every `interval` between start() and stop() (or destruction).
class PeriodicTimer {
 public:
  PeriodicTimer(EventLoop& loop, Clock::duration interval, std::function<void()> callback);
  // (Re)starts the period from now.
  void start() { timer_.arm(interval_); }
  void stop() { timer_.cancel(); }

 private:
  Clock::duration interval_;
  std::function<void()> callback_;
  Timer timer_;
};

}  // namespace tunnel
