// Server metrics in Prometheus text format.
#include "server_metrics.hpp"

#include <map>
#include <numeric>

#include "tunnel/log.hpp"
#include "tunnel/metrics_text.hpp"

namespace tunnel::server {

uint64_t ServerCounters::failed_total() const {
  return std::accumulate(failed.begin(), failed.end(), uint64_t{0});
}

namespace {

// Per client name: 1 while it holds a session. Every named client is listed (0 or 1), and so is
// `default` when there are none (the one-client case); other names while they are online.
void render_clients(MetricsText& m, const Sessions& sessions,
                    const std::vector<NamedClient>& clients) {
  std::map<std::string, uint64_t> online;  // sorted: a stable exposition
  for (const auto& client : clients) online[client.name] = 0;
  if (clients.empty()) online[std::string(auth::kDefaultName)] = 0;
  sessions.for_each_online([&](const std::string& name) { online[name] = 1; });
  m.family("tunnel_client_online", "gauge", "1 while the named tunnel-client holds a session.");
  for (const auto& [name, value] : online)
    m.sample("tunnel_client_online", value, {{"client", name}});
}

void render_services(MetricsText& m, const ServiceMap& services) {
  std::map<std::string, const Service*> sorted;
  for (const auto& [name, service] : services) sorted.emplace(name, service.get());
  if (sorted.empty()) return;
  m.family("tunnel_service_clients_serving", "gauge", "Sessions serving the service now.");
  for (const auto& [name, s] : sorted)
    m.sample("tunnel_service_clients_serving", uint64_t{s->serving()}, {{"service", name}});
  m.family("tunnel_service_connections_accepted_total", "counter",
           "Connections accepted on the service's A listener.");
  for (const auto& [name, s] : sorted)
    m.sample("tunnel_service_connections_accepted_total", s->counters.accepted,
             {{"service", name}});
  // A family is written only with samples: an exposition parser may take an empty one for a bug.
  bool any_failed = false, any_served = false;
  for (const auto& [name, s] : sorted) {
    for (uint64_t failed : s->counters.failed) any_failed = any_failed || failed > 0;
    any_served = any_served || !s->counters.by_client.empty();
  }
  if (any_failed)
    m.family("tunnel_service_connections_failed_total", "counter",
             "The service's connections that ended without a relay, by reason (reasons seen).");
  for (const auto& [name, s] : sorted)
    for (size_t i = 0; i < kFailureReasons; ++i)
      if (s->counters.failed[i] > 0)
        m.sample("tunnel_service_connections_failed_total", s->counters.failed[i],
                 {{"service", name}, {"reason", to_string(static_cast<FailureReason>(i))}});
  if (!any_served) return;
  m.family("tunnel_service_connections_paired_total", "counter",
           "The service's connections paired with a data connection, by the client serving it.");
  for (const auto& [name, s] : sorted)
    for (const auto& [client, served] : s->counters.by_client)
      m.sample("tunnel_service_connections_paired_total", served.paired,
               {{"service", name}, {"client", client}});
  m.family("tunnel_service_relayed_bytes_total", "counter",
           "Bytes of the service's finished relays, by client and direction.");
  for (const auto& [name, s] : sorted)
    for (const auto& [client, served] : s->counters.by_client) {
      m.sample("tunnel_service_relayed_bytes_total", served.bytes_to_client,
               {{"service", name}, {"client", client}, {"direction", "to_client"}});
      m.sample("tunnel_service_relayed_bytes_total", served.bytes_to_external,
               {{"service", name}, {"client", client}, {"direction", "to_external"}});
    }
}

}  // namespace

std::string render_metrics(const ServerCounters& c, const ServerGauges& g,
                           const ServiceMap& services, const Sessions& sessions,
                           const std::vector<NamedClient>& clients) {
  MetricsText m;
  m.family("tunnel_clients_online", "gauge", "Clients holding a session now.");
  m.sample("tunnel_clients_online", uint64_t{g.clients_online});
  render_clients(m, sessions, clients);
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
  m.family("tunnel_pool_connections_parked", "gauge",
           "Pooled data connections from the clients, idle and waiting for a visitor.");
  m.sample("tunnel_pool_connections_parked", uint64_t{g.pool_parked});
  m.family("tunnel_pool_handoffs_total", "counter",
           "Visitors handed to a pooled data connection, by outcome: ready (relayed), dead (no "
           "answer in time: announced again), target_failed, visitor_gone.");
  constexpr const char* kOutcomes[] = {"ready", "target_failed", "dead", "visitor_gone"};
  for (size_t i = 0; i < g.pool_handoffs.size(); ++i)
    m.sample("tunnel_pool_handoffs_total", g.pool_handoffs[i], {{"outcome", kOutcomes[i]}});
  m.family("tunnel_pool_connections_lost_total", "counter",
           "Pooled data connections that closed, never came or were dropped before any use.");
  m.sample("tunnel_pool_connections_lost_total", g.pool_lost);
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
  render_services(m, services);
  return m.text();
}

void ServerSummary::log(const ServerCounters& c, const ServerGauges& g) {
  uint64_t to_client = c.bytes_to_client + g.live_bytes_to_client;
  uint64_t to_external = c.bytes_to_external + g.live_bytes_to_external;
  if (c.accepted != base_.accepted || c.failed_total() != base_.failed_total() || g.active > 0)
    TLOG_INFO(
        "event=summary period=1m accepted={} paired={} failed={} active={} pending={} "
        "clients_online={} bytes_to_client={} bytes_to_external={}",
        c.accepted - base_.accepted, c.paired - base_.paired,
        c.failed_total() - base_.failed_total(), g.active, g.pending, g.clients_online,
        to_client - base_to_client_, to_external - base_to_external_);
  base_ = c;
  base_to_client_ = to_client;
  base_to_external_ = to_external;
}

}  // namespace tunnel::server
