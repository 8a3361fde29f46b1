// hold: opens N TCP connections to an echo service (directly or through a relay) and keeps them
// open and idle, for bench/run.sh's idle-connection test. Each connection counts as open once one
// byte went there and back, so that a relay has set up the whole path, not only accepted it.
// Opens at most P at once (non-blocking, one epoll thread). Then prints one line
//   open conns=N seconds=S errors=E
// and holds them until it is killed (SIGTERM), which closes them all.
// `hold HOST:PORT N [--parallel P]`. Build: g++ -O2 -std=c++20 bench/hold.cpp -o hold
#include <netdb.h>
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
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

namespace {

[[noreturn]] void usage() {
  std::fprintf(stderr, "usage: hold HOST:PORT N [--parallel P]   (default P: 64)\n");
  std::exit(2);
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "hold: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

std::uint64_t parse_number(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size()) usage();
  return value;
}

double now_s() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

enum class State { connecting, waiting_echo, open };

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && argc != 5) usage();
  std::string host_port = argv[1];
  std::uint64_t total = parse_number(argv[2]);
  std::uint64_t parallel = 64;
  if (argc == 5) {
    if (std::string_view(argv[3]) != "--parallel") usage();
    parallel = parse_number(argv[4]);
  }
  if (total == 0 || parallel == 0) usage();

  auto colon = host_port.rfind(':');
  if (colon == std::string::npos) usage();
  std::string host = host_port.substr(0, colon);
  std::string port = host_port.substr(colon + 1);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* ai = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &ai); rc != 0 || ai == nullptr) {
    std::fprintf(stderr, "hold: cannot resolve %s: %s\n", host_port.c_str(), gai_strerror(rc));
    return 1;
  }

  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  std::vector<State> state(1 << 16, State::connecting);  // by descriptor
  std::vector<int> open_fds;
  open_fds.reserve(total);
  std::uint64_t in_flight = 0, started = 0, errors = 0;
  // Failures are retried, but not forever: a broken relay should fail the run, not spin.
  const std::uint64_t max_errors = total / 10 + 100;
  double start = now_s();

  auto launch = [&]() {
    int fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    if (static_cast<size_t>(fd) >= state.size()) state.resize(static_cast<size_t>(fd) * 2);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) die("connect");
    state[static_cast<size_t>(fd)] = State::connecting;
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.fd = fd;
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl");
    ++in_flight;
    ++started;
  };
  auto fail = [&](int fd) {
    ::close(fd);
    --in_flight;
    --started;  // to be started again
    if (++errors > max_errors) {
      std::fprintf(stderr, "hold: %llu connections failed, giving up\n",
                   static_cast<unsigned long long>(errors));
      std::exit(1);
    }
  };

  std::vector<epoll_event> events(256);
  while (open_fds.size() < total) {
    while (in_flight < parallel && started < total) launch();
    int ready = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), 30000);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) die("epoll_wait");
    if (ready == 0) {
      std::fprintf(stderr, "hold: no progress for 30 s with %zu open\n", open_fds.size());
      return 1;
    }
    for (int i = 0; i < ready; ++i) {
      int fd = events[i].data.fd;
      State& s = state[static_cast<size_t>(fd)];
      if (s == State::connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        char byte = 'h';
        if (err != 0 || ::send(fd, &byte, 1, MSG_NOSIGNAL) != 1) {
          fail(fd);
          continue;
        }
        s = State::waiting_echo;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        if (::epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) != 0) die("epoll_ctl");
      } else if (s == State::waiting_echo) {
        char byte = 0;
        ssize_t n = ::recv(fd, &byte, 1, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (n != 1) {
          fail(fd);
          continue;
        }
        // Open: out of the epoll set, so idle connections cost the holder nothing per wake-up.
        ::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        s = State::open;
        --in_flight;
        open_fds.push_back(fd);
      }
    }
  }
  std::printf("open conns=%zu seconds=%.3f errors=%llu\n", open_fds.size(), now_s() - start,
              static_cast<unsigned long long>(errors));
  std::fflush(stdout);
  for (;;) ::pause();  // the kernel closes every connection when the signal ends the process
}
