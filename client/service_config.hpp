// The services a client serves, from its three sources: --target (the service `default`),
// --service NAME=HOST:PORT (repeatable) and [service.NAME] tables in the --config file.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "tunnel/address.hpp"
#include "tunnel/config_file.hpp"

namespace tunnel::client {

// The service --target sets, and the one a NEW without a name means (docs/PROTOCOL.md, "Services").
inline constexpr std::string_view kDefaultService = "default";

struct ClientService {
  std::string name;
  HostPort target;
  std::string origin;  // where it was set, for error lines: "--target", "--service web", ...
};

// A refused set of services: what() is the whole line without the program's name.
class ServiceConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// `NAME=HOST:PORT` as --service takes it; throws std::invalid_argument with the reason.
ClientService parse_service_flag(std::string_view text);

// The [service.NAME] tables of the --config file, in file order: each needs `target = "HOST:PORT"`
// and nothing else. Throws config::Error naming the file, the line, the table and the reason.
std::vector<ClientService> services_from_tables(const config::Tables& tables);

// Refuses a list without any service (naming --target), with more than protocol::kMaxServices,
// or with a name twice (naming both origins). Throws ServiceConfigError.
void check_services(const std::vector<ClientService>& services);

}  // namespace tunnel::client
