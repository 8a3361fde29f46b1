// Graceful shutdown, the same for both daemons: the first SIGTERM/SIGINT stops intake and lets
// relays in flight finish for up to the drain timeout; a second signal, or the timeout, cuts them.
// The loop stops once everything is done, and main() returns 0.
#pragma once

#include <functional>
#include <memory>

#include "tunnel/duration.hpp"
#include "tunnel/signals.hpp"
#include "tunnel/timer.hpp"

namespace tunnel {

class GracefulShutdown {
 public:
  struct Hooks {
    // Stop accepting new work; call `drained` (now or later, once) when nothing is left.
    std::function<void(std::function<void()> drained)> begin_drain;
    // End whatever is still running, at once.
    std::function<void()> abort;
  };

  GracefulShutdown(EventLoop& loop, Duration drain_timeout, Hooks hooks);

 private:
  void on_signal(int signal);
  void finish(const char* reason);

  EventLoop& loop_;
  Duration drain_timeout_;
  Hooks hooks_;
  Timer deadline_;
  SignalWatcher signals_;
  bool draining_ = false;
  bool finished_ = false;
};

}  // namespace tunnel
