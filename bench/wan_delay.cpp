// wan_delay: an emulated WAN link for bench/run.sh, where `tc netem` is not available. Creates two
// TAP devices and carries every Ethernet frame read from one to the other after a fixed delay, both
// ways, in order (a FIFO per direction, one thread each). No loss, no rate limit: only latency.
// The caller moves each device into its own network namespace (`ip link set DEV netns NS`); the
// open descriptors keep working there.
// `wan_delay DEV_A DEV_B DELAY_MS` prints "ready" once both devices exist, and runs until killed.
// Build: g++ -O2 -std=c++20 -pthread bench/wan_delay.cpp -o wan_delay
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "wan_delay: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

int open_tap(const std::string& name) {
  int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) die("open /dev/net/tun");
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;  // bare Ethernet frames, no packet-info header
  if (name.size() >= IFNAMSIZ) {
    std::fprintf(stderr, "wan_delay: device name too long: %s\n", name.c_str());
    std::exit(2);
  }
  std::memcpy(ifr.ifr_name, name.c_str(), name.size());
  if (::ioctl(fd, TUNSETIFF, &ifr) != 0) die("TUNSETIFF " + name);
  return fd;
}

struct Frame {
  std::int64_t due;
  std::vector<char> bytes;
};

// Frames from `in` are written to `out` delay_ns after they were read. The wait for the next due
// frame is a ppoll on `in` with a nanosecond timeout, so reading goes on meanwhile.
void forward(int in, int out, std::int64_t delay_ns) {
  std::deque<Frame> queue;
  std::vector<char> buffer(65536);
  pollfd pfd{in, POLLIN, 0};
  for (;;) {
    timespec timeout{};
    timespec* wait = nullptr;  // nothing queued: wait for a frame without a deadline
    if (!queue.empty()) {
      std::int64_t left = queue.front().due - now_ns();
      if (left < 0) left = 0;
      timeout.tv_sec = left / 1'000'000'000;
      timeout.tv_nsec = left % 1'000'000'000;
      wait = &timeout;
    }
    int ready = ::ppoll(&pfd, 1, wait, nullptr);
    if (ready < 0 && errno != EINTR) die("ppoll");
    if (ready > 0 && (pfd.revents & POLLIN)) {
      ssize_t n = ::read(in, buffer.data(), buffer.size());
      if (n < 0 && errno != EINTR && errno != EAGAIN) die("read");
      if (n > 0) queue.push_back({now_ns() + delay_ns, {buffer.data(), buffer.data() + n}});
    }
    std::int64_t now = now_ns();
    while (!queue.empty() && queue.front().due <= now) {
      const auto& bytes = queue.front().bytes;
      // A frame the other side cannot take (device down) is dropped, as a link would.
      if (::write(out, bytes.data(), bytes.size()) < 0 && errno != EIO && errno != EAGAIN &&
          errno != ENOBUFS)
        die("write");
      queue.pop_front();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: wan_delay DEV_A DEV_B DELAY_MS   (one-way delay, both ways)\n");
    return 2;
  }
  std::string_view text = argv[3];
  double delay_ms = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), delay_ms);
  if (ec != std::errc{} || end != text.data() + text.size() || delay_ms < 0) {
    std::fprintf(stderr, "wan_delay: bad delay '%s'\n", argv[3]);
    return 2;
  }
  int a = open_tap(argv[1]);
  int b = open_tap(argv[2]);
  auto delay_ns = static_cast<std::int64_t>(delay_ms * 1e6);
  std::printf("ready\n");
  std::fflush(stdout);
  std::thread ab(forward, a, b, delay_ns);
  forward(b, a, delay_ns);
  ab.join();
}
