// The `auth` extension's computations (docs/PROTOCOL.md, "Authentication"): the control proofs of
// both sides, the session key and the per-connection data proof. Pure functions over the token
// and the transcript; the messages that carry them are in protocol.hpp, the flow in the daemons.
#pragma once

#include <string>
#include <string_view>

#include "tunnel/conn_id.hpp"
#include "tunnel/crypto.hpp"

namespace tunnel::auth {

inline constexpr std::string_view kFeature = "auth";
inline constexpr std::string_view kDefaultName = "default";
inline constexpr size_t kMaxNameLength = 64;

// A client name: 1 to 64 of A-Z a-z 0-9 . _ -
bool is_name(std::string_view name);
// 64 lowercase hex digits: a nonce, a proof.
bool is_hex64(std::string_view word);

// A fresh 32-byte nonce from the OS random source, as 64 lowercase hex digits.
std::string new_nonce();

// What both control proofs and the session key cover. Every field is printable ASCII without `\n`,
// so joining them with `\n` is unambiguous.
struct Transcript {
  std::string server_nonce;  // hex, from AUTH-CHALLENGE
  std::string client_nonce;  // hex, from AUTH-PROOF
  std::string name;          // the client's name
  std::string binding;       // hex of the TLS exporter (RFC 9266); empty without TLS
};

using SessionKey = crypto::Digest;

crypto::Digest client_proof(std::string_view token, const Transcript& transcript);
crypto::Digest server_proof(std::string_view token, const Transcript& transcript);
SessionKey session_key(std::string_view token, const Transcript& transcript);
// Proves that a data connection comes from the session holding `key` and is meant for `id`.
crypto::Digest data_proof(const SessionKey& key, const ConnId& id);

// Whether `hex` is exactly the proof `expected`, compared in constant time. Text that is not 64
// hex digits is compared against a digest of zeroes, so a malformed proof costs the same work.
bool proof_matches(const crypto::Digest& expected, std::string_view hex);

}  // namespace tunnel::auth
