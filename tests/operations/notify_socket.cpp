// A bound unix datagram socket standing in for systemd's notification socket.
#include "notify_socket.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace tunnel::test::ops {

NotifySocket::NotifySocket(std::string path)
    : path_(std::move(path)), socket_(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
  if (!socket_.valid()) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path_.size() >= sizeof address.sun_path) {
    throw std::runtime_error("notify socket path too long for sun_path: " + path_);
  }
  std::memcpy(address.sun_path, path_.data(), path_.size());
  if (::bind(socket_.fd(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    throw std::runtime_error("bind " + path_ + ": " + std::strerror(errno));
  }
}

NotifySocket::~NotifySocket() {
  ::unlink(path_.c_str());
}

std::optional<Datagram> NotifySocket::receive(Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  char buf[4096];
  while (true) {
    const ssize_t n = ::recv(socket_.fd(), buf, sizeof buf, MSG_DONTWAIT);
    if (n >= 0) return Datagram{std::string(buf, static_cast<size_t>(n)), Clock::now()};
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      throw std::runtime_error(std::string("recv on the notify socket: ") + std::strerror(errno));
    }
    const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
    if (left <= 0) return std::nullopt;
    pollfd p{socket_.fd(), POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(left));
  }
}

}  // namespace tunnel::test::ops
