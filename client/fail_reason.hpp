// Why the client could not serve a NEW <id>: the word it sends in FAIL <id> <reason>, logs and
// counts. A target failure is the connector's reason; a data-connection failure and a service we
// do not serve have their own.
#pragma once

#include <cstddef>
#include <string_view>

#include "tunnel/connector.hpp"

namespace tunnel::client {

enum class FailReason {
  connection_refused,       // the target refused
  timeout,                  // the target did not answer within --dial-timeout
  unreachable,              // no route to the target
  reset,                    // the target reset while connecting
  out_of_descriptors,       // the client ran out of descriptors
  connect_failed,           // any other connect error toward the target
  data_connect_failed,      // the data connection to port B could not be made
  unknown_service,          // NEW named a service this client does not serve
  last_ = unknown_service,  // keep last: sizes the counters
};
inline constexpr size_t kFailReasons = static_cast<size_t>(FailReason::last_) + 1;

// Switches without default: a new reason not named there fails to compile (-Wswitch).
constexpr std::string_view to_string(FailReason reason) {
  switch (reason) {
    case FailReason::connection_refused:
      return "connection-refused";
    case FailReason::timeout:
      return "timeout";
    case FailReason::unreachable:
      return "unreachable";
    case FailReason::reset:
      return "reset";
    case FailReason::out_of_descriptors:
      return "out-of-descriptors";
    case FailReason::connect_failed:
      return "connect-failed";
    case FailReason::data_connect_failed:
      return "data-connect-failed";
    case FailReason::unknown_service:
      return "unknown-service";
  }
  return "?";
}

constexpr FailReason target_failure(ConnectFailure failure) {
  switch (failure) {
    case ConnectFailure::refused:
      return FailReason::connection_refused;
    case ConnectFailure::timeout:
      return FailReason::timeout;
    case ConnectFailure::unreachable:
      return FailReason::unreachable;
    case ConnectFailure::reset:
      return FailReason::reset;
    case ConnectFailure::out_of_descriptors:
      return FailReason::out_of_descriptors;
    case ConnectFailure::other:
      return FailReason::connect_failed;
  }
  return FailReason::connect_failed;
}

}  // namespace tunnel::client
