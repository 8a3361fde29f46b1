// One outgoing connection with a deadline: tries each address a name resolved to, in order, until
// one connects, and reports the connected socket or why it failed (refused, unreachable, timed
// out), exactly once.
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <system_error>

#include "tunnel/address.hpp"
#include "tunnel/channel.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/timer.hpp"

namespace tunnel {

class Connector {
 public:
  // `done` gets the connected socket and an empty error, or an empty Fd and the last error
  // (std::errc::timed_out when the deadline passed). It may destroy the Connector.
  using Done = std::function<void(Fd fd, std::error_code error)>;

  // `candidates` must outlive the Connector (they are the owner's resolved addresses) and must not
  // be empty. `timeout` bounds the whole attempt, all candidates together.
  Connector(EventLoop& loop, std::span<const SocketAddress> candidates, Duration timeout,
            Done done);

 private:
  void try_next();
  void on_attempt_done(std::error_code error);
  void finish(std::error_code error);

  EventLoop& loop_;
  std::span<const SocketAddress> candidates_;
  size_t next_ = 0;
  std::error_code last_error_;
  std::optional<Channel> attempt_;
  Timer deadline_;
  Timer advance_;  // moves to the next candidate, or reports the end, from the loop
  Done done_;
};

// A short word for logs and FAIL reasons: connection-refused, timeout, unreachable, ...
const char* connect_failure_word(std::error_code error);

}  // namespace tunnel
