// One single-threaded reactor: descriptors (through Channel), timers (through Timer) and deferred
// work. Everything that belongs to a loop is touched only from that loop's thread.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "tunnel/poller.hpp"
#include "tunnel/timer_queue.hpp"

namespace tunnel {

class EventLoop {
 public:
  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Runs until stop() is called.
  void run();
  // Runs one poll-and-dispatch round, waiting at most max_wait_ms (-1: until something happens).
  void run_once(int max_wait_ms = -1);
  void stop() { stopped_ = true; }

  // Runs `task` after the current batch of events, before the next poll: the safe place to
  // destroy an object whose own callback decided it is finished.
  void defer(std::function<void()> task);

  Clock::time_point now() const { return Clock::now(); }
  Poller& poller() { return *poller_; }
  TimerQueue& timers() { return timers_; }

  // Called by a Channel that unregisters, so a stale event in the current batch is not delivered.
  void forget(void* owner);

 private:
  void run_deferred();
  template <typename Work>
  void guarded(Work&& work);

  std::unique_ptr<Poller> poller_;
  TimerQueue timers_;
  std::vector<ReadyEvent> batch_;
  std::vector<std::function<void()>> deferred_;
  bool stopped_ = false;
};

}  // namespace tunnel
