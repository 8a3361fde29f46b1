// Why a connection attempt ended without a relay: A connections that were never paired, and B
// connections refused at their first line. The words appear in logs and metrics as reason=...
#pragma once

#include <cstddef>
#include <string_view>

namespace tunnel::server {

enum class FailureReason {
  no_client,                 // no client came online within the pair timeout
  pair_timeout,              // the client was told but no DATA came in time
  target_unreachable,        // the client reported FAIL (target refused, timed out, ...)
  max_pending,               // too many A connections waiting already
  closed_early,              // the external side reset before pairing
  bad_handshake,             // B: malformed first line, wrong version, oversize, reset mid-line
  handshake_timeout,         // B: no first line in time
  unknown_id,                // B: DATA for an id that is not pending (unknown, used, expired)
  auth_refused,              // B: no proof, or a wrong one, while the server requires auth
  tls_refused,               // B: the TLS handshake failed (plain text, bad certificate, ...)
  service_removed,           // a reload removed the service the connection came for
  bad_proxy_header,          // A: the service expects a PROXY header; it was missing or malformed
  last_ = bad_proxy_header,  // keep last: sizes the counters
};
inline constexpr size_t kFailureReasons = static_cast<size_t>(FailureReason::last_) + 1;

// A switch without default: a new reason that is not named here fails to compile (-Wswitch).
constexpr std::string_view to_string(FailureReason reason) {
  switch (reason) {
    case FailureReason::no_client:
      return "no-client";
    case FailureReason::pair_timeout:
      return "pair-timeout";
    case FailureReason::target_unreachable:
      return "target-unreachable";
    case FailureReason::max_pending:
      return "max-pending";
    case FailureReason::closed_early:
      return "closed-early";
    case FailureReason::bad_handshake:
      return "bad-handshake";
    case FailureReason::handshake_timeout:
      return "handshake-timeout";
    case FailureReason::unknown_id:
      return "unknown-id";
    case FailureReason::auth_refused:
      return "auth-refused";
    case FailureReason::tls_refused:
      return "tls-refused";
    case FailureReason::service_removed:
      return "service-removed";
    case FailureReason::bad_proxy_header:
      return "bad-proxy-header";
  }
  return "?";
}

}  // namespace tunnel::server
