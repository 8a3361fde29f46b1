// tunnel-client: the control connection, the connections being set up (links) and the relays, all
// on one event loop.
#pragma once

#include <memory>
#include <unordered_map>

#include "client_config.hpp"
#include "control_connection.hpp"
#include "data_link.hpp"
#include "tunnel/log.hpp"
#include "tunnel/pipe_pool.hpp"
#include "tunnel/relay.hpp"

namespace tunnel::client {

class Client {
 public:
  Client(EventLoop& loop, const ClientConfig& config, const SocketAddress& server,
         const SocketAddress& target);

  void start() { control_.start(); }
  // Closes the control connection and every relay.
  void stop();

 private:
  void on_new(const ConnId& id);
  void on_close(const ConnId& id);
  void on_link_ready(const ConnId& id, Fd data, Fd target);
  void on_link_failed(const ConnId& id, std::string_view reason, bool to_target);

  EventLoop& loop_;
  ClientConfig config_;
  SocketAddress server_;
  SocketAddress target_;
  PipePool pipes_;
  PipeTrimmer pipe_trimmer_;
  ControlConnection control_;
  std::unordered_map<ConnId, std::unique_ptr<DataLink>, ConnIdHash> links_;
  std::unordered_map<ConnId, std::unique_ptr<Relay>, ConnIdHash> relays_;
  log::RateLimit failure_log_;
};

}  // namespace tunnel::client
