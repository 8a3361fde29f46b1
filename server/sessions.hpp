// Every client's sessions, by client name (one SessionArbiter per name), and what each session
// serves: SERVE lines are checked against the services (unknown, not allowed, already served),
// accepted ones make the session one of the service's servers, and a lost session leaves every
// service it served (docs/ARCHITECTURE.md, "Services and sessions").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "client_identity.hpp"
#include "connection_table.hpp"
#include "service.hpp"
#include "session_arbiter.hpp"

namespace tunnel::server {

using ServiceMap = std::unordered_map<std::string, std::shared_ptr<Service>>;

class Sessions {
 public:
  // `services` is the server's, read at each SERVE and changed by reloads (then call
  // services_changed).
  Sessions(EventLoop& loop, HeartbeatSettings heartbeat, Duration probe_timeout,
           const ServiceMap& services, ConnectionTable& table);
  ~Sessions();

  // A control hello (authenticated when `identity` is set) arrived.
  void offer(StreamSocket socket, std::string peer, std::optional<ClientIdentity> identity,
             HelloFeatures features);
  // Shutting down: closes every session and turns newcomers away.
  void close();
  // A reload: `name`'s session ends (the client was removed, its token changed, or auth was
  // turned on); it may log in again under the new config.
  void end_client(const std::string& name);
  // A reload changed, added or removed services: every session's announced services are looked
  // at again (SERVING / REFUSED sent for what changed). Call after removing a service from the
  // map, with it in `removed`.
  void services_changed(const std::vector<std::shared_ptr<Service>>& removed);

  size_t online() const;
  // Calls `visit` with every current session and its client's name.
  void for_each_session(const std::function<void(const std::string&, const Session&)>& visit);
  // Calls `visit` with the name of every client with a current session.
  void for_each_online(const std::function<void(const std::string&)>& visit) const;
  uint64_t sessions_opened() const { return session_numbers_; }
  uint64_t refused_busy() const;

  // Different client names with something in progress at once; more are refused (busy).
  static constexpr size_t kMaxNames = 4096;
  // A session's SERVE lines whose refusal is always logged; later ones are rate-limited.
  static constexpr size_t kRefusalsLoggedPerSession = 16;

 private:
  SessionArbiter& arbiter_for(const std::string& name);
  void on_online(Session& session);
  void on_lost(SessionArbiter& arbiter, Session& session);
  void on_serve(Session& session, const std::string& service);
  // Why `session` may not serve `service`, or empty when it may.
  std::string_view refusal(const Session& session, const std::string& service) const;
  void start_serving(Session& session, Service& service);
  // Frees arbiters with nothing left in them (after the current event).
  void forget_idle();

  EventLoop& loop_;
  HeartbeatSettings heartbeat_;
  Duration probe_timeout_;
  const ServiceMap& services_;
  ConnectionTable& table_;
  std::unordered_map<std::string, std::unique_ptr<SessionArbiter>> arbiters_;
  uint64_t session_numbers_ = 0;
  uint64_t refused_by_gone_arbiters_ = 0;
  uint64_t refused_too_many_ = 0;
  bool closed_ = false;
  log::RateLimit refusal_log_;
};

}  // namespace tunnel::server
