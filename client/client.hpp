// tunnel-client: the control connection (the session with the server) and the link table (every
// connection id being served), all on one event loop.
#pragma once

#include <memory>

#include "client_config.hpp"
#include "client_metrics.hpp"
#include "control_connection.hpp"
#include "link_table.hpp"
#include "service_catalog.hpp"
#include "service_metrics.hpp"
#include "tunnel/metrics_endpoint.hpp"
#include "warm_pool.hpp"

namespace tunnel::client {

class Client {
 public:
  // `services`: the configured services with their targets resolved, in the config's order.
  Client(EventLoop& loop, const ClientConfig& config, SocketAddresses server,
         std::vector<ResolvedService> services);

  void start() { control_.start(); }
  // Closes the control connection and the connections still being set up; calls `drained` once
  // the relays in flight have all finished.
  void drain(std::function<void()> drained);
  // Resets every relay still running.
  void abort_relays();

  const LinkTable& links() const { return links_; }
  const ControlConnection& control() const { return control_; }
  const ServiceCatalog& services() const { return catalog_; }

 private:
  void on_online();
  void on_new(const ConnId& id, std::string_view service);
  void on_pooled(const ConnId& id, std::string_view service, StreamSocket socket);
  ClientGauges gauges() const;

  EventLoop& loop_;
  ClientConfig config_;
  SocketAddresses server_;
  ServiceCatalog catalog_;
  ControlConnection control_;
  LinkTable links_;
  WarmPool pool_;
  bool ready_sent_ = false;

  ClientCounters counters_;
  std::vector<ServiceCounters> service_counters_;  // by catalog index
  double start_time_;
  ClientSummary summary_;
  PeriodicTimer summary_timer_;
  std::unique_ptr<MetricsEndpoint> metrics_;
};

}  // namespace tunnel::client
