// Parsing and printing of human durations.
#include "tunnel/duration.hpp"

#include <fmt/format.h>

#include <charconv>
#include <stdexcept>

namespace tunnel {

Duration parse_duration(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return std::invalid_argument(
        fmt::format("'{}' is not a duration ({}; use e.g. 500ms, 10s, 2m, 1h)", text, why));
  };
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0) throw bad("it must start with a whole number");
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + digits, value);
  if (ec != std::errc{}) throw bad("the number is too large");
  std::string_view unit = text.substr(digits);
  uint64_t scale = 0;
  if (unit == "ms")
    scale = 1;
  else if (unit == "s")
    scale = 1000;
  else if (unit == "m")
    scale = 60'000;
  else if (unit == "h")
    scale = 3'600'000;
  else
    throw bad(unit.empty() ? "the unit is missing" : "the unit is not one of ms, s, m, h");
  // Cap at a day in milliseconds times a thousand: far beyond any sane timeout, no overflow.
  if (value > 86'400'000'000ULL / scale) throw bad("it is too long");
  return Duration(static_cast<int64_t>(value * scale));
}

std::string format_duration(Duration d) {
  auto ms = d.count();
  if (ms != 0 && ms % 3'600'000 == 0) return fmt::format("{}h", ms / 3'600'000);
  if (ms != 0 && ms % 60'000 == 0) return fmt::format("{}m", ms / 60'000);
  if (ms % 1000 == 0) return fmt::format("{}s", ms / 1000);
  return fmt::format("{}ms", ms);
}

}  // namespace tunnel
