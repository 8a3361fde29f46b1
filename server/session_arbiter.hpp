// Who is the client: at most one current session, and the control connections that arrive while it
// exists (probe the current one, keep it if it answers, replace it if not: docs/PROTOCOL.md, "A
// second control connection"). Its own small state machine; session_arbiter.cpp holds every
// transition (docs/ARCHITECTURE.md, "Session arbitration").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "client_identity.hpp"
#include "client_link.hpp"
#include "session.hpp"
#include "tunnel/log.hpp"
#include "tunnel/stream_socket.hpp"

namespace tunnel::server {

enum class ArbiterState {
  no_session,  // no client online
  online,      // one session serves
  probing,     // one session serves; newcomers wait for the answer to its probe
};
std::string_view to_string(ArbiterState state);

class SessionArbiter final : public ClientLink {
 public:
  struct Events {
    std::function<void()> on_online;  // a session became current: announce what waits
    std::function<void()> on_lost;    // the current session ended: what it was told is void
    std::function<void(const ConnId& id, std::string_view reason)> on_fail;  // FAIL from it
  };

  SessionArbiter(EventLoop& loop, HeartbeatSettings heartbeat, Duration probe_timeout,
                 Events events);
  ~SessionArbiter() override;

  // A control hello arrived on `fd`; `identity` when it proved itself (auth), and then the OK
  // lists `auth`.
  void offer(StreamSocket socket, std::string peer,
             std::optional<ClientIdentity> identity = std::nullopt);
  // Shutting down: closes the session and turns newcomers away.
  void close();

  // ClientLink
  bool online() const override;
  void send_line(std::string_view line) override;

  ArbiterState state() const { return state_; }
  uint64_t sessions_opened() const { return sessions_opened_; }
  uint64_t refused_busy() const { return refused_busy_; }
  // The session keys of the current session and of the one before it (auth), or null: a data
  // line proves itself with the current one; one made with the previous key is a late line of a
  // session that is gone, not an attack.
  const auth::SessionKey* current_key() const;
  const auth::SessionKey* previous_key() const { return previous_key_ ? &*previous_key_ : nullptr; }

  // Control connections that may wait for one probe together; more are refused at once.
  static constexpr size_t kMaxNewcomers = 8;

 private:
  struct Newcomer {
    StreamSocket socket;
    std::string peer;
    std::optional<ClientIdentity> identity;
  };
  void move_to(ArbiterState next);
  void open_session(Newcomer newcomer);
  // Ends the current session, whatever ended it, and tells the owner exactly once.
  void lose_session(std::string_view reason);
  void on_session_closed(uint64_t number, std::string_view reason);
  void on_probe_answer(uint64_t number, bool alive);
  // Seats the first newcomer (if any) and refuses the others.
  void seat_newcomers();
  void refuse_busy(Newcomer& newcomer);

  EventLoop& loop_;
  HeartbeatSettings heartbeat_;
  Duration probe_timeout_;
  Events events_;
  ArbiterState state_ = ArbiterState::no_session;
  std::unique_ptr<Session> session_;
  std::optional<auth::SessionKey> previous_key_;
  std::vector<Newcomer> newcomers_;
  uint64_t sessions_opened_ = 0;
  uint64_t refused_busy_ = 0;
  bool closed_ = false;
  log::RateLimit probing_log_;
  log::RateLimit busy_log_;
};

}  // namespace tunnel::server
