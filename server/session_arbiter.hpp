// One client name's sessions: at most one current session, and the control connections under the
// same name that arrive while it exists (probe the current one, keep it if it answers, replace it
// if not: docs/PROTOCOL.md, "A second control connection"). Its own small state machine;
// session_arbiter.cpp holds every transition (docs/ARCHITECTURE.md, "Session arbitration").
// Clients of different names never meet here: each name has its own arbiter (Sessions).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "client_identity.hpp"
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

class SessionArbiter {
 public:
  struct Events {
    // A session became current (its OK sent): it may serve services now.
    std::function<void(Session& session)> on_online;
    // The current session ended: what it was told is void. Called before it is freed.
    std::function<void(Session& session)> on_lost;
    std::function<void(Session& from, const ConnId& id, std::string_view reason)> on_fail;
    std::function<void(Session& from, const std::string& service)> on_serve;
    std::function<void(Session& from, size_t wanted)> on_pool;
  };

  // `name`: the client name every offer here carries. `session_numbers` counts the sessions of
  // every arbiter, so that a session's number is unique in the server.
  SessionArbiter(EventLoop& loop, std::string name, HeartbeatSettings heartbeat,
                 Duration probe_timeout, uint64_t& session_numbers, Events events);
  ~SessionArbiter();

  // A control hello arrived on `socket`; `identity` when it proved itself (auth), and then the OK
  // lists `auth`; `features`: the extensions taken up (the OK lists them too).
  void offer(StreamSocket socket, std::string peer,
             std::optional<ClientIdentity> identity = std::nullopt, HelloFeatures features = {});
  // Shutting down, or the client was removed by a reload: closes the session (on_lost is not
  // called) and turns newcomers away.
  void close();
  // A reload revoked this client (removed, token changed, auth turned on): the current session
  // ends as lost (on_lost) and newcomers waiting on its probe are refused; the client may log in
  // again at once, with what the new config says.
  void end_session(std::string_view reason);
  // Ids a lost session of this client was told: the next session is told CLOSE for them first.
  void disown(const std::vector<ConnId>& ids);

  bool online() const;
  // The current session, or null.
  Session* session() { return state_ == ArbiterState::no_session ? nullptr : session_.get(); }
  // Nothing here: no session, nobody waiting, nothing to disown. The owner may free it.
  bool idle() const {
    return state_ == ArbiterState::no_session && newcomers_.empty() && disowned_.empty();
  }
  ArbiterState state() const { return state_; }
  const std::string& name() const { return name_; }
  uint64_t sessions_opened() const { return sessions_opened_; }
  uint64_t refused_busy() const { return refused_busy_; }

  // Control connections that may wait for one probe together; more are refused at once.
  static constexpr size_t kMaxNewcomers = 8;
  // Ids kept to be disowned to the next session.
  static constexpr size_t kMaxDisowned = 1024;

 private:
  struct Newcomer {
    StreamSocket socket;
    std::string peer;
    std::optional<ClientIdentity> identity;
    HelloFeatures features;
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
  std::string name_;
  HeartbeatSettings heartbeat_;
  Duration probe_timeout_;
  uint64_t& session_numbers_;
  Events events_;
  ArbiterState state_ = ArbiterState::no_session;
  std::unique_ptr<Session> session_;
  std::vector<Newcomer> newcomers_;
  std::vector<ConnId> disowned_;
  uint64_t sessions_opened_ = 0;
  uint64_t refused_busy_ = 0;
  bool closed_ = false;
  log::RateLimit probing_log_;
  log::RateLimit busy_log_;
};

}  // namespace tunnel::server
