// Splits a byte stream into protocol lines: each ends in `\n` and is at most kMaxLineLength bytes
// including it. Knows nothing of sockets, so it can be tested and fuzzed on its own.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace tunnel {

inline constexpr size_t kMaxLineLength = 256;

class LineReader {
 public:
  // Appends received bytes.
  void feed(std::string_view bytes);
  // The next complete line without its `\n`, if any. Once a line is too long, returns nothing
  // and overflowed() stays true: the connection must be closed.
  std::optional<std::string> next();
  bool overflowed() const { return overflowed_; }
  size_t buffered() const { return buffer_.size() - start_; }

 private:
  std::string buffer_;
  size_t start_ = 0;
  bool overflowed_ = false;
};

}  // namespace tunnel
