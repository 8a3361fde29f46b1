// Loop pumping, socketpairs and loopback sockets for the in-process state-machine tests.
#include "state_support.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <stdexcept>

#include "tunnel/socket.hpp"

namespace state_tests {

bool ManualLoop::pump_until(const std::function<bool()>& done, int max_rounds) {
  for (int round = 0; round < max_rounds; ++round) {
    if (done()) return true;
    loop.run_once(10);
  }
  return done();
}

void ManualLoop::settle(int rounds) {
  for (int round = 0; round < rounds; ++round) loop.run_once(1);
}

SocketPair socket_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
    throw std::runtime_error("socketpair failed");
  return {tunnel::Fd(fds[0]), tunnel::Fd(fds[1])};
}

LoopbackListener::LoopbackListener(int backlog) {
  addresses_ = tunnel::resolve(tunnel::HostPort{"127.0.0.1", 0}, true);
  std::error_code ec;
  fd_ = tunnel::listen_tcp(addresses_.front(), backlog, ec);
  if (!fd_) throw std::runtime_error("cannot listen on 127.0.0.1: " + ec.message());
  address_ = tunnel::local_address(fd_.get());
  addresses_ = {address_};
}

tunnel::Fd LoopbackListener::accept_one() {
  std::error_code ec;
  return tunnel::accept_connection(fd_.get(), ec);
}

bool read_available(int fd, std::string& into) {
  char chunk[65536];
  for (;;) {
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n > 0) {
      into.append(chunk, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) return false;
    return errno == EAGAIN || errno == EINTR;
  }
}

bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    long n = tunnel::send_nosignal(fd, bytes.data(), bytes.size());
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

bool peer_closed(int fd) {
  char byte;
  ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
}

std::pair<tunnel::Fd, tunnel::SocketAddresses> refusing_address() {
  tunnel::Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&any), sizeof any) < 0)
    throw std::runtime_error("bind failed");
  tunnel::SocketAddresses addresses{tunnel::local_address(fd.get())};
  return {std::move(fd), std::move(addresses)};
}

void LinePeer::poll() {
  if (closed || !fd) return;
  if (!read_available(fd.get(), partial)) closed = true;
  for (auto nl = partial.find('\n'); nl != std::string::npos; nl = partial.find('\n')) {
    lines.push_back(partial.substr(0, nl));
    partial.erase(0, nl + 1);
  }
}

bool LinePeer::got(std::string_view line) {
  poll();
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

bool LinePeer::got_prefix(std::string_view prefix) {
  poll();
  return std::any_of(lines.begin(), lines.end(),
                     [&](const std::string& l) { return l.starts_with(prefix); });
}

bool LinePeer::saw_close() {
  poll();
  return closed;
}

void LinePeer::say(std::string_view line) {
  REQUIRE(write_all(fd.get(), line));
}

std::string LinePeer::transcript() const {
  std::string out = name + " read:";
  for (const auto& l : lines) out += " [" + l + "]";
  return out + (closed ? " <closed>" : fd ? " <open>" : " <closed by the test>");
}

}  // namespace state_tests
