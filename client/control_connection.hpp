// The client's control connection to port B: connects, says hello, passes NEW/CLOSE on, answers
// PING, and when the link is lost or refused reconnects with exponential backoff and full jitter.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "control_link.hpp"
#include "tunnel/backoff.hpp"
#include "tunnel/conn_id.hpp"
#include "tunnel/connector.hpp"
#include "tunnel/heartbeat.hpp"
#include "tunnel/line_connection.hpp"
#include "tunnel/timer.hpp"

namespace tunnel::client {

enum class ControlState { backing_off, connecting, awaiting_answer, online, stopped };

class ControlConnection final : public ControlLink {
 public:
  struct Events {
    std::function<void()> on_online;
    std::function<void(const ConnId&)> on_new;
    std::function<void(const ConnId&)> on_close;
  };

  // `server` must outlive this object.
  ControlConnection(EventLoop& loop, std::span<const SocketAddress> server, Duration dial_timeout,
                    Duration reconnect_max, HeartbeatSettings heartbeat, Events events);

  void start();
  // Closes the connection for good: no reconnect.
  void stop();
  void send_line(std::string_view line) override;
  ControlState state() const { return state_; }
  bool online() const { return state_ == ControlState::online; }
  // Attempts made after a failure or a lost connection.
  uint64_t reconnects() const { return reconnects_; }

 private:
  void connect();
  void on_connected(Fd fd, std::error_code error);
  void on_line(std::string_view line);
  // `fields` are ready-made key=value pairs saying why.
  void lost(std::string_view event, std::string_view fields);
  void move_to(ControlState next);

  EventLoop& loop_;
  std::span<const SocketAddress> server_;
  std::string server_name_;  // for logs: the first address
  Duration dial_timeout_;
  Events events_;
  ControlState state_ = ControlState::backing_off;
  std::unique_ptr<Connector> connector_;
  std::unique_ptr<LineConnection> connection_;
  Backoff backoff_;
  Heartbeat heartbeat_;
  uint64_t pings_sent_ = 0;
  uint64_t reconnects_ = 0;
  Timer retry_;
  // The backoff starts over only after the link has been healthy this long, so a server that
  // accepts and drops at once still sees a client backing off.
  Timer stable_;
};

}  // namespace tunnel::client
