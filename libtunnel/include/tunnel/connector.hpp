// One outgoing connection with a deadline: tries each address a name resolved to, in order, until
// one connects, and reports the connected socket or why it failed (refused, unreachable, timed
// out), exactly once.
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <system_error>

#include "tunnel/address.hpp"
#include "tunnel/channel.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/timer.hpp"

namespace tunnel {

class Connector {
 public:
  // `done` gets the connected socket and an empty error, or an empty Fd and the last error
  // (std::errc::timed_out when the deadline passed). It runs inside the Connector's own handlers:
  // an owner that wants the Connector gone hands it to EventLoop::destroy_later.
  using Done = std::function<void(Fd fd, std::error_code error)>;

  // `candidates` must outlive the Connector (they are the owner's resolved addresses) and must not
  // be empty. `timeout` bounds the whole attempt, all candidates together.
  Connector(EventLoop& loop, std::span<const SocketAddress> candidates, Duration timeout,
            Done done);

  // Gives up: closes the attempt in flight and never calls `done`. An owner retiring a Connector
  // calls this first, since destroy_later frees it only after the batch, where a result already
  // waiting would otherwise still be delivered.
  void cancel();

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

// Why a connection attempt failed, as counted and reported (FAIL reasons, logs).
enum class ConnectFailure { refused, timeout, unreachable, reset, out_of_descriptors, other };
ConnectFailure classify_connect_error(std::error_code error);
// connection-refused, timeout, unreachable, reset, out-of-descriptors, connect-failed.
std::string_view to_string(ConnectFailure failure);

}  // namespace tunnel
