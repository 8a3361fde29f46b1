// tunnel-server: the listeners on A and B, the gate on B (first lines, auth), the session arbiter
// (who is the client) and the connection table (every external connection), all on one event loop.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>

#include "b_gate.hpp"
#include "connection_table.hpp"
#include "server_config.hpp"
#include "server_metrics.hpp"
#include "session_arbiter.hpp"
#include "tunnel/listener.hpp"
#include "tunnel/metrics_endpoint.hpp"

namespace tunnel::server {

class Server {
 public:
  // Binds both listeners; throws std::runtime_error naming the option when one cannot be bound.
  Server(EventLoop& loop, const ServerConfig& config);
  ~Server();

  // Stops accepting: closes the listeners, the client's session and every connection not yet
  // relaying; calls `drained` once the relays in flight have all finished.
  void drain(std::function<void()> drained);
  // Resets every relay still running.
  void abort_relays();

  const SocketAddress& address_a() const { return listen_a_->address(); }
  const SocketAddress& address_b() const { return listen_b_->address(); }
  const ConnectionTable& connections() const { return table_; }
  const SessionArbiter& arbiter() const { return arbiter_; }

 private:
  ServerCounters counters() const;
  ServerGauges gauges() const;

  EventLoop& loop_;
  ServerConfig config_;
  SessionArbiter arbiter_;
  ConnectionTable table_;
  std::unique_ptr<Listener> listen_a_;
  std::unique_ptr<Listener> listen_b_;

  ServerCounters counters_;
  BGate gate_;
  double start_time_;
  ServerSummary summary_;
  PeriodicTimer summary_timer_;
  std::unique_ptr<MetricsEndpoint> metrics_;
};

}  // namespace tunnel::server
