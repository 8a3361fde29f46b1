// The server's end of one client's control connection: answers pings, passes on FAIL reports and
// SERVE lines, and can probe whether the client is still alive (for a second control connection:
// docs/PROTOCOL.md).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "client_identity.hpp"
#include "client_link.hpp"
#include "tunnel/conn_id.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/heartbeat.hpp"
#include "tunnel/line_connection.hpp"
#include "tunnel/timer.hpp"

namespace tunnel::server {

class Session final : public ClientLink {
 public:
  struct Events {
    std::function<void(Session& from, const ConnId& id, std::string_view reason)> on_fail;
    // SERVE <service>, once per name (a repeated name is answered here, already-served).
    std::function<void(Session& from, const std::string& service)> on_serve;
    // POOL <n>, `wanted` already bounded by the session's cap.
    std::function<void(Session& from, size_t wanted)> on_pool;
    // Called once, from the session's own handlers: the owner frees it with destroy_later.
    std::function<void(std::string_view reason)> on_closed;
  };

  // `features`: the extensions in use on this session.
  Session(EventLoop& loop, uint64_t number, StreamSocket socket,
          std::optional<ClientIdentity> identity, HelloFeatures features,
          HeartbeatSettings heartbeat, Events events);

  // ClientLink
  uint64_t number() const override { return number_; }
  // The client's proven name, or `default` without auth.
  std::string_view name() const override;
  bool open() const override { return connection_.open(); }
  bool speaks_services() const override { return features_.services; }
  size_t pool_cap() const { return features_.pool_cap; }
  const auth::SessionKey* key() const override { return identity_ ? &identity_->key : nullptr; }
  void send_line(std::string_view line) override { connection_.send(line); }

  // Who the client proved to be; empty without auth.
  const std::optional<ClientIdentity>& identity() const { return identity_; }
  const std::string& peer() const { return peer_; }
  // Every service name it sent SERVE for (served or refused), in order; a reload looks again.
  const std::vector<std::string>& announced() const { return announced_; }
  // Closes the connection and stops its timers: no callback of this session runs after this.
  void close();

  // Sends PING and reports whether PONG came back within `timeout`. A session that closes meanwhile
  // counts as dead. Only one probe at a time; a second request joins the first.
  void probe(Duration timeout, std::function<void(bool alive)> result);

 private:
  void on_line(std::string_view line);
  void closed(std::string_view reason);
  void finish_probe(bool alive);

  void on_serve(const std::string& service);

  uint64_t number_;
  std::string peer_;
  std::optional<ClientIdentity> identity_;
  HelloFeatures features_;
  std::vector<std::string> announced_;
  std::unordered_set<std::string> announced_set_;
  size_t serve_lines_ = 0;
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
