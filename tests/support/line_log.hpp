// The captured output of a daemon, one entry per line, shared between the thread that reads the
// daemon's pipe and the test that waits for lines (a substring or a regex) with a deadline.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "support/wait.hpp"

namespace tunnel::test {

// What a line must contain: a plain substring, or a regex searched anywhere in the line.
class Match {
 public:
  // Implicit, so that a plain string literal reads as "a line containing this".
  Match(const char* substring) : Match(std::string(substring)) {}
  Match(std::string substring);
  static Match regex(const std::string& pattern);

  bool operator()(const std::string& line) const;
  const std::string& describe() const { return description_; }

 private:
  Match() = default;
  std::string substring_;
  std::optional<std::regex> regex_;
  std::string description_;
};

struct LogLine {
  std::string text;
  Clock::time_point arrived;  // when the reader thread saw it
};

class LineLog {
 public:
  explicit LineLog(std::string name) : name_(std::move(name)) {}

  void append(std::string line);
  // The writer is gone (the process exited): waits stop early instead of running to the deadline.
  void close();
  // Waits until close() was called, so that every line the process wrote is here.
  bool wait_closed(Millis timeout) const;

  size_t size() const;
  std::vector<LogLine> lines() const;
  // The last `n` lines, one per row, for failure messages.
  std::string tail(size_t n = 25) const;

  // The first line at index >= `from` matching, if any.
  std::optional<LogLine> find(const Match& match, size_t from = 0) const;
  size_t count(const Match& match, size_t from = 0) const;

  // Waits for a line at index >= `from` matching; throws WaitTimeout with the log's tail otherwise.
  LogLine wait_for(const Match& match, Millis timeout, size_t from = 0) const;
  std::optional<LogLine> try_wait_for(const Match& match, Millis timeout, size_t from = 0) const;

 private:
  std::optional<LogLine> find_locked(const Match& match, size_t from) const;
  std::string tail_locked(size_t n) const;

  std::string name_;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::vector<LogLine> lines_;
  bool closed_ = false;
};

// The value of `key=` in a `key=value` log line (value up to the next space), if present.
std::optional<std::string> field(const std::string& line, const std::string& key);

// The wall-clock time stamped at the start of a daemon log line (`2026-11-25T02:21:37.123Z`).
std::optional<std::chrono::system_clock::time_point> stamped_time(const std::string& line);

}  // namespace tunnel::test
