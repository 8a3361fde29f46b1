// Checks of the client's service list: names, targets, duplicates, how many.
#include "service_config.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "tunnel/protocol.hpp"

namespace tunnel::client {

ClientService parse_service_flag(std::string_view text) {
  auto eq = text.find('=');
  if (eq == std::string_view::npos) throw std::invalid_argument("expected NAME=HOST:PORT");
  std::string_view name = text.substr(0, eq);
  if (!protocol::is_service_name(name))
    throw std::invalid_argument(fmt::format(
        "'{}' is not a service name: 1 to 64 of letters, digits, '.', '_' and '-'", name));
  return {std::string(name), parse_host_port(text.substr(eq + 1), false),
          fmt::format("--service {}", name)};
}

std::vector<ClientService> services_from_tables(const config::Tables& tables) {
  std::vector<ClientService> services;
  for (const config::Table* table : tables.of_kind("service")) {
    config::TableReader reader(*table);
    if (!protocol::is_service_name(table->name))
      reader.fail_table("not a service name: 1 to 64 of letters, digits, '.', '_' and '-'");
    std::string target = reader.required_string("target");
    reader.finish();
    ClientService service{table->name,
                          {},
                          fmt::format("--config {}:{}: {} target", table->file,
                                      reader.line_of("target"), table->header())};
    try {
      service.target = parse_host_port(target, false);
    } catch (const std::exception& e) {
      reader.fail_key("target", e.what());  // the reason quotes the value
    }
    services.push_back(std::move(service));
  }
  return services;
}

void check_services(const std::vector<ClientService>& services) {
  if (services.empty())
    throw ServiceConfigError(
        "--target is required (or --service NAME=HOST:PORT, or a [service.NAME] table in the "
        "--config file)");
  if (services.size() > protocol::kMaxServices)
    throw ServiceConfigError(fmt::format("{}: {} services, at most {} are allowed",
                                         services[protocol::kMaxServices].origin, services.size(),
                                         protocol::kMaxServices));
  // Sorted by name, stable: a duplicate follows the one it repeats.
  std::vector<const ClientService*> by_name;
  by_name.reserve(services.size());
  for (const auto& service : services) by_name.push_back(&service);
  std::stable_sort(by_name.begin(), by_name.end(),
                   [](const auto* a, const auto* b) { return a->name < b->name; });
  auto twice = std::adjacent_find(by_name.begin(), by_name.end(),
                                  [](const auto* a, const auto* b) { return a->name == b->name; });
  if (twice != by_name.end())
    throw ServiceConfigError(fmt::format("{}: the service '{}' is already set by {}",
                                         (*std::next(twice))->origin, (*twice)->name,
                                         (*twice)->origin));
}

}  // namespace tunnel::client
