// Client metrics in Prometheus text format.
#include "client_metrics.hpp"

#include <numeric>

#include "tunnel/log.hpp"
#include "tunnel/metrics_text.hpp"

namespace tunnel::client {

std::string render_metrics(const ClientCounters& c, const ClientGauges& g) {
  MetricsText m;
  m.family("tunnel_control_online", "gauge", "1 while the control connection is registered.");
  m.sample("tunnel_control_online", uint64_t{g.online});
  m.family("tunnel_control_reconnects_total", "counter",
           "Attempts to reach the server after a failure or a lost control connection.");
  m.sample("tunnel_control_reconnects_total", g.reconnects);
  m.family("tunnel_connections_active", "gauge", "Connections being relayed now.");
  m.sample("tunnel_connections_active", uint64_t{g.active});
  m.family("tunnel_connections_requested_total", "counter", "NEW requests from the server.");
  m.sample("tunnel_connections_requested_total", c.requested);
  m.family("tunnel_connections_relayed_total", "counter",
           "Connections that reached the target and were relayed.");
  m.sample("tunnel_connections_relayed_total", c.relayed);
  m.family("tunnel_connections_failed_total", "counter",
           "Connections reported to the server with FAIL, by reason.");
  for (size_t i = 0; i < kFailReasons; ++i)
    m.sample("tunnel_connections_failed_total", c.failed[i],
             {{"reason", to_string(static_cast<FailReason>(i))}});
  m.family("tunnel_relayed_bytes_total", "counter", "Bytes relayed, by direction.");
  m.sample("tunnel_relayed_bytes_total", c.bytes_to_target + g.live_bytes_to_target,
           {{"direction", "to_target"}});
  m.sample("tunnel_relayed_bytes_total", c.bytes_from_target + g.live_bytes_from_target,
           {{"direction", "from_target"}});
  if (g.tls_on) {
    m.family("tunnel_tls_handshakes_total", "counter",
             "TLS handshakes completed with the server: full, or resumed from a session ticket.");
    m.sample("tunnel_tls_handshakes_total", g.tls_handshakes.full, {{"kind", "full"}});
    m.sample("tunnel_tls_handshakes_total", g.tls_handshakes.resumed, {{"kind", "resumed"}});
  }
  m.family("tunnel_pool_connections", "gauge",
           "Pooled data connections to the server, by state: idle (parked) or being opened.");
  m.sample("tunnel_pool_connections", g.pool_parked, {{"state", "parked"}});
  m.sample("tunnel_pool_connections", g.pool_opening, {{"state", "opening"}});
  m.family("tunnel_pool_handoffs_total", "counter",
           "Connections the server handed to a pooled data connection (no dial needed).");
  m.sample("tunnel_pool_handoffs_total", c.pooled);
  m.family("process_start_time_seconds", "gauge", "Start time of the process, in Unix seconds.");
  m.sample("process_start_time_seconds", g.start_time_seconds);
  return m.text();
}

void ClientSummary::log(const ClientCounters& c, const ClientGauges& g) {
  auto failed = [](const ClientCounters& counters) {
    return std::accumulate(counters.failed.begin(), counters.failed.end(), uint64_t{0});
  };
  uint64_t to_target = c.bytes_to_target + g.live_bytes_to_target;
  uint64_t from_target = c.bytes_from_target + g.live_bytes_from_target;
  if (c.requested != base_.requested || g.active > 0)
    TLOG_INFO(
        "event=summary period=1m requested={} relayed={} failed={} active={} online={} "
        "bytes_to_target={} bytes_from_target={}",
        c.requested - base_.requested, c.relayed - base_.relayed, failed(c) - failed(base_),
        g.active, g.online ? 1 : 0, to_target - base_to_target_, from_target - base_from_target_);
  base_ = c;
  base_to_target_ = to_target;
  base_from_target_ = from_target;
}

}  // namespace tunnel::client
