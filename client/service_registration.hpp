// The services extension on one control session (docs/PROTOCOL.md, "Services"): which SERVE lines
// follow the server's OK, and what the server answered for each service since (SERVING, REFUSED,
// also unprompted after a reload of its config). Logs every change of a service's state.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "service_catalog.hpp"

namespace tunnel::client {

enum class ServiceState {
  offline,      // no session
  announced,    // SERVE sent, no answer yet
  serving,      // SERVING: the server sends NEW for it
  refused,      // REFUSED, with the server's reason
  unsupported,  // the server does not speak the extension and a NEW without a name means another
};
std::string_view to_string(ServiceState state);

class ServiceRegistration {
 public:
  // `catalog` must outlive this object.
  explicit ServiceRegistration(const ServiceCatalog& catalog);

  // The server's OK with its features: returns the SERVE lines to send (empty when the server does
  // not list `services`: then only the implied service is served, with one warning if that leaves
  // any of ours out). `server` names the server in the log lines.
  std::string on_ok(const std::vector<std::string>& features, std::string_view server);
  void on_serving(std::string_view service);
  void on_refused(std::string_view service, std::string_view reason);
  // The session ended: every service is offline until the next OK.
  void on_lost();

  ServiceState state(size_t index) const { return entries_[index].state; }
  const std::string& refused_reason(size_t index) const { return entries_[index].reason; }
  size_t count(ServiceState state) const;

 private:
  struct Entry {
    ServiceState state = ServiceState::offline;
    std::string reason;  // of the last REFUSED
  };
  // A line about a service we never announced: logged at debug, nothing else changes.
  std::optional<size_t> ours(std::string_view verb, std::string_view service) const;

  const ServiceCatalog& catalog_;
  std::vector<Entry> entries_;
  bool negotiated_ = false;  // this session's OK listed `services`: every service was announced
};

}  // namespace tunnel::client
