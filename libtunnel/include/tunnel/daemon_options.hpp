// Settings both daemons have: heartbeat, drain, metrics endpoint, log level.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "tunnel/address.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/heartbeat.hpp"

namespace tunnel {

// How often a daemon logs its event=summary line (when there was traffic).
inline constexpr auto kSummaryInterval = std::chrono::minutes(1);

struct DaemonOptions {
  HeartbeatSettings heartbeat;
  Duration drain_timeout = std::chrono::seconds(10);
  std::optional<HostPort> metrics_listen;  // no endpoint unless set
  std::string log_level = "info";
};

}  // namespace tunnel
