// Why a connection attempt ended without a relay: A connections that were never paired, and B
// connections refused at their first line. The words appear in logs and metrics as reason=...
#pragma once

#include <cstddef>
#include <string_view>

namespace tunnel::server {

enum class FailureReason {
  no_client,           // no client came online within the pair timeout
  pair_timeout,        // the client was told but no DATA came in time
  target_unreachable,  // the client reported FAIL (target refused, timed out, ...)
  max_pending,         // too many A connections waiting already
  closed_early,        // the external side reset before pairing
  bad_handshake,       // B: malformed first line, wrong version, oversize, reset mid-line
  handshake_timeout,   // B: no first line in time
  unknown_id,          // B: DATA for an id that is not pending (unknown, used, expired)
};
inline constexpr size_t kFailureReasons = 8;

constexpr std::string_view to_string(FailureReason reason) {
  constexpr std::string_view kWords[kFailureReasons] = {
      "no-client",    "pair-timeout",  "target-unreachable", "max-pending",
      "closed-early", "bad-handshake", "handshake-timeout",  "unknown-id"};
  return kWords[static_cast<size_t>(reason)];
}

}  // namespace tunnel::server
