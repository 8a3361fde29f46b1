// connrate: how many new connections per second a TCP endpoint (an echo server, directly or through
// the tunnel) serves, and how long each takes to answer. W threads each loop for D seconds (or N
// connections each, with --count): connect, send N bytes, read the N echoed bytes back, close.
// Prints one line:
//   conns=... seconds=... rate_per_s=... ttfb_p50_us=... ttfb_p99_us=... errors=...
// where ttfb is from the start of connect() to the first echoed byte: through the tunnel, connect()
// only reaches port A, so this is the time the tunnel takes to set the connection up end to end.
// --banner: the service speaks first (bench/echo --banner); send nothing, read N bytes, and ttfb is
// connect() to the first of them. --connect-only: send nothing, ttfb is connect() alone (one round
// trip to a listener: bench/run.sh measures the emulated WAN's RTT with it).
// Build: g++ -O2 -std=c++20 -pthread bench/connrate.cpp -o connrate
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

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: connrate HOST:PORT [--workers W] [--seconds D] [--count C] [--size N]\n"
               "                [--banner | --connect-only]\n"
               "       (defaults: 1 worker, 5 seconds (without --count), 1 byte)\n");
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

struct Target {
  sockaddr_storage addr{};
  socklen_t len = 0;
  int family = 0;
};

// Resolved once, so that the loop measures connections and not name lookups.
Target resolve(const std::string& host_port) {
  auto colon = host_port.rfind(':');
  if (colon == std::string::npos) usage();
  std::string host = host_port.substr(0, colon);
  std::string port = host_port.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &list);
      rc != 0 || list == nullptr) {
    std::fprintf(stderr, "connrate: cannot resolve %s: %s\n", host_port.c_str(), gai_strerror(rc));
    std::exit(1);
  }
  Target target;
  std::memcpy(&target.addr, list->ai_addr, list->ai_addrlen);
  target.len = list->ai_addrlen;
  target.family = list->ai_family;
  ::freeaddrinfo(list);
  return target;
}

enum class Mode { echo, banner, connect_only };

struct Outcome {
  std::vector<std::int64_t> ttfb_ns;  // one per connection that echoed every byte
  std::uint64_t errors = 0;
  int last_errno = 0;
};

// One connection: returns false (errno set, or 0 for an early close or wrong bytes) on failure.
bool one_connection(const Target& target, Mode mode, const std::vector<char>& out,
                    std::vector<char>& in, std::int64_t& ttfb) {
  std::int64_t start = now_ns();
  int fd = ::socket(target.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // A stalled tunnel should count as an error, not hang the worker.
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  bool ok = false;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&target.addr), target.len) != 0) {
    // failed: errno says why
  } else if (mode == Mode::connect_only) {
    ttfb = now_ns() - start;
    ok = true;
  } else {
    size_t sent = mode == Mode::banner ? out.size() : 0;  // a banner service is sent nothing
    while (sent < out.size()) {
      ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    size_t got = 0;
    while (sent == out.size() && got < in.size()) {
      ssize_t n = ::recv(fd, in.data() + got, in.size() - got, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        if (n == 0) errno = 0;
        break;
      }
      if (got == 0) ttfb = now_ns() - start;
      got += static_cast<size_t>(n);
    }
    // A banner's bytes are not ours to check; an echo must be exactly what was sent.
    ok = got == in.size() && (mode == Mode::banner || in == out);
    if (got == in.size() && !ok) errno = 0;
  }
  int saved = errno;
  ::close(fd);
  errno = saved;
  return ok;
}

void worker(const Target& target, Mode mode, std::uint64_t size, std::int64_t deadline,
            std::uint64_t count, Outcome& outcome) {
  std::vector<char> out(size), in(size);
  for (std::uint64_t i = 0; now_ns() < deadline && i < count; ++i) {
    out[0] = static_cast<char>(i);  // so a misrouted echo (another connection's bytes) is noticed
    std::int64_t ttfb = 0;
    if (one_connection(target, mode, out, in, ttfb)) {
      outcome.ttfb_ns.push_back(ttfb);
    } else {
      ++outcome.errors;
      outcome.last_errno = errno;
      // A refused or exhausted endpoint would otherwise be hammered in a tight loop.
      usleep(1000);
    }
  }
}

// Nearest-rank percentile of sorted samples, in microseconds.
double percentile_us(const std::vector<std::int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(p / 100.0 * static_cast<double>(sorted.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return static_cast<double>(sorted[rank - 1]) / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage();
  std::uint64_t workers = 1, seconds = 0, size = 1, count = 0;
  Mode mode = Mode::echo;
  for (int i = 2; i < argc; i += 2) {
    std::string_view flag = argv[i];
    if (flag == "--banner" || flag == "--connect-only") {
      mode = flag == "--banner" ? Mode::banner : Mode::connect_only;
      --i;  // a flag without a value
      continue;
    }
    if (i + 1 >= argc) usage();
    std::uint64_t value = parse_number(argv[i + 1]);
    if (flag == "--workers")
      workers = value;
    else if (flag == "--seconds")
      seconds = value;
    else if (flag == "--size")
      size = value;
    else if (flag == "--count")
      count = value;
    else
      usage();
  }
  if (seconds == 0 && count == 0) seconds = 5;
  if (workers == 0 || workers > 1024 || size == 0) usage();
  if (count == 0) count = UINT64_MAX;
  Target target = resolve(argv[1]);

  std::vector<Outcome> outcomes(workers);
  std::vector<std::thread> threads;
  std::int64_t start = now_ns();
  std::int64_t deadline =
      seconds == 0 ? INT64_MAX : start + static_cast<std::int64_t>(seconds) * 1'000'000'000;
  for (auto& outcome : outcomes)
    threads.emplace_back(worker, std::cref(target), mode, size, deadline, count, std::ref(outcome));
  for (auto& thread : threads) thread.join();
  // The last connections may end after the deadline: the rate is over the time really spent.
  double elapsed = static_cast<double>(now_ns() - start) / 1e9;

  std::vector<std::int64_t> all;
  std::uint64_t errors = 0;
  int last_errno = 0;
  for (auto& outcome : outcomes) {
    all.insert(all.end(), outcome.ttfb_ns.begin(), outcome.ttfb_ns.end());
    errors += outcome.errors;
    if (outcome.errors > 0) last_errno = outcome.last_errno;
  }
  std::sort(all.begin(), all.end());
  std::printf(
      "conns=%zu seconds=%.2f rate_per_s=%.0f ttfb_p50_us=%.1f ttfb_p99_us=%.1f errors=%llu",
      all.size(), elapsed, static_cast<double>(all.size()) / elapsed, percentile_us(all, 50),
      percentile_us(all, 99), static_cast<unsigned long long>(errors));
  if (errors > 0)
    std::printf(" last_error=\"%s\"",
                last_errno != 0 ? std::strerror(last_errno) : "closed early or wrong bytes");
  std::printf("\n");
  return all.empty() ? 1 : 0;
}
