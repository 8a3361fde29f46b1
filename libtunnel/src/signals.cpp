// Signals as loop events, and the descriptor limit raised at start.
#include "tunnel/signals.hpp"

#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <csignal>
#include <system_error>

namespace tunnel {

SignalWatcher::SignalWatcher(EventLoop& loop, std::function<void(int)> on_signal)
    : on_signal_(std::move(on_signal)) {
  // A peer that vanishes mid-write must produce EPIPE, never kill the daemon.
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  Fd fd(::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!fd) throw std::system_error(errno, std::system_category(), "signalfd");
  channel_ = std::make_unique<Channel>(loop, std::move(fd), kReadable, [this](uint32_t) {
    signalfd_siginfo info;
    while (::read(channel_->fd(), &info, sizeof info) == sizeof info)
      on_signal_(static_cast<int>(info.ssi_signo));
  });
}

unsigned long raise_fd_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) < 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
  return limit.rlim_cur;
}

}  // namespace tunnel
