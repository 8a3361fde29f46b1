// Blocking socket helpers with deadlines (poll + MSG_DONTWAIT, so no call outlives its deadline).
#include "support/socket_io.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace tunnel::test {

namespace {

std::string errno_text(int err) {
  return std::string(std::strerror(err));
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

// Waits for `events` until the deadline; the revents, or 0 on timeout.
short wait_for(int fd, short events, Clock::time_point deadline) {
  while (true) {
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r > 0) return p.revents;
    if (r == 0) return 0;
    if (errno != EINTR) throw std::runtime_error("poll: " + errno_text(errno));
  }
}

sockaddr_in loopback(uint16_t port, const std::string& host) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    throw std::invalid_argument("not an IPv4 address: " + host);
  }
  return addr;
}

End end_for_errno(int err) {
  return (err == ECONNRESET || err == EPIPE) ? End::reset : End::error;
}

// Reads into `out` until `n` bytes, EOF, error or the deadline.
ReadResult read_loop(const Socket& socket, size_t n, Clock::time_point deadline) {
  ReadResult result;
  char buf[64 * 1024];
  while (result.data.size() < n) {
    const size_t want = std::min(sizeof buf, n - result.data.size());
    const ssize_t r = ::recv(socket.fd(), buf, want, MSG_DONTWAIT);
    if (r > 0) {
      result.data.append(buf, static_cast<size_t>(r));
      continue;
    }
    if (r == 0) {
      result.end = End::eof;
      return result;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      result.error = errno;
      result.end = end_for_errno(errno);
      return result;
    }
    if (wait_for(socket.fd(), POLLIN, deadline) == 0) {
      result.end = End::timeout;
      return result;
    }
  }
  result.end = End::complete;
  return result;
}

}  // namespace

Socket& Socket::operator=(Socket&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = other.release();
  }
  return *this;
}

int Socket::release() {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

void Socket::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

const char* to_string(End end) {
  switch (end) {
    case End::complete:
      return "complete";
    case End::eof:
      return "EOF";
    case End::reset:
      return "reset";
    case End::timeout:
      return "timeout";
    case End::error:
      return "error";
  }
  return "?";
}

std::string ReadResult::describe() const {
  std::string out =
      std::string(to_string(end)) + " after " + std::to_string(data.size()) + " bytes";
  if (error != 0) out += " (" + errno_text(error) + ")";
  if (!data.empty() && data.size() <= 200) out += ": \"" + data + "\"";
  return out;
}

namespace {

// A non-blocking connect awaited until the deadline.
struct Attempt {
  Socket socket;
  bool answered = false;  // false: neither connected nor failed before the deadline
  int error = 0;          // when answered: 0 connected, else the errno
};

Attempt attempt_connect(uint16_t port, const std::string& host, Clock::time_point deadline) {
  Attempt a;
  a.socket = Socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!a.socket.valid()) throw std::runtime_error("socket: " + errno_text(errno));
  const sockaddr_in addr = loopback(port, host);
  a.answered = true;
  if (::connect(a.socket.fd(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
    return a;
  }
  if (errno != EINPROGRESS) {
    a.error = errno;
    return a;
  }
  if (wait_for(a.socket.fd(), POLLOUT, deadline) == 0) {
    a.answered = false;
    return a;
  }
  socklen_t len = sizeof a.error;
  ::getsockopt(a.socket.fd(), SOL_SOCKET, SO_ERROR, &a.error, &len);
  return a;
}

}  // namespace

Socket connect_tcp(uint16_t port, Millis timeout, const std::string& host) {
  Attempt a = attempt_connect(port, host, Clock::now() + timeout);
  const std::string where = host + ":" + std::to_string(port);
  if (!a.answered) {
    throw std::runtime_error("connect " + where + ": no answer within " +
                             std::to_string(timeout.count()) + " ms");
  }
  // Established, then reset before we looked (a server shedding at once): the caller's reads
  // will see the end of the stream.
  if (a.error != 0 && a.error != ECONNRESET) {
    throw std::runtime_error("connect " + where + ": " + errno_text(a.error));
  }
  return std::move(a.socket);
}

Reach probe_connect(const std::string& host, uint16_t port, Millis wait) {
  Attempt a = attempt_connect(port, host, Clock::now() + wait);
  if (!a.answered) return Reach::no_answer;
  return a.error == 0 ? Reach::connected : Reach::failed;
}

Socket listen_tcp(uint16_t port, int backlog) {
  Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) throw std::runtime_error("socket: " + errno_text(errno));
  const int one = 1;
  ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const sockaddr_in addr = loopback(port, "127.0.0.1");
  if (::bind(s.fd(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    throw std::runtime_error("bind 127.0.0.1:" + std::to_string(port) + ": " + errno_text(errno));
  }
  if (::listen(s.fd(), backlog) != 0) throw std::runtime_error("listen: " + errno_text(errno));
  return s;
}

uint16_t local_port(const Socket& socket) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(socket.fd(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("getsockname: " + errno_text(errno));
  }
  return ntohs(addr.sin_port);
}

bool try_send_all(const Socket& socket, std::string_view data, Millis timeout, int& error) {
  const auto deadline = Clock::now() + timeout;
  while (!data.empty()) {
    const ssize_t r = ::send(socket.fd(), data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r > 0) {
      data.remove_prefix(static_cast<size_t>(r));
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      error = errno;
      return false;
    }
    if (wait_for(socket.fd(), POLLOUT, deadline) == 0) {
      error = ETIMEDOUT;
      return false;
    }
  }
  return true;
}

void send_all(const Socket& socket, std::string_view data, Millis timeout) {
  int error = 0;
  if (!try_send_all(socket, data, timeout, error)) {
    throw std::runtime_error(
        "send of " + std::to_string(data.size()) + " bytes failed: " +
        (error == ETIMEDOUT ? "peer took nothing for " + std::to_string(timeout.count()) + " ms"
                            : errno_text(error)));
  }
}

ReadResult read_some(const Socket& socket, size_t max, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  ReadResult result;
  std::string buf(max, '\0');
  while (true) {
    const ssize_t r = ::recv(socket.fd(), buf.data(), max, MSG_DONTWAIT);
    if (r > 0) {
      buf.resize(static_cast<size_t>(r));
      result.data = std::move(buf);
      result.end = End::complete;
      return result;
    }
    if (r == 0) {
      result.end = End::eof;
      return result;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      result.error = errno;
      result.end = end_for_errno(errno);
      return result;
    }
    if (wait_for(socket.fd(), POLLIN, deadline) == 0) {
      result.end = End::timeout;
      return result;
    }
  }
}

ReadResult read_up_to(const Socket& socket, size_t n, Millis timeout) {
  return read_loop(socket, n, Clock::now() + timeout);
}

std::string read_exact(const Socket& socket, size_t n, Millis timeout) {
  ReadResult r = read_up_to(socket, n, timeout);
  if (r.end != End::complete) {
    throw std::runtime_error("expected " + std::to_string(n) + " bytes within " +
                             std::to_string(timeout.count()) + " ms, got " + r.describe());
  }
  return std::move(r.data);
}

ReadResult read_to_end(const Socket& socket, Millis timeout, size_t limit) {
  return read_loop(socket, limit, Clock::now() + timeout);
}

ReadResult read_line(const Socket& socket, Millis timeout, size_t max) {
  const auto deadline = Clock::now() + timeout;
  ReadResult result;
  while (result.data.size() < max) {
    ReadResult one = read_loop(socket, 1, deadline);
    if (one.end != End::complete) {
      one.data = result.data + one.data;
      return one;
    }
    if (one.data[0] == '\n') {
      result.end = End::complete;
      return result;
    }
    result.data += one.data;
  }
  result.end = End::error;
  return result;
}

bool wait_readable(const Socket& socket, Millis timeout) {
  return wait_for(socket.fd(), POLLIN, Clock::now() + timeout) != 0;
}

void shutdown_write(const Socket& socket) {
  if (::shutdown(socket.fd(), SHUT_WR) != 0) {
    throw std::runtime_error("shutdown(SHUT_WR): " + errno_text(errno));
  }
}

void reset_close(Socket& socket) {
  const linger lg{1, 0};
  ::setsockopt(socket.fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  socket.close();
}

void set_nodelay(const Socket& socket) {
  const int one = 1;
  ::setsockopt(socket.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

uint16_t refused_port() {
  Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const sockaddr_in addr = loopback(0, "127.0.0.1");
  if (::bind(s.fd(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    throw std::runtime_error("bind: " + errno_text(errno));
  }
  return local_port(s);
}

}  // namespace tunnel::test
