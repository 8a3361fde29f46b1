// Lookup of the client's services by name, and which one a NEW without a name means.
#include "service_catalog.hpp"

namespace tunnel::client {

ServiceCatalog::ServiceCatalog(std::vector<ResolvedService> services)
    : services_(std::move(services)) {
  by_name_.reserve(services_.size());
  for (size_t i = 0; i < services_.size(); ++i) by_name_.emplace(services_[i].name, i);
  implied_ = find(kDefaultService);
  if (!implied_ && services_.size() == 1) implied_ = 0;
}

std::optional<size_t> ServiceCatalog::find(std::string_view name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return std::nullopt;
  return it->second;
}

std::optional<size_t> ServiceCatalog::for_new(std::string_view service) const {
  return service.empty() ? implied_ : find(service);
}

}  // namespace tunnel::client
