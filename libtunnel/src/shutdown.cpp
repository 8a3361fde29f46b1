// Signal -> drain -> stop.
#include "tunnel/shutdown.hpp"

#include <csignal>

#include "tunnel/log.hpp"
#include "tunnel/systemd_notify.hpp"

namespace tunnel {

GracefulShutdown::GracefulShutdown(EventLoop& loop, Duration drain_timeout, Hooks hooks)
    : loop_(loop),
      drain_timeout_(drain_timeout),
      hooks_(std::move(hooks)),
      deadline_(loop,
                [this] {
                  hooks_.abort();
                  finish("drain-timeout");
                }),
      signals_(loop, [this](int signal) { on_signal(signal); }) {}

void GracefulShutdown::on_signal(int signal) {
  const char* name = signal == SIGTERM ? "TERM" : "INT";
  if (draining_) {
    TLOG_WARN("event=stopping signal={} action=abort", name);
    hooks_.abort();
    return finish("second-signal");
  }
  draining_ = true;
  TLOG_INFO("event=stopping signal={} drain_timeout={}", name, format_duration(drain_timeout_));
  systemd::notify("STOPPING=1");
  deadline_.arm(drain_timeout_);
  hooks_.begin_drain([this] { finish("drained"); });
}

void GracefulShutdown::finish(const char* reason) {
  if (finished_) return;
  finished_ = true;
  deadline_.cancel();
  TLOG_INFO("event=stopped reason={}", reason);
  loop_.stop();
}

}  // namespace tunnel
