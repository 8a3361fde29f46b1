// The cryptographic primitives of the auth extension (docs/PROTOCOL.md), from OpenSSL 3:
// HMAC-SHA256, constant-time comparison, random bytes, hex. Nothing else in the code calls OpenSSL.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace tunnel::crypto {

using Digest = std::array<uint8_t, 32>;

// HMAC-SHA256 (RFC 2104) of `message` under `key`.
Digest hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> message);
Digest hmac_sha256(std::string_view key, std::string_view message);

// Whether two byte strings are equal, in time that depends only on their length: a proof is never
// compared with == (an attacker timing the comparison would learn it byte by byte).
bool equal_constant_time(std::span<const uint8_t> a, std::span<const uint8_t> b);

// Fills `out` from the operating system's random source; throws std::system_error if it cannot.
void random_bytes(std::span<uint8_t> out);

// Lowercase hex, and back (nothing for odd lengths or non-hex characters).
std::string to_hex(std::span<const uint8_t> bytes);
std::optional<Digest> digest_from_hex(std::string_view hex);

}  // namespace tunnel::crypto
