// SERVE after OK, then SERVING/REFUSED per service, each change logged once.
#include "service_registration.hpp"

#include <algorithm>

#include "tunnel/log.hpp"
#include "tunnel/protocol.hpp"

namespace tunnel::client {

std::string_view to_string(ServiceState state) {
  switch (state) {
    case ServiceState::offline:
      return "offline";
    case ServiceState::announced:
      return "announced";
    case ServiceState::serving:
      return "serving";
    case ServiceState::refused:
      return "refused";
    case ServiceState::unsupported:
      return "unsupported";
  }
  return "?";
}

ServiceRegistration::ServiceRegistration(const ServiceCatalog& catalog)
    : catalog_(catalog), entries_(catalog.size()) {}

std::string ServiceRegistration::on_ok(const std::vector<std::string>& features,
                                       std::string_view server) {
  negotiated_ =
      std::find(features.begin(), features.end(), protocol::kServicesFeature) != features.end();
  if (negotiated_) {
    std::string lines;
    for (size_t i = 0; i < entries_.size(); ++i) {
      entries_[i] = {ServiceState::announced, {}};
      lines += protocol::serve(catalog_.name(i));
    }
    return lines;
  }
  // An older server: every NEW it sends is for the implied service, whatever we asked.
  auto implied = catalog_.implied();
  for (size_t i = 0; i < entries_.size(); ++i)
    entries_[i] = {i == implied ? ServiceState::serving : ServiceState::unsupported, {}};
  if (entries_.size() > 1 || !implied)
    TLOG_WARN(
        "event=services-unsupported server={} services={} served={} detail=\"the server does not "
        "speak the services extension: only the service named default (or the only one) is "
        "served; upgrade the server to serve the others\"",
        server, entries_.size(), implied ? catalog_.name(*implied) : "none");
  return {};
}

std::optional<size_t> ServiceRegistration::ours(std::string_view verb,
                                                std::string_view service) const {
  auto index = negotiated_ ? catalog_.find(service) : std::nullopt;
  if (!index)
    TLOG_DEBUG("event=service-ignored verb={} service={} detail=\"not announced by this client\"",
               verb, service);
  return index;
}

void ServiceRegistration::on_serving(std::string_view service) {
  auto index = ours("SERVING", service);
  if (!index) return;
  Entry& entry = entries_[*index];
  if (entry.state == ServiceState::serving) return;
  entry = {ServiceState::serving, {}};
  TLOG_INFO("event=service-serving service={}", service);
}

void ServiceRegistration::on_refused(std::string_view service, std::string_view reason) {
  auto index = ours("REFUSED", service);
  if (!index) return;
  Entry& entry = entries_[*index];
  if (entry.state == ServiceState::refused && entry.reason == reason) return;
  entry = {ServiceState::refused, std::string(reason)};
  TLOG_WARN("event=service-refused service={} reason={}", service, reason);
}

void ServiceRegistration::on_lost() {
  negotiated_ = false;
  for (auto& entry : entries_) entry = {};
}

size_t ServiceRegistration::count(ServiceState state) const {
  return static_cast<size_t>(std::count_if(entries_.begin(), entries_.end(),
                                           [state](const Entry& e) { return e.state == state; }));
}

}  // namespace tunnel::client
