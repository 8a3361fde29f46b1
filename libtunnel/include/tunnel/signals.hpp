// SIGTERM/SIGINT delivered through a signalfd on the loop, so shutdown runs as an ordinary event.
#pragma once

#include <functional>
#include <memory>

#include "tunnel/channel.hpp"

namespace tunnel {

class SignalWatcher {
 public:
  // Blocks SIGTERM and SIGINT for the process and ignores SIGPIPE.
  SignalWatcher(EventLoop& loop, std::function<void(int signal)> on_signal);

 private:
  std::unique_ptr<Channel> channel_;
  std::function<void(int)> on_signal_;
};

// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
unsigned long raise_fd_limit();

}  // namespace tunnel
