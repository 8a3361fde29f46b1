// The log sink: stderr, one line per write, prefixed for a terminal/file or for journald.
#include "tunnel/log.hpp"

#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <stdexcept>
#include <string>

namespace tunnel::log {
namespace {

Level g_level = Level::info;
bool g_journal = std::getenv("JOURNAL_STREAM") != nullptr;

const char* name_of(Level l) {
  switch (l) {
    case Level::trace:
      return "trace";
    case Level::debug:
      return "debug";
    case Level::info:
      return "info";
    case Level::warn:
      return "warn";
    case Level::error:
      return "error";
    case Level::off:
      break;
  }
  return "off";
}

// syslog priorities, as sd-daemon(3) prefixes expect them.
int priority_of(Level l) {
  switch (l) {
    case Level::trace:
    case Level::debug:
      return 7;
    case Level::info:
      return 6;
    case Level::warn:
      return 4;
    default:
      return 3;
  }
}

}  // namespace

Level parse_level(std::string_view text) {
  for (auto l : {Level::trace, Level::debug, Level::info, Level::warn, Level::error, Level::off})
    if (text == name_of(l)) return l;
  throw std::invalid_argument(
      fmt::format("'{}' is not a log level (trace, debug, info, warn, error, off)", text));
}

void set_level(Level l) {
  g_level = l;
}
Level level() {
  return g_level;
}
void set_journal_mode(bool on) {
  g_journal = on;
}

void write(Level l, std::string_view message) {
  std::string line;
  if (g_journal) {
    line = fmt::format("<{}>{}\n", priority_of(l), message);
  } else {
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    tm utc{};
    ::gmtime_r(&now.tv_sec, &utc);
    line = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z level={} {}\n",
                       utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                       utc.tm_sec, now.tv_nsec / 1'000'000, name_of(l), message);
  }
  // One write per line so lines from the two daemons sharing a terminal never interleave mid-line.
  // A full or closed stderr must not stop the daemon, so the result is deliberately ignored.
  [[maybe_unused]] auto written = ::write(STDERR_FILENO, line.data(), line.size());
}

bool RateLimit::allow(uint64_t& suppressed) {
  auto now = std::chrono::steady_clock::now();
  if (last_ != std::chrono::steady_clock::time_point{} && now - last_ < interval_) {
    ++held_back_;
    return false;
  }
  last_ = now;
  suppressed = held_back_;
  held_back_ = 0;
  return true;
}

}  // namespace tunnel::log
