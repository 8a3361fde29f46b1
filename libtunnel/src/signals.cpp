// Signals as loop events, and the process set-up at start (SIGPIPE, stderr, descriptor limit).
#include "tunnel/signals.hpp"

#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <csignal>
#include <system_error>

#include "tunnel/log.hpp"

namespace tunnel {

SignalWatcher::SignalWatcher(EventLoop& loop, std::function<void(int)> on_signal)
    : SignalWatcher(loop, {SIGTERM, SIGINT}, std::move(on_signal)) {}

SignalWatcher::SignalWatcher(EventLoop& loop, std::initializer_list<int> signals,
                             std::function<void(int)> on_signal)
    : on_signal_(std::move(on_signal)) {
  sigset_t mask;
  sigemptyset(&mask);
  for (int signal : signals) sigaddset(&mask, signal);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  Fd fd(::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!fd) throw std::system_error(errno, std::system_category(), "signalfd");
  channel_ = std::make_unique<Channel>(loop, std::move(fd), kReadable, [this](uint32_t) {
    signalfd_siginfo info;
    while (::read(channel_->fd(), &info, sizeof info) == sizeof info)
      on_signal_(static_cast<int>(info.ssi_signo));
  });
}

void prepare_process() {
  ::signal(SIGPIPE, SIG_IGN);
  log::use_nonblocking_stderr();
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
