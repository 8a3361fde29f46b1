// One outgoing non-blocking connection attempt with a deadline: reports the connected socket or
// why it failed (refused, unreachable, timed out), exactly once.
#pragma once

#include <functional>
#include <system_error>

#include "tunnel/address.hpp"
#include "tunnel/channel.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/timer.hpp"

namespace tunnel {

class Connector {
 public:
  // `done` gets the connected socket and an empty error, or an empty Fd and the error
  // (std::errc::timed_out when the deadline passed). It may destroy the Connector.
  using Done = std::function<void(Fd fd, std::error_code error)>;

  Connector(EventLoop& loop, const SocketAddress& to, Duration timeout, Done done);

 private:
  void finish(std::error_code error);

  std::error_code error_;  // set by an immediate failure, reported when the timer fires at once
  Channel channel_;
  Timer deadline_;
  Done done_;
};

// A short word for logs and FAIL reasons: connection-refused, timeout, unreachable, ...
const char* connect_failure_word(std::error_code error);

}  // namespace tunnel
