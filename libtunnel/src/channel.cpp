// Registration of one owned descriptor with the loop's poller.
#include "tunnel/channel.hpp"

#include <cassert>
#include <system_error>

namespace tunnel {

Channel::Channel(EventLoop& loop, Fd fd, uint32_t interest, Handler handler)
    : loop_(loop), fd_(std::move(fd)), interest_(interest), handler_(std::move(handler)) {
  if (!fd_) return;
  if (auto ec = loop_.poller().add(fd_.get(), interest_, this))
    throw std::system_error(ec, "registering a descriptor with the poller");
  registered_ = true;
}

Channel::~Channel() {
  assert(!dispatching_ && "a Channel destroyed inside its own handler: use destroy_later");
  unregister();
}

void Channel::dispatch(uint32_t events) {
  // Cleared on the way out even if the handler throws (the loop catches it and goes on).
  struct Dispatching {
    bool& flag;
    ~Dispatching() { flag = false; }
  } dispatching{dispatching_ = true};
  handler_(events);
}

void Channel::set_interest(uint32_t interest) {
  if (interest == interest_ || !registered_) {
    interest_ = interest;
    return;
  }
  interest_ = interest;
  loop_.poller().modify(fd_.get(), interest_, this);
}

void Channel::suspend() {
  unregister();
}

std::error_code Channel::resume() {
  if (!suspended()) return {};
  if (auto ec = loop_.poller().add(fd_.get(), interest_, this)) return ec;
  registered_ = true;
  return {};
}

Fd Channel::release() {
  unregister();
  return std::move(fd_);
}

void Channel::close() {
  unregister();
  fd_.reset();
}

void Channel::unregister() {
  if (!registered_) return;
  loop_.poller().remove(fd_.get());
  loop_.forget(this);
  registered_ = false;
}

}  // namespace tunnel
