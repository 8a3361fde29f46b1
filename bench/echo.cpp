// echo: a single-threaded epoll echo server on 127.0.0.1 for bench/connrate. pingpong's server
// starts a thread per connection, which on a small machine would make thread creation part of every
// new-connection figure; this one costs an accept and a few syscalls per connection.
// `echo PORT [--bind IPV4] [--banner TEXT]` (PORT 0 = any free port; default address 127.0.0.1)
// prints "listening port=N" once ready. With --banner it is a server-speaks-first service: TEXT is
// sent on accept, before any echo (bench/run.sh's WAN test times connect() to that first byte).
// Build: g++ -O2 -std=c++20 bench/echo.cpp -o echo
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "echo: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

// Bytes read but not yet written back. While any are held the connection stops reading, so a
// client that never reads cannot make the server buffer without bound.
struct Connection {
  std::vector<char> pending;
  size_t offset = 0;
};

int epfd = -1;

void watch(int op, int fd, std::uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epfd, op, fd, &ev) != 0) die("epoll_ctl");
}

// Writes what is pending; returns false when the connection failed.
bool flush(int fd, Connection& conn) {
  while (conn.offset < conn.pending.size()) {
    ssize_t n = ::send(fd, conn.pending.data() + conn.offset, conn.pending.size() - conn.offset,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    if (n <= 0) return false;
    conn.offset += static_cast<size_t>(n);
  }
  conn.pending.clear();
  conn.offset = 0;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  auto usage = [] {
    std::fprintf(stderr,
                 "usage: echo PORT [--bind IPV4] [--banner TEXT]   (PORT 0 = any free port; "
                 "default address 127.0.0.1)\n");
    std::exit(2);
  };
  if (argc < 2 || argc % 2 != 0) usage();
  std::string bind_address = "127.0.0.1";
  std::string banner;
  for (int i = 2; i < argc; i += 2) {
    std::string_view flag = argv[i];
    if (flag == "--bind")
      bind_address = argv[i + 1];
    else if (flag == "--banner")
      banner = argv[i + 1];
    else
      usage();
  }
  std::string_view text = argv[1];
  unsigned port = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  if (ec != std::errc{} || end != text.data() + text.size() || port > 65535) {
    std::fprintf(stderr, "echo: bad port '%s'\n", argv[1]);
    return 2;
  }
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listener < 0) die("socket");
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (::inet_pton(AF_INET, bind_address.c_str(), &addr.sin_addr) != 1) {
    std::fprintf(stderr, "echo: bad address '%s'\n", bind_address.c_str());
    return 2;
  }
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("bind");
  if (::listen(listener, 4096) != 0) die("listen");
  socklen_t len = sizeof addr;
  if (::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) die("getsockname");

  epfd = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) die("epoll_create1");
  watch(EPOLL_CTL_ADD, listener, EPOLLIN);
  std::printf("listening port=%u\n", unsigned{ntohs(addr.sin_port)});
  std::fflush(stdout);

  std::unordered_map<int, std::unique_ptr<Connection>> connections;
  std::vector<char> buffer(64 * 1024);
  auto drop = [&](int fd) {
    ::close(fd);  // also removes it from the epoll set
    connections.erase(fd);
  };
  std::vector<epoll_event> events(256);
  for (;;) {
    int ready = ::epoll_wait(epfd, events.data(), static_cast<int>(events.size()), -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < ready; ++i) {
      int fd = events[i].data.fd;
      if (fd == listener) {
        // Accept everything queued: under a connection storm one wakeup serves many.
        for (;;) {
          int conn = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (conn < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EMFILE || errno == ENFILE) break;  // retried on the next wakeup
            die("accept4");
          }
          setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          auto& fresh = *connections.emplace(conn, std::make_unique<Connection>()).first->second;
          fresh.pending.assign(banner.begin(), banner.end());
          if (!flush(conn, fresh)) {
            drop(conn);
            continue;
          }
          watch(EPOLL_CTL_ADD, conn, fresh.pending.empty() ? EPOLLIN | EPOLLRDHUP : EPOLLOUT);
        }
        continue;
      }
      auto it = connections.find(fd);
      if (it == connections.end()) continue;
      Connection& conn = *it->second;
      if (!conn.pending.empty()) {
        if (!flush(fd, conn)) {
          drop(fd);
        } else if (conn.pending.empty()) {
          watch(EPOLL_CTL_MOD, fd, EPOLLIN | EPOLLRDHUP);
        }
        continue;
      }
      ssize_t n = ::recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
      if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
      if (n <= 0) {  // the peer finished (or failed): nothing more to echo
        drop(fd);
        continue;
      }
      conn.pending.assign(buffer.data(), buffer.data() + n);
      if (!flush(fd, conn)) {
        drop(fd);
      } else if (!conn.pending.empty()) {
        watch(EPOLL_CTL_MOD, fd, EPOLLOUT);
      }
    }
  }
}
