// One line per event, `key=value` fields, on stderr. Under systemd (JOURNAL_STREAM set) lines carry
// `<N>` priority prefixes and no timestamp, since journald stamps them itself.
// Logging never blocks the loop: a line stderr cannot take at once is dropped and counted, and the
// next line that gets through is preceded by `event=log-dropped lines=N`.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <string>
#include <string_view>

namespace tunnel::log {

enum class Level { trace = 0, debug = 1, info = 2, warn = 3, error = 4, off = 5 };

Level parse_level(std::string_view text);  // throws std::invalid_argument
void set_level(Level level);
Level level();
inline bool enabled(Level l) {
  return l >= level();
}
// Decided once from the environment at start; tests may force it.
void set_journal_mode(bool on);

// Puts stderr in non-blocking mode when it is a pipe or a socket (what systemd and supervisors
// give), so that a reader who stops reading cannot stall the daemon. A terminal or a file is left
// as it is: O_NONBLOCK belongs to the open file description, which a shell may share.
void use_nonblocking_stderr();

void write(Level level, std::string_view message);

// Text a peer chose, made safe to put between quotes in a key="value" field: `"` and `\` are
// escaped and bytes outside printable ASCII become \xNN, so a peer cannot forge fields or lines.
std::string escaped(std::string_view text);

template <typename... Args>
void emit(Level l, fmt::format_string<Args...> format, Args&&... args) {
  if (!enabled(l)) return;
  write(l, fmt::format(format, std::forward<Args>(args)...));
}

// Lets one line through per interval and counts the ones it held back, for events a peer can
// trigger at will (refusals, EMFILE), so that a flood cannot flood the log.
class RateLimit {
 public:
  explicit RateLimit(std::chrono::milliseconds interval = std::chrono::seconds(1))
      : interval_(interval) {}
  // True when this occurrence should be logged; `suppressed` gets how many were held back since.
  bool allow(uint64_t& suppressed);

 private:
  std::chrono::milliseconds interval_;
  std::chrono::steady_clock::time_point last_{};
  uint64_t held_back_ = 0;
};

}  // namespace tunnel::log

// The level is checked before the arguments are evaluated, so a disabled line costs nothing.
#define TLOG_AT(level, ...)                                                     \
  do {                                                                          \
    if (::tunnel::log::enabled(level)) ::tunnel::log::emit(level, __VA_ARGS__); \
  } while (false)
#define TLOG_TRACE(...) TLOG_AT(::tunnel::log::Level::trace, __VA_ARGS__)
#define TLOG_DEBUG(...) TLOG_AT(::tunnel::log::Level::debug, __VA_ARGS__)
#define TLOG_INFO(...) TLOG_AT(::tunnel::log::Level::info, __VA_ARGS__)
#define TLOG_WARN(...) TLOG_AT(::tunnel::log::Level::warn, __VA_ARGS__)
#define TLOG_ERROR(...) TLOG_AT(::tunnel::log::Level::error, __VA_ARGS__)
