// The systemd side of sd_notify for a test: a unix datagram socket bound to a path, receiving the
// daemon's `READY=1`, `STOPPING=1` and `WATCHDOG=1` messages with the time each arrived.
#pragma once

#include <optional>
#include <string>

#include "support/socket_io.hpp"
#include "support/wait.hpp"

namespace tunnel::test::ops {

struct Datagram {
  std::string text;
  Clock::time_point arrived;
};

class NotifySocket {
 public:
  explicit NotifySocket(std::string path);
  ~NotifySocket();
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  const std::string& path() const { return path_; }
  // "NOTIFY_SOCKET=<path>", for an env prefix.
  std::string env() const { return "NOTIFY_SOCKET=" + path_; }
  // The next datagram, or nothing when none arrives within `timeout`.
  std::optional<Datagram> receive(Millis timeout);

 private:
  std::string path_;
  Socket socket_;
};

}  // namespace tunnel::test::ops
