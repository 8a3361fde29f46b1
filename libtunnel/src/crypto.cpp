// OpenSSL behind the few functions auth needs.
#include "tunnel/crypto.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>

#include <cerrno>
#include <stdexcept>
#include <system_error>

namespace tunnel::crypto {
namespace {

std::span<const uint8_t> bytes_of(std::string_view text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

int nibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

Digest hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> message) {
  Digest out{};
  unsigned int length = 0;
  // An empty key is valid HMAC; OpenSSL wants a non-null pointer for it.
  static const uint8_t kNoKey = 0;
  if (!HMAC(EVP_sha256(), key.empty() ? &kNoKey : key.data(), static_cast<int>(key.size()),
            message.data(), message.size(), out.data(), &length) ||
      length != out.size())
    throw std::runtime_error("HMAC-SHA256 failed in OpenSSL");
  return out;
}

Digest hmac_sha256(std::string_view key, std::string_view message) {
  return hmac_sha256(bytes_of(key), bytes_of(message));
}

bool equal_constant_time(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  // The lengths of proofs are public (fixed by the protocol); only the contents are secret.
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void random_bytes(std::span<uint8_t> out) {
  size_t filled = 0;
  while (filled < out.size()) {
    ssize_t n = ::getrandom(out.data() + filled, out.size() - filled, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::system_category(), "getrandom");
    }
    filled += static_cast<size_t>(n);
  }
}

std::string to_hex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 0xf];
  }
  return out;
}

std::optional<Digest> digest_from_hex(std::string_view hex) {
  Digest out{};
  if (hex.size() != out.size() * 2) return std::nullopt;
  for (size_t i = 0; i < out.size(); ++i) {
    int high = nibble(hex[2 * i]), low = nibble(hex[2 * i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    out[i] = static_cast<uint8_t>(high << 4 | low);
  }
  return out;
}

}  // namespace tunnel::crypto
