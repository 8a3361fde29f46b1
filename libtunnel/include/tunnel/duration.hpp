// Human durations for flags and config: `500ms`, `10s`, `2m`, `1h` (a unit is required).
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace tunnel {

using Duration = std::chrono::milliseconds;

// Throws std::invalid_argument with a readable reason.
Duration parse_duration(std::string_view text);
std::string format_duration(Duration d);

}  // namespace tunnel
