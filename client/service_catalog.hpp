// The services this client serves, each with its target resolved at start-up: fixed for the life
// of the process. A service is known by its index from here on (counters, links, states), so the
// per-connection work is one hash lookup by name when NEW arrives.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "service_config.hpp"
#include "tunnel/address.hpp"

namespace tunnel::client {

struct ResolvedService {
  std::string name;
  SocketAddresses target;  // every address the target's name resolved to, tried in order
};

class ServiceCatalog {
 public:
  // Names must be unique (the config refuses duplicates before this).
  explicit ServiceCatalog(std::vector<ResolvedService> services);
  // The index holds views into the names: a copy would point into the original.
  ServiceCatalog(const ServiceCatalog&) = delete;
  ServiceCatalog& operator=(const ServiceCatalog&) = delete;

  size_t size() const { return services_.size(); }
  const std::string& name(size_t index) const { return services_[index].name; }
  std::span<const SocketAddress> target(size_t index) const { return services_[index].target; }
  std::optional<size_t> find(std::string_view name) const;
  // The service a `NEW <id>` without a name is for: `default`, else the only one, else none.
  std::optional<size_t> implied() const { return implied_; }
  // The service NEW names, or the implied one when it names none.
  std::optional<size_t> for_new(std::string_view service) const;

 private:
  std::vector<ResolvedService> services_;
  std::unordered_map<std::string_view, size_t> by_name_;  // views into services_, never moved
  std::optional<size_t> implied_;
};

}  // namespace tunnel::client
