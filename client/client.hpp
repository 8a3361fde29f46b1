// tunnel-client: the control connection (the session with the server) and the link table (every
// connection id being served), all on one event loop.
#pragma once

#include <memory>

#include "client_config.hpp"
#include "client_metrics.hpp"
#include "control_connection.hpp"
#include "link_table.hpp"
#include "tunnel/metrics_endpoint.hpp"

namespace tunnel::client {

class Client {
 public:
  Client(EventLoop& loop, const ClientConfig& config, SocketAddresses server,
         SocketAddresses target);

  void start() { control_.start(); }
  // Closes the control connection and the connections still being set up; calls `drained` once
  // the relays in flight have all finished.
  void drain(std::function<void()> drained);
  // Resets every relay still running.
  void abort_relays();

  const LinkTable& links() const { return links_; }
  const ControlConnection& control() const { return control_; }

 private:
  void on_online();
  ClientGauges gauges() const;

  EventLoop& loop_;
  ClientConfig config_;
  SocketAddresses server_;
  SocketAddresses target_;
  ControlConnection control_;
  LinkTable links_;
  bool ready_sent_ = false;

  ClientCounters counters_;
  double start_time_;
  ClientSummary summary_;
  PeriodicTimer summary_timer_;
  std::unique_ptr<MetricsEndpoint> metrics_;
};

}  // namespace tunnel::client
