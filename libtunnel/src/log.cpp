// The log sink: stderr, one line per write, prefixed for a terminal/file or for journald.
#include "tunnel/log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <stdexcept>
#include <string>

namespace tunnel::log {
namespace {

Level g_level = Level::info;
bool g_journal = std::getenv("JOURNAL_STREAM") != nullptr;
// Lines stderr could not take since the last one it did.
uint64_t g_dropped = 0;
// The end of a line stderr took only part of: written before anything else, so lines stay whole.
std::string g_unwritten;

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

std::string format_line(Level l, std::string_view message) {
  if (g_journal) return fmt::format("<{}>{}\n", priority_of(l), message);
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  tm utc{};
  ::gmtime_r(&now.tv_sec, &utc);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z level={} {}\n", utc.tm_year + 1900,
                     utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                     now.tv_nsec / 1'000'000, name_of(l), message);
}

// Writes what stderr takes now, without waiting; returns how many bytes that was. A full pipe
// (EAGAIN) or a closed one (EPIPE, SIGPIPE being ignored) simply takes nothing.
size_t write_now(std::string_view bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(STDERR_FILENO, bytes.data() + done, bytes.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  return done;
}

// True when the whole line is written or, cut short by a full stderr, its end is kept to go first
// next time; false when stderr took none of it.
bool put_line(std::string_view line) {
  if (!g_unwritten.empty()) {
    g_unwritten.erase(0, write_now(g_unwritten));
    if (!g_unwritten.empty()) return false;
  }
  size_t done = write_now(line);
  if (done == 0) return false;
  g_unwritten.assign(line.substr(done));
  return true;
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

void use_nonblocking_stderr() {
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) < 0 || !(S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) return;
  int flags = ::fcntl(STDERR_FILENO, F_GETFL);
  if (flags >= 0 && !(flags & O_NONBLOCK)) ::fcntl(STDERR_FILENO, F_SETFL, flags | O_NONBLOCK);
}

void write(Level l, std::string_view message) {
  // Before anything new, say how much was lost; if even that does not fit, this line is lost too.
  if (g_dropped > 0 &&
      !put_line(format_line(Level::warn, fmt::format("event=log-dropped lines={}", g_dropped)))) {
    ++g_dropped;
    return;
  }
  g_dropped = 0;
  // One write per line so lines from the two daemons sharing a terminal never interleave mid-line.
  if (!put_line(format_line(l, message))) ++g_dropped;
}

std::string escaped(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c > 0x7e) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
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
