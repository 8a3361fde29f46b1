// tunnel-server: listeners on A and B, the client's session, the handshakes on B, the pending table
// and the relays, all on one event loop.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "b_handshake.hpp"
#include "client_link.hpp"
#include "pending_table.hpp"
#include "server_config.hpp"
#include "server_metrics.hpp"
#include "session.hpp"
#include "tunnel/listener.hpp"
#include "tunnel/metrics_endpoint.hpp"
#include "tunnel/pipe_pool.hpp"
#include "tunnel/relay.hpp"

namespace tunnel::server {

class Server final : public ClientLink {
 public:
  // Binds both listeners; throws std::runtime_error naming the option when one cannot be bound.
  Server(EventLoop& loop, const ServerConfig& config);
  ~Server() override;

  // Stops accepting: closes the listeners, the client's session and every connection not yet
  // relaying; calls `drained` once the relays in flight have all finished.
  void drain(std::function<void()> drained);
  // Resets every relay still running.
  void abort_relays();

  // ClientLink
  bool online() const override { return session_ && session_->open(); }
  void send_line(std::string_view line) override;

 private:
  void on_b_connection(Fd fd);
  void on_first_line(uint64_t handshake, Fd fd, std::string_view line);
  void on_control_hello(Fd fd, const std::string& peer);
  void on_data_hello(Fd fd, const ConnId& id, const std::string& peer);
  void open_session(Fd fd);
  void on_session_closed(uint64_t number, std::string_view reason);
  void resolve_newcomers(bool incumbent_alive);
  void start_relay(const ConnId& id, Fd external, Fd data);
  // Counts a refused B connection and logs it (rate-limited); `reason` is the detailed word.
  void refuse_b(FailureReason counted_as, std::string_view reason, std::string_view peer);
  void refuse_busy(const Fd& fd);
  void count_failure(FailureReason reason);
  ServerGauges gauges() const;
  void check_drained();

  EventLoop& loop_;
  ServerConfig config_;
  PipePool pipes_;
  PeriodicTimer pipe_trimmer_;
  std::unique_ptr<Listener> listen_a_;
  std::unique_ptr<Listener> listen_b_;

  std::unique_ptr<Session> session_;
  // Control connections that arrived while a session exists, waiting for its liveness probe.
  std::vector<Fd> newcomers_;

  std::unordered_map<uint64_t, std::unique_ptr<BHandshake>> handshakes_;
  uint64_t handshakes_started_ = 0;

  PendingTable pending_;

  struct ActiveRelay {
    std::unique_ptr<Relay> relay;
    Clock::time_point started;
  };
  std::unordered_map<ConnId, ActiveRelay, ConnIdHash> relays_;

  log::RateLimit b_refusal_log_;
  log::RateLimit busy_log_;
  std::function<void()> drained_;

  ServerCounters counters_;
  double start_time_;
  ServerSummary summary_;
  PeriodicTimer summary_timer_;
  std::unique_ptr<MetricsEndpoint> metrics_;
};

}  // namespace tunnel::server
