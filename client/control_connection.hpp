// The client's control connection to port B: connects, says hello, registers its services, passes
// NEW/CLOSE on, answers PING, and when the link is lost or refused reconnects with exponential
// backoff and full jitter.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "control_link.hpp"
#include "service_registration.hpp"
#include "tunnel/auth.hpp"
#include "tunnel/backoff.hpp"
#include "tunnel/conn_id.hpp"
#include "tunnel/connector.hpp"
#include "tunnel/heartbeat.hpp"
#include "tunnel/line_connection.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/stream_socket.hpp"
#include "tunnel/timer.hpp"
#include "tunnel/tls_context.hpp"
#include "tunnel/tls_handshake.hpp"

namespace tunnel::client {

enum class ControlState {
  backing_off,
  connecting,
  awaiting_challenge,  // auth: hello sent, AUTH-CHALLENGE expected
  awaiting_auth_ok,    // auth: AUTH-PROOF sent, the server's own proof expected
  awaiting_answer,     // OK or ERR expected
  online,
  stopped,
};

// The auth extension's settings: no token, no auth (docs/PROTOCOL.md, "Who requires what").
struct ClientAuth {
  std::string token;
  std::string name{auth::kDefaultName};
};

class ControlConnection final : public ControlLink {
 public:
  struct Events {
    std::function<void()> on_online;
    // The service as NEW names it: empty when it names none (an older server).
    std::function<void(const ConnId&, std::string_view service)> on_new;
    std::function<void(const ConnId&)> on_close;
    std::function<void(const ConnId&)> on_park;  // PARK <id> (pool extension)
    std::function<void()> on_offline;            // the session ended (lost, refused or stopped)
  };

  // `server` and `services` must outlive this object.
  // `tls` null: plain TCP to port B.
  ControlConnection(EventLoop& loop, std::span<const SocketAddress> server,
                    const ServiceCatalog& services, Duration dial_timeout, Duration reconnect_max,
                    HeartbeatSettings heartbeat, ClientAuth auth,
                    std::shared_ptr<tls::ClientContext> tls, size_t pool_size, Events events);

  void start();
  // Closes the connection for good: no reconnect.
  void stop();
  void send_line(std::string_view line) override;
  std::string data_hello(const ConnId& id) const override;
  ControlState state() const { return state_; }
  bool online() const { return state_ == ControlState::online; }
  // Attempts made after a failure or a lost connection.
  uint64_t reconnects() const { return reconnects_; }
  // What the server said about each service in this session.
  const ServiceRegistration& services() const { return services_; }

 private:
  void connect();
  void on_connected(Fd fd, std::error_code error);
  // Connected, and over TLS the handshake done: says the hello.
  void start_session(StreamSocket socket);
  void on_line(std::string_view line);
  // The answers to the hello, one per state before online.
  void on_challenge(const protocol::Message& message);
  void on_auth_ok(const protocol::Message& message);
  void on_answer(const protocol::Message& message);
  // `fields` are ready-made key=value pairs saying why.
  void lost(std::string_view event, std::string_view fields);
  void move_to(ControlState next);

  EventLoop& loop_;
  std::span<const SocketAddress> server_;
  std::string server_name_;  // for logs: the first address
  Duration dial_timeout_;
  ClientAuth auth_;
  size_t pool_size_;
  Events events_;
  ServiceRegistration services_;
  // Auth, per connection: what the server must prove, the key that follows, and the key of the
  // last session whose server proved itself (the one data lines use).
  crypto::Digest expected_server_proof_{};
  auth::SessionKey pending_key_{};
  std::optional<auth::SessionKey> session_key_;
  ControlState state_ = ControlState::backing_off;
  std::unique_ptr<Connector> connector_;
  std::shared_ptr<tls::ClientContext> tls_;
  std::unique_ptr<tls::Handshake> handshake_;
  std::string binding_;  // hex of this connection's TLS exporter, covered by the auth proof
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
