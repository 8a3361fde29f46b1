// What the server counts, how it is exposed at /metrics, and the once-a-minute summary line.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "failure_reason.hpp"
#include "server_config.hpp"
#include "sessions.hpp"
#include "tunnel/tls_failure.hpp"
#include "tunnel/tls_stream.hpp"

namespace tunnel::server {

struct ServerCounters {
  uint64_t accepted = 0;  // A connections accepted
  uint64_t paired = 0;    // A connections given a data connection
  std::array<uint64_t, kFailureReasons> failed{};
  uint64_t sessions = 0;               // control connections that became the client's session
  uint64_t control_refused = 0;        // control connections answered ERR busy
  uint64_t bytes_to_client = 0;        // A -> B, of relays that have finished
  uint64_t bytes_to_external = 0;      // B -> A, of relays that have finished
  uint64_t auth_failures_control = 0;  // control connections refused ERR auth
  uint64_t auth_failures_data = 0;     // data connections refused ERR auth
  std::array<uint64_t, tls::kAllFailures.size()> tls_failures{};  // TLS handshakes that failed
  tls::HandshakeCounts tls_handshakes;  // that succeeded (read from the context at scrape time)
  bool tls_on = false;
  uint64_t failed_total() const;
};

// Values read at scrape time.
struct ServerGauges {
  size_t clients_online = 0;
  size_t active = 0;
  size_t pending = 0;
  uint64_t live_bytes_to_client = 0;  // of relays still running
  uint64_t live_bytes_to_external = 0;
  double start_time_seconds = 0;
  size_t pool_parked = 0;  // pooled data connections idle, all sessions
  // Handoffs to pooled connections by outcome (HandoffOutcome order), and PARK ids or parked
  // connections lost before use.
  std::array<uint64_t, 4> pool_handoffs{};
  uint64_t pool_lost = 0;
};

// The whole exposition: the server's totals, then per service and per client.
std::string render_metrics(const ServerCounters& counters, const ServerGauges& gauges,
                           const ServiceMap& services, const Sessions& sessions,
                           const std::vector<NamedClient>& clients);

// Logs one event=summary line with what changed since the previous call, if there was traffic.
class ServerSummary {
 public:
  void log(const ServerCounters& counters, const ServerGauges& gauges);

 private:
  ServerCounters base_;
  uint64_t base_to_client_ = 0;
  uint64_t base_to_external_ = 0;
};

}  // namespace tunnel::server
