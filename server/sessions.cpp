// Sessions by client name, and the services they serve.
#include "sessions.hpp"

#include "tunnel/protocol.hpp"

namespace tunnel::server {

Sessions::Sessions(EventLoop& loop, HeartbeatSettings heartbeat, Duration probe_timeout,
                   const ServiceMap& services, ConnectionTable& table)
    : loop_(loop),
      heartbeat_(heartbeat),
      probe_timeout_(probe_timeout),
      services_(services),
      table_(table) {}

Sessions::~Sessions() = default;

SessionArbiter& Sessions::arbiter_for(const std::string& name) {
  auto it = arbiters_.find(name);
  if (it != arbiters_.end()) return *it->second;
  auto created = std::make_unique<SessionArbiter>(
      loop_, name, heartbeat_, probe_timeout_, session_numbers_,
      SessionArbiter::Events{
          [this](Session& session) { on_online(session); },
          // Called by that very arbiter, which is in the map while it runs.
          [this, name](Session& session) { on_lost(*arbiters_.at(name), session); },
          [this](Session& from, const ConnId& id, std::string_view reason) {
            table_.fail(from, id, reason);
          },
          [this](Session& from, const std::string& service) { on_serve(from, service); },
          [this](Session& from, size_t wanted) { table_.pools().request(from, wanted); }});
  return *arbiters_.emplace(name, std::move(created)).first->second;
}

void Sessions::offer(StreamSocket socket, std::string peer, std::optional<ClientIdentity> identity,
                     HelloFeatures features) {
  const std::string name(identity ? identity->name : std::string(auth::kDefaultName));
  if (!arbiters_.contains(name) && (closed_ || arbiters_.size() >= kMaxNames)) {
    ++refused_too_many_;
    send_at_once(socket, protocol::err(protocol::kErrBusy, "too many clients"), true);
    return;
  }
  // A client without the extension can only serve `default`: when it may not, it is told so
  // plainly instead of an OK that leads nowhere.
  if (!features.services) {
    auto it = services_.find(std::string(kDefaultService));
    if (it == services_.end() || !it->second->allows(name)) {
      send_at_once(socket,
                   protocol::err(protocol::kErrBadRequest,
                                 it == services_.end()
                                     ? "this server has no service named default (tunnel-client "
                                       "--service NAME=HOST:PORT)"
                                     : "this client may not serve the service named default"),
                   true);
      TLOG_WARN("event=control-refused reason=no-service peer={} client={} service=default", peer,
                name);
      return;
    }
  }
  arbiter_for(name).offer(std::move(socket), std::move(peer), std::move(identity), features);
}

void Sessions::on_online(Session& session) {
  // A client without the extension serves the one-service case's service, when it may.
  if (session.speaks_services()) return;
  const std::string service(kDefaultService);
  auto why_not = refusal(session, service);
  if (!why_not.empty()) {
    TLOG_WARN("event=service-refused client={} session={} service={} reason={}", session.name(),
              session.number(), service, why_not);
    return;
  }
  start_serving(session, *services_.at(service));
}

std::string_view Sessions::refusal(const Session& session, const std::string& service) const {
  auto it = services_.find(service);
  if (it == services_.end()) return protocol::kRefusedUnknown;
  if (!it->second->allows(session.name())) return protocol::kRefusedNotAllowed;
  return {};
}

void Sessions::on_serve(Session& session, const std::string& service) {
  auto why_not = refusal(session, service);
  if (!why_not.empty()) {
    session.send_line(protocol::refused(service, why_not));
    // Each of a session's first few refusals is worth a line (a misconfigured service or
    // client); a flood of SERVE lines beyond them is logged at most once a second.
    uint64_t suppressed = 0;
    if (session.announced().size() <= kRefusalsLoggedPerSession || refusal_log_.allow(suppressed))
      TLOG_WARN("event=service-refused client={} session={} service={} reason={} suppressed={}",
                session.name(), session.number(), service, why_not, suppressed);
    return;
  }
  session.send_line(protocol::serving(service));
  start_serving(session, *services_.at(service));
}

void Sessions::start_serving(Session& session, Service& service) {
  service.add(session);
  TLOG_INFO("event=service-serving client={} session={} service={} clients={}", session.name(),
            session.number(), service.name(), service.serving());
  table_.service_served(service);
}

void Sessions::on_lost(SessionArbiter& arbiter, Session& session) {
  for (const auto& name : session.announced()) {
    auto it = services_.find(name);
    if (it != services_.end()) it->second->remove(session);
  }
  if (!session.speaks_services()) {
    auto it = services_.find(std::string(kDefaultService));
    if (it != services_.end()) it->second->remove(session);
  }
  arbiter.disown(table_.link_lost(session));
  forget_idle();
}

void Sessions::forget_idle() {
  for (auto it = arbiters_.begin(); it != arbiters_.end();) {
    auto next = std::next(it);
    // An arbiter may be in the middle of its own call: it is freed after this batch.
    if (it->second->idle()) {
      refused_by_gone_arbiters_ += it->second->refused_busy();
      loop_.destroy_later(std::move(it->second));
      arbiters_.erase(it);
    }
    it = next;
  }
}

void Sessions::close() {
  closed_ = true;
  for (auto& [name, arbiter] : arbiters_) arbiter->close();
}

void Sessions::end_client(const std::string& name) {
  auto it = arbiters_.find(name);
  if (it != arbiters_.end()) it->second->end_session("reload");
}

void Sessions::services_changed(const std::vector<std::shared_ptr<Service>>& removed) {
  for (auto& [name, arbiter] : arbiters_) {
    Session* session = arbiter->session();
    if (!session) continue;
    std::vector<std::string> names = session->announced();
    if (!session->speaks_services()) names.emplace_back(kDefaultService);
    for (const auto& service_name : names) {
      bool was_removed = false;
      for (const auto& gone : removed)
        if (gone->name() == service_name && gone->serves(*session)) {
          gone->remove(*session);
          was_removed = true;
        }
      auto it = services_.find(service_name);
      const bool serves = it != services_.end() && it->second->serves(*session);
      auto why_not = refusal(*session, service_name);
      if (serves && !why_not.empty()) {
        it->second->remove(*session);
        if (session->speaks_services())
          session->send_line(protocol::refused(service_name, why_not));
        // Then what it was told for the service goes back (CLOSE) and on to an allowed session.
        table_.link_left(*session, *it->second);
        TLOG_WARN("event=service-refused client={} session={} service={} reason={}", name,
                  session->number(), service_name, why_not);
      } else if (!serves && why_not.empty()) {
        if (session->speaks_services()) session->send_line(protocol::serving(service_name));
        start_serving(*session, *it->second);
      } else if (was_removed && session->speaks_services()) {
        session->send_line(protocol::refused(service_name, protocol::kRefusedRemoved));
      }
    }
  }
}

size_t Sessions::online() const {
  size_t count = 0;
  for (const auto& [name, arbiter] : arbiters_) count += arbiter->online() ? 1 : 0;
  return count;
}

void Sessions::for_each_session(
    const std::function<void(const std::string&, const Session&)>& visit) {
  for (auto& [name, arbiter] : arbiters_)
    if (Session* session = arbiter->session()) visit(name, *session);
}

void Sessions::for_each_online(const std::function<void(const std::string&)>& visit) const {
  for (const auto& [name, arbiter] : arbiters_)
    if (arbiter->online()) visit(name);
}

uint64_t Sessions::refused_busy() const {
  uint64_t total = refused_by_gone_arbiters_ + refused_too_many_;
  for (const auto& [name, arbiter] : arbiters_) total += arbiter->refused_busy();
  return total;
}

}  // namespace tunnel::server
