// The server's end of one client's control connection: answers pings, relays FAIL reports, and can
// probe whether the client is still alive (for a second control connection: docs/PROTOCOL.md).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "client_identity.hpp"
#include "client_link.hpp"
#include "tunnel/conn_id.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/heartbeat.hpp"
#include "tunnel/line_connection.hpp"
#include "tunnel/timer.hpp"

namespace tunnel::server {

class Session {
 public:
  struct Events {
    std::function<void(const ConnId& id, std::string_view reason)> on_fail;
    // Called once, from the session's own handlers: the owner frees it with destroy_later.
    std::function<void(std::string_view reason)> on_closed;
  };

  Session(EventLoop& loop, uint64_t number, StreamSocket socket,
          std::optional<ClientIdentity> identity, HeartbeatSettings heartbeat, Events events);

  uint64_t number() const { return number_; }
  // Who the client proved to be; empty without auth.
  const std::optional<ClientIdentity>& identity() const { return identity_; }
  // The client's name for logs: its proven name, or `default` without auth.
  std::string_view name() const;
  const std::string& peer() const { return peer_; }
  bool open() const { return connection_.open(); }
  void send_line(std::string_view line) { connection_.send(line); }
  // Closes the connection and stops its timers: no callback of this session runs after this.
  void close();

  // Sends PING and reports whether PONG came back within `timeout`. A session that closes meanwhile
  // counts as dead. Only one probe at a time; a second request joins the first.
  void probe(Duration timeout, std::function<void(bool alive)> result);

 private:
  void on_line(std::string_view line);
  void closed(std::string_view reason);
  void finish_probe(bool alive);

  uint64_t number_;
  std::string peer_;
  std::optional<ClientIdentity> identity_;
  Events events_;
  LineConnection connection_;
  Heartbeat heartbeat_;
  Timer probe_deadline_;
  std::string probe_token_;
  std::vector<std::function<void(bool)>> probe_waiters_;
  uint64_t probes_sent_ = 0;
  uint64_t pings_sent_ = 0;
};

}  // namespace tunnel::server
