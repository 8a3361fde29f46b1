// tunnel-server: a listener on A per service, the listener on B, the gate on B (first lines,
// auth), the client sessions by name (Sessions) and the connection table (every external
// connection), all on one event loop.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "b_gate.hpp"
#include "connection_table.hpp"
#include "proxy_header_reader.hpp"
#include "server_config.hpp"
#include "server_metrics.hpp"
#include "service.hpp"
#include "sessions.hpp"
#include "tokens.hpp"
#include "tunnel/listener.hpp"
#include "tunnel/metrics_endpoint.hpp"

namespace tunnel::server {

class Server {
 public:
  // Binds every listener; throws std::runtime_error naming the option or the service when one
  // cannot be bound.
  Server(EventLoop& loop, const ServerConfig& config);
  ~Server();

  // SIGHUP: takes the services and clients of `next` (a config parsed whole). Added services
  // start listening, removed ones stop (their relays finish), changed ones change; sessions of
  // removed clients, or whose token changed, end. Returns an empty string, or why nothing was
  // changed (a listener that cannot be bound).
  std::string reload(const ServerConfig& next);

  // Stops accepting: closes the listeners, the sessions and every connection not yet relaying;
  // calls `drained` once the relays in flight have all finished.
  void drain(std::function<void()> drained);
  // Resets every relay still running.
  void abort_relays();

  // The A address of the service `default` (the seed's one-service case).
  const SocketAddress& address_a() const;
  const SocketAddress& address_b() const { return listen_b_->address(); }
  const ConnectionTable& connections() const { return table_; }
  const Sessions& sessions() const { return sessions_; }
  const ServiceMap& services() const { return services_; }

 private:
  // Binds `config`'s listener; throws naming the service.
  std::unique_ptr<Listener> bind_service(const ServiceConfig& config);
  void admit_external(const std::shared_ptr<Service>& service, Fd fd);
  // Waits for the PROXY header of a connection to a service behind a load balancer.
  void read_proxy_header(const std::shared_ptr<Service>& service, Fd fd);
  void on_proxy_header(uint64_t reader, const std::shared_ptr<Service>& service, Fd fd,
                       const ProxiedAddresses* addresses, ProxyHeaderFailure failure,
                       std::string_view detail);
  void warn_if_insecure() const;
  ServerCounters counters() const;
  ServerGauges gauges() const;

  EventLoop& loop_;
  ServerConfig config_;
  Tokens tokens_;
  ServiceMap services_;
  ConnectionTable table_;
  Sessions sessions_;
  std::unique_ptr<Listener> listen_b_;

  std::unordered_map<uint64_t, std::unique_ptr<ProxyHeaderReader>> proxy_readers_;
  uint64_t proxy_readers_started_ = 0;
  log::RateLimit proxy_log_;
  log::RateLimit shed_log_;
  bool draining_ = false;  // connections shed at max-pending before their PROXY header

  ServerCounters counters_;
  BGate gate_;
  double start_time_;
  ServerSummary summary_;
  PeriodicTimer summary_timer_;
  std::unique_ptr<MetricsEndpoint> metrics_;
};

// The tokens a config names.
Tokens tokens_of(const ServerConfig& config);

}  // namespace tunnel::server
