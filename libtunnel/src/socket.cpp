// Thin wrappers over the socket system calls, with errors as std::error_code.
#include "tunnel/socket.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>

namespace tunnel {
namespace {

std::error_code last_error() {
  return {errno, std::system_category()};
}

void set_int_option(int fd, int level, int name, int value) {
  ::setsockopt(fd, level, name, &value, sizeof value);
}

}  // namespace

Fd listen_tcp(const SocketAddress& where, int backlog, std::error_code& ec) {
  ec.clear();
  Fd fd(::socket(where.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    ec = last_error();
    return {};
  }
  set_int_option(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1);
  if (where.family() == AF_INET6) set_int_option(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 0);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&where.storage), where.length) < 0 ||
      ::listen(fd.get(), backlog) < 0) {
    ec = last_error();
    return {};
  }
  return fd;
}

Fd accept_connection(int listen_fd, std::error_code& ec) {
  ec.clear();
  for (;;) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return Fd(fd);
    // A connection that died in the backlog is not the listener's problem: try the next one.
    if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) ec = last_error();
    return {};
  }
}

Fd start_connect(const SocketAddress& to, std::error_code& ec) {
  ec.clear();
  Fd fd(::socket(to.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    ec = last_error();
    return {};
  }
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to.storage), to.length) < 0 &&
      errno != EINPROGRESS) {
    ec = last_error();
    return {};
  }
  return fd;
}

std::error_code take_socket_error(int fd) {
  int error = 0;
  socklen_t length = sizeof error;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0) return last_error();
  return {error, std::system_category()};
}

void set_nodelay(int fd) {
  set_int_option(fd, IPPROTO_TCP, TCP_NODELAY, 1);
}

void set_keepalive(int fd) {
  set_int_option(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
  set_int_option(fd, IPPROTO_TCP, TCP_KEEPIDLE, 30);
  set_int_option(fd, IPPROTO_TCP, TCP_KEEPINTVL, 10);
  set_int_option(fd, IPPROTO_TCP, TCP_KEEPCNT, 3);
}

void set_linger_reset(int fd) {
  linger option{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, sizeof option);
}

long send_nosignal(int fd, const void* data, size_t length) {
  return ::send(fd, data, length, MSG_NOSIGNAL);
}

}  // namespace tunnel
