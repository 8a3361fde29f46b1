// floor_relay: the least a TCP relay can do, as a floor for bench/run.sh. Accepts on LISTEN, dials
// TARGET for each connection, and moves bytes with blocking splice(2) through a pipe, one thread
// per direction, nothing else (no event loop, no buffers in user space, no limits). A half-close is
// passed on (EOF read on one side: shutdown(SHUT_WR) on the other). Two of these chained are the
// floor for any two-hop relay such as the tunnel.
// `floor_relay LISTEN_HOST:PORT TARGET_HOST:PORT` (port 0 = any free) prints "listening port=N".
// Build: g++ -O2 -std=c++20 -pthread bench/floor_relay.cpp -o floor_relay
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "floor_relay: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

// HOST:PORT or [V6]:PORT, resolved once at start.
addrinfo* resolve(const std::string& host_port, bool passive) {
  auto colon = host_port.rfind(':');
  if (colon == std::string::npos) {
    std::fprintf(stderr, "floor_relay: '%s' is not HOST:PORT\n", host_port.c_str());
    std::exit(2);
  }
  std::string host = host_port.substr(0, colon);
  std::string port = host_port.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  addrinfo* list = nullptr;
  if (int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &list);
      rc != 0) {
    std::fprintf(stderr, "floor_relay: cannot resolve %s: %s\n", host_port.c_str(),
                 gai_strerror(rc));
    std::exit(2);
  }
  return list;
}

addrinfo* target = nullptr;

struct Connection {
  int a = -1;  // accepted
  int b = -1;  // dialled
  std::atomic<int> directions{2};
};

struct Direction {
  Connection* conn;
  int from;
  int to;
};

void* pump(void* arg) {
  auto* d = static_cast<Direction*>(arg);
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) == 0) {
    for (;;) {
      ssize_t in = ::splice(d->from, nullptr, pipefd[1], nullptr, 1 << 16, SPLICE_F_MOVE);
      if (in < 0 && errno == EINTR) continue;
      if (in == 0) {
        ::shutdown(d->to, SHUT_WR);  // pass the half-close on
        break;
      }
      if (in < 0) {
        // A reset: wake the other direction too, it has nothing more to do.
        ::shutdown(d->to, SHUT_RDWR);
        ::shutdown(d->from, SHUT_RDWR);
        break;
      }
      bool failed = false;
      while (in > 0) {
        ssize_t out =
            ::splice(pipefd[0], nullptr, d->to, nullptr, static_cast<size_t>(in), SPLICE_F_MOVE);
        if (out < 0 && errno == EINTR) continue;
        if (out <= 0) {
          failed = true;
          break;
        }
        in -= out;
      }
      if (failed) {
        ::shutdown(d->to, SHUT_RDWR);
        ::shutdown(d->from, SHUT_RDWR);
        break;
      }
    }
    ::close(pipefd[0]);
    ::close(pipefd[1]);
  } else {
    ::shutdown(d->to, SHUT_RDWR);
    ::shutdown(d->from, SHUT_RDWR);
  }
  Connection* conn = d->conn;
  delete d;
  if (conn->directions.fetch_sub(1) == 1) {  // the last direction closes both sockets
    ::close(conn->a);
    ::close(conn->b);
    delete conn;
  }
  return nullptr;
}

void start(Connection* conn, int from, int to) {
  // Small stacks: thousands of idle connections mean thousands of threads (the idle test).
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  auto* d = new Direction{conn, from, to};
  if (::pthread_create(&thread, &attr, pump, d) != 0) die("pthread_create");
  pthread_attr_destroy(&attr);
}

int dial() {
  for (addrinfo* ai = target; ai != nullptr; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) return fd;
    ::close(fd);
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: floor_relay LISTEN_HOST:PORT TARGET_HOST:PORT\n");
    return 2;
  }
  // A peer that closed while bytes were in flight must end the splice with EPIPE, not the process.
  ::signal(SIGPIPE, SIG_IGN);
  addrinfo* local = resolve(argv[1], true);
  target = resolve(argv[2], false);
  int listener = ::socket(local->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) die("socket");
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(listener, local->ai_addr, local->ai_addrlen) != 0) die("bind");
  if (::listen(listener, 4096) != 0) die("listen");
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) die("getsockname");
  unsigned port = addr.ss_family == AF_INET6
                      ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                      : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  std::printf("listening port=%u\n", port);
  std::fflush(stdout);
  for (;;) {
    int a = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (a < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE) {  // out of descriptors: let some close
        ::usleep(10000);
        continue;
      }
      die("accept");
    }
    // Dialled inline: one blocking connect at a time is the simplest thing that works.
    int b = dial();
    if (b < 0) {
      ::close(a);
      continue;
    }
    // Like the tunnel: small writes go out at once, both ways.
    setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto* conn = new Connection{a, b};
    start(conn, a, b);
    start(conn, b, a);
  }
}
