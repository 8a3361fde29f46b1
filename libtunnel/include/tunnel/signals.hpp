// SIGTERM/SIGINT delivered through a signalfd on the loop, so shutdown runs as an ordinary event;
// and what a daemon's process needs before anything else.
#pragma once

#include <functional>
#include <initializer_list>
#include <memory>

#include "tunnel/channel.hpp"

namespace tunnel {

class SignalWatcher {
 public:
  // Blocks SIGTERM and SIGINT for the process.
  SignalWatcher(EventLoop& loop, std::function<void(int signal)> on_signal);
  // Blocks `signals` for the process and reports them (e.g. SIGHUP for a reload).
  SignalWatcher(EventLoop& loop, std::initializer_list<int> signals,
                std::function<void(int signal)> on_signal);

 private:
  std::unique_ptr<Channel> channel_;
  std::function<void(int)> on_signal_;
};

// The first statement of a daemon's main(), before anything can be written: ignores SIGPIPE, so
// that a peer or a stderr reader gone mid-write gives EPIPE instead of killing the process, and
// makes stderr non-blocking when it is a pipe or a socket (log::use_nonblocking_stderr).
void prepare_process();

// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
unsigned long raise_fd_limit();

}  // namespace tunnel
