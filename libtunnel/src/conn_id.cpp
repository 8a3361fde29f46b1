// Random connection IDs from getrandom(2).
#include "tunnel/conn_id.hpp"

#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace tunnel {

ConnId ConnId::random() {
  ConnId id;
  size_t filled = 0;
  while (filled < id.bytes_.size()) {
    ssize_t n = ::getrandom(id.bytes_.data() + filled, id.bytes_.size() - filled, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::system_category(), "getrandom");
    }
    filled += static_cast<size_t>(n);
  }
  return id;
}

std::optional<ConnId> ConnId::parse(std::string_view hex) {
  if (hex.size() != 32) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  ConnId id;
  for (size_t i = 0; i < 16; ++i) {
    int high = nibble(hex[2 * i]), low = nibble(hex[2 * i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    id.bytes_[i] = static_cast<uint8_t>(high << 4 | low);
  }
  return id;
}

std::string ConnId::hex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(32, '0');
  for (size_t i = 0; i < 16; ++i) {
    out[2 * i] = kDigits[bytes_[i] >> 4];
    out[2 * i + 1] = kDigits[bytes_[i] & 0xf];
  }
  return out;
}

size_t ConnId::hash() const {
  // The bytes are uniformly random already; any eight of them make a good hash.
  size_t h;
  std::memcpy(&h, bytes_.data(), sizeof h);
  return h;
}

}  // namespace tunnel
