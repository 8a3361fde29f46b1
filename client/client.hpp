// tunnel-client: the control connection, the connections being set up (links) and the relays, all
// on one event loop.
#pragma once

#include <memory>
#include <unordered_map>

#include "client_config.hpp"
#include "client_metrics.hpp"
#include "control_connection.hpp"
#include "data_link.hpp"
#include "tunnel/log.hpp"
#include "tunnel/metrics_endpoint.hpp"
#include "tunnel/pipe_pool.hpp"
#include "tunnel/relay.hpp"

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

 private:
  void on_online();
  void on_new(const ConnId& id);
  void on_close(const ConnId& id);
  void on_link_ready(const ConnId& id, Fd data, Fd target);
  void on_link_failed(const ConnId& id, std::string_view reason, bool to_target);
  void check_drained();
  ClientGauges gauges() const;

  EventLoop& loop_;
  ClientConfig config_;
  SocketAddresses server_;
  SocketAddresses target_;
  PipePool pipes_;
  PeriodicTimer pipe_trimmer_;
  ControlConnection control_;
  std::unordered_map<ConnId, std::unique_ptr<DataLink>, ConnIdHash> links_;
  std::unordered_map<ConnId, std::unique_ptr<Relay>, ConnIdHash> relays_;
  log::RateLimit failure_log_;
  std::function<void()> drained_;
  bool ready_sent_ = false;

  ClientCounters counters_;
  double start_time_;
  ClientSummary summary_;
  PeriodicTimer summary_timer_;
  std::unique_ptr<MetricsEndpoint> metrics_;
};

}  // namespace tunnel::client
