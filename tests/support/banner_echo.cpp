// The banner echo target: one poll(2) loop over the listener and every connection.
#include "support/banner_echo.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

namespace tunnel::test {

namespace {

// Beyond this much unsent, the connection is not read until its peer takes some.
constexpr size_t kMaxUnsent = 1 << 20;

struct Connection {
  Socket socket;
  std::string unsent;
  bool peer_done = false;  // EOF read: nothing more will come
};

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
    throw std::runtime_error(std::string("fcntl O_NONBLOCK: ") + std::strerror(errno));
}

// Reads what is there into `unsent`; false when the connection is finished with (reset/error).
bool read_into(Connection& c) {
  char buffer[65536];
  const ssize_t n = ::recv(c.socket.fd(), buffer, sizeof buffer, 0);
  if (n > 0) {
    c.unsent.append(buffer, static_cast<size_t>(n));
    return true;
  }
  if (n == 0) {
    c.peer_done = true;
    return true;
  }
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

// Sends what it can of `unsent`; false on reset/error.
bool write_from(Connection& c) {
  const ssize_t n = ::send(c.socket.fd(), c.unsent.data(), c.unsent.size(), MSG_NOSIGNAL);
  if (n >= 0) {
    c.unsent.erase(0, static_cast<size_t>(n));
    return true;
  }
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

}  // namespace

BannerEcho::BannerEcho(std::string banner)
    : banner_(std::move(banner)), listener_(listen_tcp(0, 1024)), port_(local_port(listener_)) {
  set_nonblocking(listener_.fd());
  if (::pipe2(wake_, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  thread_ = std::thread([this] { run(); });
}

BannerEcho::~BannerEcho() {
  [[maybe_unused]] auto ignored = ::write(wake_[1], "x", 1);
  thread_.join();
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void BannerEcho::run() {
  std::vector<std::unique_ptr<Connection>> connections;
  std::vector<pollfd> fds;
  while (true) {
    fds.clear();
    fds.push_back({wake_[0], POLLIN, 0});
    fds.push_back({listener_.fd(), POLLIN, 0});
    for (const auto& c : connections) {
      short events = 0;
      if (!c->peer_done && c->unsent.size() < kMaxUnsent) events |= POLLIN;
      if (!c->unsent.empty()) events |= POLLOUT;
      fds.push_back({c->socket.fd(), events, 0});
    }
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[0].revents != 0) return;  // stopping: the connections close with `connections`
    std::vector<std::unique_ptr<Connection>> kept;
    for (size_t i = 0; i < connections.size(); ++i) {
      Connection& c = *connections[i];
      const short revents = fds[i + 2].revents;
      bool alive = true;
      if (revents & (POLLIN | POLLHUP | POLLERR)) alive = read_into(c);
      if (alive && !c.unsent.empty()) alive = write_from(c);
      // Everything echoed after the peer's EOF: close (a FIN, nothing unread so no reset).
      if (alive && !(c.peer_done && c.unsent.empty())) {
        kept.push_back(std::move(connections[i]));
      } else {
        open_.fetch_sub(1);
      }
    }
    connections = std::move(kept);
    if (fds[1].revents & POLLIN) {
      while (true) {
        const int fd = ::accept4(listener_.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) break;
        auto c = std::make_unique<Connection>();
        c->socket = Socket(fd);
        c->unsent = banner_ + "\n";
        accepted_.fetch_add(1);
        open_.fetch_add(1);
        connections.push_back(std::move(c));
      }
    }
  }
}

}  // namespace tunnel::test
