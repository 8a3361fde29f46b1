// The Linux backend of Poller: level-triggered epoll.
#include <sys/epoll.h>

#include <cerrno>
#include <system_error>

#include "tunnel/fd.hpp"
#include "tunnel/poller.hpp"

namespace tunnel {
namespace {

uint32_t to_epoll(uint32_t interest) {
  uint32_t events = 0;
  if (interest & kReadable) events |= EPOLLIN;
  if (interest & kWritable) events |= EPOLLOUT;
  return events;
}

uint32_t from_epoll(uint32_t events) {
  uint32_t bits = 0;
  if (events & (EPOLLIN | EPOLLPRI)) bits |= kReadable;
  if (events & EPOLLOUT) bits |= kWritable;
  if (events & EPOLLHUP) bits |= kHangup;
  if (events & EPOLLERR) bits |= kError;
  return bits;
}

std::error_code last_error() {
  return {errno, std::system_category()};
}

class EpollPoller final : public Poller {
 public:
  EpollPoller() : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
    if (!epoll_) throw std::system_error(last_error(), "epoll_create1");
    events_.resize(256);
  }

  std::error_code add(int fd, uint32_t interest, void* owner) override {
    return control(EPOLL_CTL_ADD, fd, interest, owner);
  }
  std::error_code modify(int fd, uint32_t interest, void* owner) override {
    return control(EPOLL_CTL_MOD, fd, interest, owner);
  }
  void remove(int fd) override { ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr); }

  std::error_code wait(std::vector<ReadyEvent>& out, int timeout_ms) override {
    int n =
        ::epoll_wait(epoll_.get(), events_.data(), static_cast<int>(events_.size()), timeout_ms);
    if (n < 0) return errno == EINTR ? std::error_code{} : last_error();
    for (int i = 0; i < n; ++i) out.push_back({events_[i].data.ptr, from_epoll(events_[i].events)});
    // A full batch suggests more are waiting: take more per call next time.
    if (static_cast<size_t>(n) == events_.size() && events_.size() < 4096)
      events_.resize(events_.size() * 2);
    return {};
  }

  const char* name() const override { return "epoll"; }

 private:
  std::error_code control(int op, int fd, uint32_t interest, void* owner) {
    epoll_event ev{};
    ev.events = to_epoll(interest);
    ev.data.ptr = owner;
    if (::epoll_ctl(epoll_.get(), op, fd, &ev) < 0) return last_error();
    return {};
  }

  Fd epoll_;
  std::vector<epoll_event> events_;
};

}  // namespace

std::unique_ptr<Poller> make_poller() {
  return std::make_unique<EpollPoller>();
}

}  // namespace tunnel
