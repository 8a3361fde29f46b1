// Connection IDs: 128 bits from the OS random source, written as 32 lowercase hex digits. Random so
// that nobody on port B can guess a pending connection's ID and take it over.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tunnel {

class ConnId {
 public:
  static ConnId random();
  // Exactly 32 lowercase hex digits, or nothing.
  static std::optional<ConnId> parse(std::string_view hex);

  std::string hex() const;
  // The first 8 hex digits, enough to follow one connection through the logs.
  std::string short_hex() const { return hex().substr(0, 8); }

  bool operator==(const ConnId&) const = default;
  size_t hash() const;

 private:
  std::array<uint8_t, 16> bytes_{};
};

struct ConnIdHash {
  size_t operator()(const ConnId& id) const { return id.hash(); }
};

}  // namespace tunnel
