// ServiceCatalog: which of the client's services a NEW is for (docs/PROTOCOL.md, "Services"): the
// one it names, or without a name the service called default, else the only one, else none.
#include "service_catalog.hpp"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

using tunnel::client::ServiceCatalog;

namespace {

// Targets do not matter here: nothing is dialed.
std::vector<tunnel::client::ResolvedService> named(std::vector<std::string> names) {
  std::vector<tunnel::client::ResolvedService> services;
  for (auto& name : names) services.push_back({std::move(name), {}});
  return services;
}

}  // namespace

TEST_CASE("a NEW naming a service is for that one; a name the client lacks is for none",
          "[services]") {
  ServiceCatalog catalog(named({"web", "ssh", "default"}));
  CHECK(catalog.for_new("web") == 0u);
  CHECK(catalog.for_new("ssh") == 1u);
  CHECK(catalog.for_new("default") == 2u);
  CHECK_FALSE(catalog.for_new("mail").has_value());
  CHECK_FALSE(catalog.for_new("Web").has_value());  // names are case-sensitive
  CHECK(catalog.name(1) == "ssh");
}

TEST_CASE("a NEW without a name is for default, else the only service, else none", "[services]") {
  CHECK(ServiceCatalog(named({"web", "default"})).for_new("") == 1u);
  CHECK(ServiceCatalog(named({"default"})).for_new("") == 0u);
  CHECK(ServiceCatalog(named({"web"})).for_new("") == 0u);
  CHECK_FALSE(ServiceCatalog(named({"web", "ssh"})).for_new("").has_value());
  CHECK_FALSE(ServiceCatalog(named({"web", "ssh"})).implied().has_value());
}

TEST_CASE("lookups hold for as many services as a client may have", "[services]") {
  std::vector<std::string> names;
  for (int i = 0; i < 2048; ++i) names.push_back("svc-" + std::to_string(i));
  ServiceCatalog catalog(named(names));
  REQUIRE(catalog.size() == 2048);
  for (size_t i = 0; i < names.size(); ++i) REQUIRE(catalog.for_new(names[i]) == i);
  CHECK_FALSE(catalog.for_new("").has_value());
}
