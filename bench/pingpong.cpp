// pingpong: measures TCP round-trip latency (e.g. 1 byte there and back) through the tunnel or
// directly. `pingpong serve PORT` is an echo server on 127.0.0.1; `pingpong client HOST:PORT ...`
// times round trips over one connection and prints percentiles. Build: g++ -O2 -std=c++20
// bench/pingpong.cpp -o pingpong
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "pingpong: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: pingpong serve PORT            (echo server on 127.0.0.1; PORT 0 = any)\n"
               "       pingpong client HOST:PORT [--size BYTES] [--count N] [--warmup W]\n");
  std::exit(2);
}

std::uint64_t parse_number(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size()) usage();
  return value;
}

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

void set_nodelay(int fd) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) die("TCP_NODELAY");
}

// Both return false when the peer closed or the socket failed (errno tells which when it failed).
bool write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool read_all(int fd, char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::recv(fd, data, size, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = 0;
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

void echo_connection(int fd) {
  set_nodelay(fd);
  std::vector<char> buffer(64 * 1024);
  for (;;) {
    ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || !write_all(fd, buffer.data(), static_cast<size_t>(n))) break;
  }
  ::close(fd);
}

int serve(std::uint64_t port) {
  if (port > 65535) usage();
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) die("socket");
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("bind");
  if (::listen(listener, 128) != 0) die("listen");
  socklen_t len = sizeof addr;
  if (::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) die("getsockname");
  // A script that passed PORT 0 reads the real port from this line.
  std::printf("listening port=%u\n", unsigned{ntohs(addr.sin_port)});
  std::fflush(stdout);
  for (;;) {
    int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      die("accept");
    }
    std::thread(echo_connection, fd).detach();
  }
}

int connect_to(const std::string& host_port) {
  auto colon = host_port.rfind(':');
  if (colon == std::string::npos) usage();
  std::string host = host_port.substr(0, colon);
  std::string port = host_port.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &list); rc != 0) {
    std::fprintf(stderr, "pingpong: cannot resolve %s: %s\n", host_port.c_str(), gai_strerror(rc));
    std::exit(1);
  }
  int fd = -1;
  for (addrinfo* ai = list; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd >= 0 && ::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(list);
  if (fd < 0) die("connect to " + host_port);
  return fd;
}

// Nearest-rank percentile of sorted samples.
double percentile_us(const std::vector<std::int64_t>& sorted, double p) {
  size_t rank = static_cast<size_t>(p / 100.0 * static_cast<double>(sorted.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return static_cast<double>(sorted[rank - 1]) / 1000.0;
}

int client(const std::string& host_port, std::uint64_t size, std::uint64_t count,
           std::uint64_t warmup) {
  if (size == 0 || count == 0) usage();
  int fd = connect_to(host_port);
  set_nodelay(fd);
  // A stalled tunnel should fail the run, not hang it.
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);

  std::vector<char> out(size), in(size);
  std::vector<std::int64_t> samples;
  samples.reserve(count);
  for (std::uint64_t i = 0; i < warmup + count; ++i) {
    out[0] = static_cast<char>(i);  // so a stale or misrouted echo is noticed below
    std::int64_t start = now_ns();
    if (!write_all(fd, out.data(), size)) die("send");
    if (!read_all(fd, in.data(), size)) {
      if (errno != 0) die("recv");
      std::fprintf(stderr, "pingpong: the peer closed the connection\n");
      return 1;
    }
    std::int64_t elapsed = now_ns() - start;
    if (in != out) {
      std::fprintf(stderr, "pingpong: round trip %llu came back with different bytes\n",
                   static_cast<unsigned long long>(i));
      return 1;
    }
    if (i >= warmup) samples.push_back(elapsed);
  }
  ::close(fd);

  double total = 0;
  for (auto s : samples) total += static_cast<double>(s);
  double mean = total / static_cast<double>(samples.size()) / 1000.0;
  std::sort(samples.begin(), samples.end());
  std::printf("p50_us=%.1f p99_us=%.1f p999_us=%.1f mean_us=%.1f count=%zu\n",
              percentile_us(samples, 50), percentile_us(samples, 99), percentile_us(samples, 99.9),
              mean, samples.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) usage();
  std::string_view mode = argv[1];
  if (mode == "serve" && argc == 3) return serve(parse_number(argv[2]));
  if (mode != "client") usage();
  std::uint64_t size = 1, count = 10000, warmup = 1000;
  for (int i = 3; i < argc; i += 2) {
    std::string_view flag = argv[i];
    if (i + 1 >= argc) usage();
    std::uint64_t value = parse_number(argv[i + 1]);
    if (flag == "--size")
      size = value;
    else if (flag == "--count")
      count = value;
    else if (flag == "--warmup")
      warmup = value;
    else
      usage();
  }
  return client(argv[2], size, count, warmup);
}
