// Liveness of a control connection: a PING every interval, and "dead" when nothing at all has been
// heard for the timeout. Hearing anything counts, so a busy link costs no extra traffic to stay
// alive, and recording it is one clock read (no timer is re-armed per line).
#pragma once

#include <functional>

#include "tunnel/duration.hpp"
#include "tunnel/timer.hpp"

namespace tunnel {

struct HeartbeatSettings {
  Duration interval = std::chrono::seconds(10);
  Duration timeout = std::chrono::seconds(30);
};

class Heartbeat {
 public:
  Heartbeat(EventLoop& loop, HeartbeatSettings settings, std::function<void()> send_ping,
            std::function<void()> on_dead);

  // Starts (or restarts) watching, as if something was just heard.
  void start();
  void stop();
  // Something arrived from the peer.
  void heard() { last_heard_ = loop_.now(); }

 private:
  void check_deadline();

  EventLoop& loop_;
  Duration timeout_;
  std::function<void()> send_ping_;
  std::function<void()> on_dead_;
  Clock::time_point last_heard_{};
  PeriodicTimer pings_;
  Timer deadline_;
};

}  // namespace tunnel
