// Line framing with a hard length limit.
#include "tunnel/line_reader.hpp"

namespace tunnel {

void LineReader::feed(std::string_view bytes) {
  if (overflowed_) return;
  // Drop consumed bytes before growing, so the buffer never holds more than one partial line
  // plus what a single read delivered.
  if (start_ > 0) {
    buffer_.erase(0, start_);
    start_ = 0;
  }
  buffer_.append(bytes);
}

std::optional<std::string> LineReader::next() {
  if (overflowed_) return std::nullopt;
  auto end = buffer_.find('\n', start_);
  if (end == std::string::npos) {
    if (buffer_.size() - start_ >= kMaxLineLength) overflowed_ = true;
    return std::nullopt;
  }
  if (end - start_ + 1 > kMaxLineLength) {
    overflowed_ = true;
    return std::nullopt;
  }
  std::string line = buffer_.substr(start_, end - start_);
  start_ = end + 1;
  return line;
}

}  // namespace tunnel
