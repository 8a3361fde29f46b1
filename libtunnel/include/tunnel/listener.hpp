// A listening socket on the loop: accepts until EAGAIN and hands each connection over. Survives
// descriptor exhaustion (EMFILE/ENFILE) without spinning: a reserve descriptor is freed to accept
// and drop the waiting connection, and the event is logged at most once per second.
#pragma once

#include <functional>
#include <string>

#include "tunnel/address.hpp"
#include "tunnel/channel.hpp"
#include "tunnel/log.hpp"
#include "tunnel/timer.hpp"

namespace tunnel {

class Listener {
 public:
  using OnAccept = std::function<void(Fd connection)>;

  // `name` labels log lines (e.g. "a", "b"). Throws std::runtime_error naming the address when the
  // socket cannot be bound.
  Listener(EventLoop& loop, std::string name, const std::vector<SocketAddress>& candidates,
           OnAccept on_accept);

  const SocketAddress& address() const { return address_; }
  // Stops accepting and closes the socket.
  void close() { channel_.reset(); }

 private:
  void on_readable();
  bool shed_one();

  EventLoop& loop_;
  std::string name_;
  SocketAddress address_;
  std::unique_ptr<Channel> channel_;
  OnAccept on_accept_;
  Fd reserve_;
  Timer resume_;
  log::RateLimit exhausted_log_;
  log::RateLimit failure_log_;
};

}  // namespace tunnel
