// The auth extension's HMAC inputs, exactly as docs/PROTOCOL.md spells them.
#include "tunnel/auth.hpp"

#include <fmt/format.h>

namespace tunnel::auth {
namespace {

// One context string per message type, so that no proof can stand in for another.
constexpr std::string_view kClientProof = "tunnel/1 client-proof";
constexpr std::string_view kServerProof = "tunnel/1 server-proof";
constexpr std::string_view kSessionKey = "tunnel/1 session-key";
constexpr std::string_view kDataProof = "tunnel/1 data-proof";

std::string control_message(std::string_view context, const Transcript& t) {
  return fmt::format("{}\n{}\n{}\n{}\n{}\n", context, t.server_nonce, t.client_nonce, t.name,
                     t.binding);
}

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

}  // namespace

bool is_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  for (char c : name)
    if (!is_name_char(c)) return false;
  return true;
}

bool is_hex64(std::string_view word) {
  if (word.size() != 64) return false;
  for (char c : word)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::string new_nonce() {
  crypto::Digest nonce{};
  crypto::random_bytes(nonce);
  return crypto::to_hex(nonce);
}

crypto::Digest client_proof(std::string_view token, const Transcript& transcript) {
  return crypto::hmac_sha256(token, control_message(kClientProof, transcript));
}

crypto::Digest server_proof(std::string_view token, const Transcript& transcript) {
  return crypto::hmac_sha256(token, control_message(kServerProof, transcript));
}

SessionKey session_key(std::string_view token, const Transcript& transcript) {
  return crypto::hmac_sha256(token, control_message(kSessionKey, transcript));
}

crypto::Digest data_proof(const SessionKey& key, const ConnId& id) {
  auto message = fmt::format("{}\n{}\n", kDataProof, id.hex());
  return crypto::hmac_sha256(
      key, std::span(reinterpret_cast<const uint8_t*>(message.data()), message.size()));
}

bool proof_matches(const crypto::Digest& expected, std::string_view hex) {
  auto given = is_hex64(hex) ? crypto::digest_from_hex(hex) : std::nullopt;
  crypto::Digest compared = given.value_or(crypto::Digest{});
  bool equal = crypto::equal_constant_time(expected, compared);
  return given.has_value() && equal;
}

}  // namespace tunnel::auth
