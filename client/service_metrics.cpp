// Per-service client metrics in Prometheus text format. Reasons that never happened are exposed
// at 0 like the totals' are, so that rate() works from the first scrape.
#include "service_metrics.hpp"

#include "tunnel/metrics_text.hpp"

namespace tunnel::client {

std::string render_service_metrics(const ServiceCatalog& catalog,
                                   const std::vector<ServiceCounters>& counters,
                                   const ServiceRegistration& registration,
                                   const LinkTable& links) {
  MetricsText m;
  // One family at a time, every service in it (the text format wants a family's samples together).
  auto each = [&](std::string_view name, std::string_view type, std::string_view help,
                  auto&& per_service) {
    m.family(name, type, help);
    for (size_t i = 0; i < catalog.size(); ++i) per_service(name, catalog.name(i), i);
  };
  each("tunnel_client_service_serving", "gauge",
       "1 while the server serves this service through this client (SERVING).",
       [&](auto name, const std::string& service, size_t i) {
         m.sample(name, uint64_t{registration.state(i) == ServiceState::serving},
                  {{"service", service}});
       });
  each("tunnel_service_connections_active", "gauge", "Connections of this service relayed now.",
       [&](auto name, const std::string& service, size_t i) {
         m.sample(name, uint64_t{links.relaying(i)}, {{"service", service}});
       });
  each("tunnel_service_connections_requested_total", "counter",
       "NEW requests from the server for this service.",
       [&](auto name, const std::string& service, size_t i) {
         m.sample(name, counters[i].requested, {{"service", service}});
       });
  each("tunnel_service_connections_relayed_total", "counter",
       "Connections of this service that reached the target and were relayed.",
       [&](auto name, const std::string& service, size_t i) {
         m.sample(name, counters[i].relayed, {{"service", service}});
       });
  each("tunnel_service_connections_failed_total", "counter",
       "Connections of this service reported to the server with FAIL, by reason.",
       [&](auto name, const std::string& service, size_t i) {
         for (size_t r = 0; r < kFailReasons; ++r) {
           auto reason = static_cast<FailReason>(r);
           // A NEW for a service we do not have is no service's: only in the total.
           if (reason == FailReason::unknown_service) continue;
           m.sample(name, counters[i].failed[r],
                    {{"service", service}, {"reason", to_string(reason)}});
         }
       });
  each("tunnel_service_relayed_bytes_total", "counter",
       "Bytes relayed for this service by connections that have ended, by direction.",
       [&](auto name, const std::string& service, size_t i) {
         m.sample(name, counters[i].bytes_to_target,
                  {{"service", service}, {"direction", "to_target"}});
         m.sample(name, counters[i].bytes_from_target,
                  {{"service", service}, {"direction", "from_target"}});
       });
  return m.text();
}

}  // namespace tunnel::client
