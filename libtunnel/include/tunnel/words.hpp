// Splitting a text line into words on single spaces, as both line protocols here (the tunnel's
// own and PROXY v1) define them: an empty word (leading, trailing or double space) is kept, so
// that the caller can refuse it.
#pragma once

#include <string_view>
#include <vector>

namespace tunnel {

inline std::vector<std::string_view> split_words(std::string_view line) {
  std::vector<std::string_view> words;
  size_t start = 0;
  for (;;) {
    auto space = line.find(' ', start);
    words.push_back(line.substr(start, space == std::string_view::npos ? space : space - start));
    if (space == std::string_view::npos) return words;
    start = space + 1;
  }
}

}  // namespace tunnel
