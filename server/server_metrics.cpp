// Server metrics in Prometheus text format.
#include "server_metrics.hpp"

#include <numeric>

#include "tunnel/log.hpp"
#include "tunnel/metrics_text.hpp"

namespace tunnel::server {

uint64_t ServerCounters::failed_total() const {
  return std::accumulate(failed.begin(), failed.end(), uint64_t{0});
}

std::string render_metrics(const ServerCounters& c, const ServerGauges& g) {
  MetricsText m;
  m.family("tunnel_client_online", "gauge", "1 while a tunnel-client holds the control session.");
  m.sample("tunnel_client_online", uint64_t{g.client_online});
  m.family("tunnel_control_sessions_total", "counter",
           "Control connections that became the client's session (first and reconnects).");
  m.sample("tunnel_control_sessions_total", c.sessions);
  m.family("tunnel_control_refused_total", "counter",
           "Control connections refused with ERR busy because a live session exists.");
  m.sample("tunnel_control_refused_total", c.control_refused);
  m.family("tunnel_connections_active", "gauge", "Connections being relayed now.");
  m.sample("tunnel_connections_active", uint64_t{g.active});
  m.family("tunnel_connections_pending", "gauge", "A connections waiting to be paired.");
  m.sample("tunnel_connections_pending", uint64_t{g.pending});
  m.family("tunnel_connections_accepted_total", "counter", "Connections accepted on port A.");
  m.sample("tunnel_connections_accepted_total", c.accepted);
  m.family("tunnel_connections_paired_total", "counter",
           "A connections paired with a data connection from the client.");
  m.sample("tunnel_connections_paired_total", c.paired);
  m.family("tunnel_connections_failed_total", "counter",
           "Connections that ended without a relay, by reason (A unpaired, B refused).");
  for (size_t i = 0; i < kFailureReasons; ++i)
    m.sample("tunnel_connections_failed_total", c.failed[i],
             {{"reason", to_string(static_cast<FailureReason>(i))}});
  m.family("tunnel_auth_failures_total", "counter",
           "B connections refused with ERR auth (no proof, or a wrong one), by stage.");
  m.sample("tunnel_auth_failures_total", c.auth_failures_control, {{"stage", "control"}});
  m.sample("tunnel_auth_failures_total", c.auth_failures_data, {{"stage", "data"}});
  if (c.tls_on) {
    m.family("tunnel_tls_handshakes_total", "counter",
             "TLS handshakes completed on port B: full, or resumed from a session ticket.");
    m.sample("tunnel_tls_handshakes_total", c.tls_handshakes.full, {{"kind", "full"}});
    m.sample("tunnel_tls_handshakes_total", c.tls_handshakes.resumed, {{"kind", "resumed"}});
    m.family("tunnel_tls_failures_total", "counter",
             "TLS handshakes on port B that failed, by reason.");
    for (auto failure : tls::kAllFailures)
      m.sample("tunnel_tls_failures_total", c.tls_failures[static_cast<size_t>(failure)],
               {{"reason", tls::to_string(failure)}});
  }
  m.family("tunnel_relayed_bytes_total", "counter", "Bytes relayed, by direction.");
  m.sample("tunnel_relayed_bytes_total", c.bytes_to_client + g.live_bytes_to_client,
           {{"direction", "to_client"}});
  m.sample("tunnel_relayed_bytes_total", c.bytes_to_external + g.live_bytes_to_external,
           {{"direction", "to_external"}});
  m.family("process_start_time_seconds", "gauge", "Start time of the process, in Unix seconds.");
  m.sample("process_start_time_seconds", g.start_time_seconds);
  return m.text();
}

void ServerSummary::log(const ServerCounters& c, const ServerGauges& g) {
  uint64_t to_client = c.bytes_to_client + g.live_bytes_to_client;
  uint64_t to_external = c.bytes_to_external + g.live_bytes_to_external;
  if (c.accepted != base_.accepted || c.failed_total() != base_.failed_total() || g.active > 0)
    TLOG_INFO(
        "event=summary period=1m accepted={} paired={} failed={} active={} pending={} "
        "client_online={} bytes_to_client={} bytes_to_external={}",
        c.accepted - base_.accepted, c.paired - base_.paired,
        c.failed_total() - base_.failed_total(), g.active, g.pending, g.client_online ? 1 : 0,
        to_client - base_to_client_, to_external - base_to_external_);
  base_ = c;
  base_to_client_ = to_client;
  base_to_external_ = to_external;
}

}  // namespace tunnel::server
