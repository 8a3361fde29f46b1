// Heartbeat: a periodic PING and a lazily re-armed deadline.
#include "tunnel/heartbeat.hpp"

namespace tunnel {

Heartbeat::Heartbeat(EventLoop& loop, HeartbeatSettings settings, std::function<void()> send_ping,
                     std::function<void()> on_dead)
    : loop_(loop),
      timeout_(settings.timeout),
      send_ping_(std::move(send_ping)),
      on_dead_(std::move(on_dead)),
      pings_(loop, settings.interval, [this] { send_ping_(); }),
      deadline_(loop, [this] { check_deadline(); }) {}

void Heartbeat::start() {
  heard();
  pings_.start();
  deadline_.arm(timeout_);
}

void Heartbeat::stop() {
  pings_.stop();
  deadline_.cancel();
}

// The deadline fires at most once per timeout while the peer talks: when it does, it moves itself
// to `timeout` after the last thing heard, or declares the peer dead.
void Heartbeat::check_deadline() {
  auto silent_for = loop_.now() - last_heard_;
  if (silent_for >= timeout_) {
    stop();
    on_dead_();
    return;
  }
  deadline_.arm(timeout_ - silent_for);
}

}  // namespace tunnel
