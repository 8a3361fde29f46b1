// What the client counts, how it is exposed at /metrics, and the once-a-minute summary line.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "fail_reason.hpp"
#include "tunnel/tls_stream.hpp"

namespace tunnel::client {

struct ClientCounters {
  uint64_t requested = 0;                       // NEW <id> received
  uint64_t relayed = 0;                         // connections that reached the relay
  uint64_t pooled = 0;                          // of those requested, handed on a pooled one
  std::array<uint64_t, kFailReasons> failed{};  // by FailReason; every one exposed, 0 until seen
  uint64_t bytes_to_target = 0;                 // of relays that have finished
  uint64_t bytes_from_target = 0;
};

struct ClientGauges {
  bool online = false;
  uint64_t reconnects = 0;
  size_t active = 0;
  uint64_t live_bytes_to_target = 0;  // of relays still running
  uint64_t live_bytes_from_target = 0;
  double start_time_seconds = 0;
  bool tls_on = false;
  size_t pool_parked = 0;               // pooled data connections idle, waiting for a visitor
  size_t pool_opening = 0;              // pooled data connections being opened
  tls::HandshakeCounts tls_handshakes;  // control and data connections, full or resumed
};

std::string render_metrics(const ClientCounters& counters, const ClientGauges& gauges);

// Logs one event=summary line with what changed since the previous call, if there was traffic.
class ClientSummary {
 public:
  void log(const ClientCounters& counters, const ClientGauges& gauges);

 private:
  ClientCounters base_;
  uint64_t base_to_target_ = 0;
  uint64_t base_from_target_ = 0;
};

}  // namespace tunnel::client
