// One service at run time (docs/ARCHITECTURE.md, "Services"): its config, its listener on A, the
// sessions serving it (round robin, skipping one that just failed), and its own counters.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "client_link.hpp"
#include "failure_reason.hpp"
#include "server_config.hpp"
#include "tunnel/event_loop.hpp"
#include "tunnel/listener.hpp"

namespace tunnel::server {

// What one client did for one service, for the metrics.
struct ServedByClient {
  uint64_t paired = 0;
  uint64_t bytes_to_client = 0;
  uint64_t bytes_to_external = 0;
};

struct ServiceCounters {
  uint64_t accepted = 0;
  std::array<uint64_t, kFailureReasons> failed{};
  // By client name. Bounded: only names allowed to serve the service get here.
  std::unordered_map<std::string, ServedByClient> by_client;
};

class Service {
 public:
  explicit Service(ServiceConfig config) : config_(std::move(config)) {}

  const std::string& name() const { return config_.name; }
  const ServiceConfig& config() const { return config_; }
  // A reload changed what applies to new connections (the listener is the server's business).
  void set_config(ServiceConfig config) { config_ = std::move(config); }
  bool allows(std::string_view client) const;

  // The sessions serving it, in the order they started to.
  void add(ClientLink& link);
  void remove(const ClientLink& link);
  bool serves(const ClientLink& link) const;
  size_t serving() const { return serving_.size(); }

  // The next session to hand a connection to, round robin, never one in `excluded` (by number). A
  // session that answered FAIL within kFailureCooldown is taken only when no other is left.
  // Null: none.
  ClientLink* pick(const std::vector<uint64_t>& excluded, Clock::time_point now);
  // `link` answered FAIL for this service: prefer the others for a while.
  void failed_on(const ClientLink& link, Clock::time_point now);

  // After a FAIL, how long a session is passed over while others can serve.
  static constexpr auto kFailureCooldown = std::chrono::seconds(5);

  ServiceCounters counters;
  std::unique_ptr<Listener> listener;
  // Its connections not yet relaying (waiting or announced), and those still sending their PROXY
  // header: --max-pending bounds each service on its own, so that a flood of one cannot shed
  // the visitors of the others.
  size_t pending = 0;
  size_t reading_header = 0;

 private:
  struct Server {
    ClientLink* link;
    Clock::time_point passed_over_until{};
  };
  ServiceConfig config_;
  std::vector<Server> serving_;
  size_t next_ = 0;
};

}  // namespace tunnel::server
