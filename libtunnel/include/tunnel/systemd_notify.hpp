// The sd_notify datagram protocol, written out (a few lines, no libsystemd): READY=1, STOPPING=1,
// STATUS=..., and watchdog keep-alives when the unit asks for them. Without NOTIFY_SOCKET it all
// does nothing, so the daemons behave the same outside systemd.
#pragma once

#include <string_view>

#include "tunnel/timer.hpp"

namespace tunnel::systemd {

// Sends one notification (e.g. "READY=1"); returns false if there is no socket or sending failed.
bool notify(std::string_view state);

// Sends WATCHDOG=1 at half the interval systemd gave in WATCHDOG_USEC, from the event loop, so a
// loop that stops turning is noticed and restarted.
class Watchdog {
 public:
  explicit Watchdog(EventLoop& loop);

 private:
  PeriodicTimer pings_;
};

}  // namespace tunnel::systemd
