// What the client counts per service, and its families at /metrics (each sample labelled
// service="..."). The unlabelled families of client_metrics.hpp stay the totals over all services.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "control_connection.hpp"
#include "fail_reason.hpp"
#include "link_table.hpp"
#include "service_catalog.hpp"

namespace tunnel::client {

struct ServiceCounters {
  uint64_t requested = 0;                       // NEW <id> for this service
  uint64_t relayed = 0;                         // connections that reached the relay
  std::array<uint64_t, kFailReasons> failed{};  // by FailReason, every one exposed
  uint64_t bytes_to_target = 0;                 // of relays that have ended
  uint64_t bytes_from_target = 0;
};

// `counters` has one entry per service of `catalog`, in its order.
std::string render_service_metrics(const ServiceCatalog& catalog,
                                   const std::vector<ServiceCounters>& counters,
                                   const ServiceRegistration& registration, const LinkTable& links);

}  // namespace tunnel::client
