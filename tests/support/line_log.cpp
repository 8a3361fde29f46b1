// Captured daemon output: storage, matching and waiting with deadlines.
#include "support/line_log.hpp"

#include <cstdio>
#include <ctime>

namespace tunnel::test {

Match::Match(std::string substring)
    : substring_(std::move(substring)), description_("a line containing \"" + substring_ + "\"") {}

Match Match::regex(const std::string& pattern) {
  Match m;
  m.regex_.emplace(pattern, std::regex::ECMAScript);
  m.description_ = "a line matching /" + pattern + "/";
  return m;
}

bool Match::operator()(const std::string& line) const {
  if (regex_) return std::regex_search(line, *regex_);
  return line.find(substring_) != std::string::npos;
}

void LineLog::append(std::string line) {
  {
    std::lock_guard lock(mutex_);
    lines_.push_back(LogLine{std::move(line), Clock::now()});
  }
  changed_.notify_all();
}

void LineLog::close() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  changed_.notify_all();
}

bool LineLog::wait_closed(Millis timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [this] { return closed_; });
}

size_t LineLog::size() const {
  std::lock_guard lock(mutex_);
  return lines_.size();
}

std::vector<LogLine> LineLog::lines() const {
  std::lock_guard lock(mutex_);
  return lines_;
}

std::string LineLog::tail(size_t n) const {
  std::lock_guard lock(mutex_);
  return tail_locked(n);
}

std::string LineLog::tail_locked(size_t n) const {
  std::string out = "--- last lines of " + name_ + " (" + std::to_string(lines_.size()) +
                    " in all" + (closed_ ? ", output closed" : "") + ") ---\n";
  const size_t first = lines_.size() > n ? lines_.size() - n : 0;
  for (size_t i = first; i < lines_.size(); ++i) out += "  " + lines_[i].text + "\n";
  return out;
}

std::optional<LogLine> LineLog::find_locked(const Match& match, size_t from) const {
  for (size_t i = from; i < lines_.size(); ++i) {
    if (match(lines_[i].text)) return lines_[i];
  }
  return std::nullopt;
}

std::optional<LogLine> LineLog::find(const Match& match, size_t from) const {
  std::lock_guard lock(mutex_);
  return find_locked(match, from);
}

size_t LineLog::count(const Match& match, size_t from) const {
  std::lock_guard lock(mutex_);
  size_t n = 0;
  for (size_t i = from; i < lines_.size(); ++i) n += match(lines_[i].text) ? 1 : 0;
  return n;
}

std::optional<LogLine> LineLog::try_wait_for(const Match& match, Millis timeout,
                                             size_t from) const {
  const auto deadline = Clock::now() + timeout;
  std::unique_lock lock(mutex_);
  size_t scanned = from;
  while (true) {
    for (; scanned < lines_.size(); ++scanned) {
      if (match(lines_[scanned].text)) return lines_[scanned];
    }
    if (closed_) return std::nullopt;
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout) {
      return find_locked(match, scanned);
    }
  }
}

LogLine LineLog::wait_for(const Match& match, Millis timeout, size_t from) const {
  if (auto line = try_wait_for(match, timeout, from)) return *line;
  std::lock_guard lock(mutex_);
  throw WaitTimeout(name_ + ": no " + match.describe() + " within " +
                    std::to_string(timeout.count()) + " ms" +
                    (closed_ ? " (the process closed its output)" : "") + "\n" + tail_locked(25));
}

std::optional<std::string> field(const std::string& line, const std::string& key) {
  const std::string needle = key + "=";
  size_t pos = 0;
  while ((pos = line.find(needle, pos)) != std::string::npos) {
    if (pos == 0 || line[pos - 1] == ' ') {
      const size_t start = pos + needle.size();
      const size_t end = line.find(' ', start);
      return line.substr(start, end == std::string::npos ? std::string::npos : end - start);
    }
    pos += needle.size();
  }
  return std::nullopt;
}

std::optional<std::chrono::system_clock::time_point> stamped_time(const std::string& line) {
  // 2026-11-25T02:21:37.123Z
  std::tm tm{};
  int millis = 0;
  if (std::sscanf(line.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon,
                  &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &millis) != 7) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  const time_t seconds = timegm(&tm);
  return std::chrono::system_clock::from_time_t(seconds) + std::chrono::milliseconds(millis);
}

}  // namespace tunnel::test
