// The reactor's dispatch round: poll, deliver I/O events, run due timers, run deferred work.
#include "tunnel/event_loop.hpp"

#include <algorithm>
#include <system_error>

#include "tunnel/channel.hpp"
#include "tunnel/log.hpp"

namespace tunnel {

EventLoop::EventLoop() : poller_(make_poller()) {}
EventLoop::~EventLoop() = default;

void EventLoop::run() {
  stopped_ = false;
  while (!stopped_) run_once(-1);
}

void EventLoop::run_once(int max_wait_ms) {
  ++rounds_;
  int timeout = deferred_.empty() && graveyard_.empty() ? timers_.next_timeout_ms(now()) : 0;
  // On a manual clock, waiting never brings a deadline closer: only a due timer shortens the wait.
  if (manual_clock_ && timeout != 0) timeout = -1;
  if (max_wait_ms >= 0 && (timeout < 0 || timeout > max_wait_ms)) timeout = max_wait_ms;
  batch_.clear();
  if (auto ec = poller_->wait(batch_, timeout)) {
    TLOG_ERROR("event=poll-failed error=\"{}\"", ec.message());
  }
  // Index loop: forget() may null entries of this batch while we walk it.
  for (size_t i = 0; i < batch_.size(); ++i) {
    if (auto* channel = static_cast<Channel*>(batch_[i].owner))
      guarded([&] { channel->dispatch(batch_[i].events); });
  }
  batch_.clear();
  guarded([&] { timers_.run_expired(now()); });
  run_deferred();
}

// Handlers report errors as values; an exception here is a resource failure deep inside one
// connection's set-up (epoll_ctl out of memory, no random bytes). It costs that event, not the
// daemon and every other connection with it.
template <typename Work>
void EventLoop::guarded(Work&& work) {
  try {
    work();
  } catch (const std::exception& e) {
    ++internal_errors_;
    TLOG_ERROR("event=internal-error error=\"{}\"", e.what());
  }
}

void EventLoop::defer(std::function<void()> task) {
  deferred_.push_back(std::move(task));
}

void EventLoop::run_deferred() {
  // Deferred work may defer more, or retire more objects; all of it runs in this round too.
  while (!deferred_.empty() || !graveyard_.empty()) {
    auto tasks = std::move(deferred_);
    deferred_.clear();
    for (auto& task : tasks) guarded(task);
    auto retired = std::move(graveyard_);
    graveyard_.clear();
    guarded([&] { retired.clear(); });
  }
}

void EventLoop::use_manual_clock() {
  manual_now_ = Clock::now();
  manual_clock_ = true;
}

void EventLoop::advance(Clock::duration by) {
  manual_now_ += by;
  guarded([&] { timers_.run_expired(now()); });
  run_deferred();
}

void EventLoop::forget(void* owner) {
  for (auto& event : batch_)
    if (event.owner == owner) event.owner = nullptr;
}

}  // namespace tunnel
