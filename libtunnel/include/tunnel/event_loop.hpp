// One single-threaded reactor: descriptors (through Channel), timers (through Timer) and deferred
// work. Everything that belongs to a loop is touched only from that loop's thread.
//
// THE LIFETIME RULE (docs/ARCHITECTURE.md, "Who frees what"): an owner never destroys a child
// inside one of the child's callbacks, however deep in the call chain. It hands the child to
// destroy_later(), which frees it after the current batch of events, when no callback of it can be
// running. Every child may therefore call its owner back at any time and go on using its own state
// afterwards. Channel and Timer check the rule in debug builds.
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

  // Runs `task` after the current batch of events, before the next poll.
  void defer(std::function<void()> task);

  // Frees `object` after the current batch of events (the lifetime rule above).
  template <typename T>
  void destroy_later(std::unique_ptr<T> object) {
    if (!object) return;
    Retired retired(object.get(), [](void* p) { std::default_delete<T>()(static_cast<T*>(p)); });
    object.release();  // now owned by `retired`, which frees it even if push_back throws
    graveyard_.push_back(std::move(retired));
  }

  Clock::time_point now() const { return manual_clock_ ? manual_now_ : Clock::now(); }
  Poller& poller() { return *poller_; }
  TimerQueue& timers() { return timers_; }
  // Poll-and-dispatch rounds run so far (tests use it to see that an idle loop sleeps).
  uint64_t rounds() const { return rounds_; }
  // Exceptions a handler let escape, caught and logged as event=internal-error: always a bug.
  uint64_t internal_errors() const { return internal_errors_; }

  // For deterministic tests: from now on time moves only when advance() says so. Timers then fire
  // in run_once() once their deadline has been reached, never by waiting.
  void use_manual_clock();
  // Moves the manual clock forward and runs the timers that became due (and what they defer).
  void advance(Clock::duration by);

  // Called by a Channel that unregisters, so a stale event in the current batch is not delivered.
  void forget(void* owner);

 private:
  // A retired object and the function that frees it. Deliberately not a virtual holder: out of
  // descriptors (EMFILE), UBSan cannot check a virtual call's target (its memory probe needs a
  // descriptor) and reports a false error that stops the debug build.
  using Retired = std::unique_ptr<void, void (*)(void*)>;

  void run_deferred();
  template <typename Work>
  void guarded(Work&& work);

  std::unique_ptr<Poller> poller_;
  TimerQueue timers_;
  std::vector<ReadyEvent> batch_;
  std::vector<std::function<void()>> deferred_;
  std::vector<Retired> graveyard_;
  bool stopped_ = false;
  bool manual_clock_ = false;
  Clock::time_point manual_now_{};
  uint64_t rounds_ = 0;
  uint64_t internal_errors_ = 0;
};

}  // namespace tunnel
