// In-process targets for the tunnel: accept loop, one thread per connection, orderly stop.
#include "support/scripted_target.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace tunnel::test {

ScriptedTarget::ScriptedTarget(Handler handler)
    : handler_(std::move(handler)), listener_(listen_tcp(0)), port_(local_port(listener_)) {
  if (::pipe2(wake_, O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  }
  acceptor_ = std::thread([this] { accept_loop(); });
}

ScriptedTarget::~ScriptedTarget() {
  [[maybe_unused]] auto ignored = ::write(wake_[1], "x", 1);
  acceptor_.join();
  {
    std::lock_guard lock(mutex_);
    for (int fd : live_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& t : connections_) t.join();
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void ScriptedTarget::accept_loop() {
  while (true) {
    pollfd fds[2] = {{listener_.fd(), POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents != 0) break;
    const int fd = ::accept4(listener_.fd(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    const size_t index = accepted_.fetch_add(1);
    const size_t now = active_.fetch_add(1) + 1;
    size_t seen = max_active_.load();
    while (now > seen && !max_active_.compare_exchange_weak(seen, now)) {
    }
    std::lock_guard lock(mutex_);
    // A duplicate that only this object closes (under the lock), for stop to shut down: the
    // handler may close its own descriptor at any time and the number could be reused.
    live_fds_.push_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    connections_.emplace_back([this, fd, index, dup = live_fds_.back()] { serve(fd, dup, index); });
  }
}

void ScriptedTarget::serve(int fd, int dup, size_t index) {
  Socket connection(fd);
  try {
    handler_(connection, index);
  } catch (const std::exception& e) {
    std::lock_guard lock(mutex_);
    errors_.push_back("connection " + std::to_string(index) + ": " + e.what());
  }
  connection.close();
  {
    // The socket is released (FIN, or RST after SO_LINGER 0) with this last descriptor.
    std::lock_guard lock(mutex_);
    live_fds_.erase(std::find(live_fds_.begin(), live_fds_.end(), dup));
    if (dup >= 0) ::close(dup);
  }
  active_.fetch_sub(1);
}

std::vector<std::string> ScriptedTarget::errors() const {
  std::lock_guard lock(mutex_);
  return errors_;
}

void ScriptedTarget::wait_for_accepted(size_t n, Millis timeout) const {
  wait_until([&] { return accepted() >= n; }, timeout,
             "the target to accept " + std::to_string(n) + " connections (accepted " +
                 std::to_string(accepted()) + " so far)");
}

namespace {

void echo(Socket& connection, size_t) {
  while (true) {
    ReadResult r = read_some(connection, 256 * 1024, Millis(60000));
    if (r.end == End::eof) {
      ::shutdown(connection.fd(), SHUT_WR);
      // Wait for the peer to finish too, so the tunnel sees an orderly close from here.
      read_to_end(connection, Millis(60000));
      return;
    }
    if (r.end != End::complete) return;
    int error = 0;
    if (!try_send_all(connection, r.data, Millis(60000), error)) return;
  }
}

}  // namespace

EchoTarget::EchoTarget() : ScriptedTarget(echo) {}

}  // namespace tunnel::test
