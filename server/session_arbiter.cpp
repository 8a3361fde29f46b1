// Session arbitration (docs/ARCHITECTURE.md has the table):
//   no_session -> online      a control hello; it becomes the session (OK sent)
//   online     -> probing     a control hello while a session serves: PING the session
//   probing    -> online      PONG in time: the newcomers get ERR busy
//   probing    -> online      no PONG in time: the session is replaced by the first newcomer
//   online, probing -> no_session   the session closed (heartbeat, reset, send failure, bad line);
//                             a waiting newcomer then takes the place (-> online)
// Every change of state goes through move_to(); the owner hears on_lost exactly once per session.
#include "session_arbiter.hpp"

#include "tunnel/protocol.hpp"
#include "tunnel/socket.hpp"

namespace tunnel::server {

std::string_view to_string(ArbiterState state) {
  switch (state) {
    case ArbiterState::no_session:
      return "no-session";
    case ArbiterState::online:
      return "online";
    case ArbiterState::probing:
      return "probing";
  }
  return "?";
}

SessionArbiter::SessionArbiter(EventLoop& loop, std::string name, HeartbeatSettings heartbeat,
                               Duration probe_timeout, uint64_t& session_numbers, Events events)
    : loop_(loop),
      name_(std::move(name)),
      heartbeat_(heartbeat),
      probe_timeout_(probe_timeout),
      session_numbers_(session_numbers),
      events_(std::move(events)) {}

SessionArbiter::~SessionArbiter() = default;

void SessionArbiter::move_to(ArbiterState next) {
  TLOG_DEBUG("event=arbiter-state client={} from={} to={}", name_, to_string(state_),
             to_string(next));
  state_ = next;
}

bool SessionArbiter::online() const {
  return state_ != ArbiterState::no_session && session_->open();
}

void SessionArbiter::end_session(std::string_view reason) {
  auto waiting = std::move(newcomers_);
  newcomers_.clear();
  for (auto& newcomer : waiting) refuse_busy(newcomer);
  if (state_ == ArbiterState::no_session) return;
  TLOG_INFO("event=client-offline session={} reason=\"{}\" client={}", session_->number(), reason,
            name_);
  lose_session(reason);
}

void SessionArbiter::disown(const std::vector<ConnId>& ids) {
  for (const ConnId& id : ids) {
    // Bounded: sessions lost in a row add up; the oldest ids matter least.
    if (disowned_.size() >= kMaxDisowned) disowned_.erase(disowned_.begin());
    disowned_.push_back(id);
  }
}

void SessionArbiter::offer(StreamSocket socket, std::string peer,
                           std::optional<ClientIdentity> identity, HelloFeatures features) {
  Newcomer newcomer{std::move(socket), std::move(peer), std::move(identity), features};
  if (closed_) return refuse_busy(newcomer);
  if (state_ == ArbiterState::no_session) return open_session(std::move(newcomer));
  // A session whose socket already failed is only waiting for its loss to be reported: report it
  // now, so that what it was told is put back before anyone else is told anything. Whoever waited
  // on its probe is first in line for the place.
  if (!session_->open()) {
    lose_session("send failed");
    newcomers_.push_back(std::move(newcomer));
    return seat_newcomers();
  }
  if (newcomers_.size() >= kMaxNewcomers) return refuse_busy(newcomer);
  // A client restarted after a silent failure must not be locked out by its own stale session:
  // ask the current one whether it is alive, and let the answer decide.
  uint64_t suppressed = 0;
  if (probing_log_.allow(suppressed))
    TLOG_INFO("event=probing session={} newcomer={} client={} suppressed={}", session_->number(),
              newcomer.peer, name_, suppressed);
  newcomers_.push_back(std::move(newcomer));
  if (state_ == ArbiterState::probing) return;  // the probe in flight answers for this one too
  move_to(ArbiterState::probing);
  uint64_t number = session_->number();
  session_->probe(probe_timeout_, [this, number](bool alive) { on_probe_answer(number, alive); });
}

void SessionArbiter::on_probe_answer(uint64_t number, bool alive) {
  // A probe of a session that is no longer current has nothing left to decide.
  if (state_ != ArbiterState::probing || session_->number() != number) return;
  if (alive) {
    move_to(ArbiterState::online);
    auto refused = std::move(newcomers_);
    newcomers_.clear();
    for (auto& newcomer : refused) refuse_busy(newcomer);
    return;
  }
  TLOG_WARN("event=session-replaced session={} reason=probe-timeout client={}", number, name_);
  lose_session("replaced");
  seat_newcomers();
}

void SessionArbiter::open_session(Newcomer newcomer) {
  ++sessions_opened_;
  uint64_t number = ++session_numbers_;
  bool authenticated = newcomer.identity.has_value();
  session_ = std::make_unique<Session>(
      loop_, number, std::move(newcomer.socket), std::move(newcomer.identity), newcomer.features,
      heartbeat_,
      Session::Events{
          [this](Session& from, const ConnId& id, std::string_view reason) {
            events_.on_fail(from, id, reason);
          },
          [this](Session& from, const std::string& service) { events_.on_serve(from, service); },
          [this](Session& from, size_t wanted) {
            if (events_.on_pool) events_.on_pool(from, wanted);
          },
          [this, number](std::string_view reason) { on_session_closed(number, reason); }});
  move_to(ArbiterState::online);
  std::vector<std::string> features;
  if (authenticated) features.emplace_back(auth::kFeature);
  if (newcomer.features.services) features.emplace_back(protocol::kServicesFeature);
  if (newcomer.features.pool_cap > 0) features.emplace_back(protocol::kPoolFeature);
  session_->send_line(protocol::ok(features));
  TLOG_INFO("event=client-online session={} peer={} client={} auth={} services={} pool_cap={}",
            number, session_->peer(), session_->name(), authenticated ? "token" : "none",
            newcomer.features.services ? "announced" : "default", newcomer.features.pool_cap);
  // The ids the previous session was told are void: say so first, so that whatever this client
  // still has for them (a dial, a relay whose DATA was refused) ends. A client that never knew
  // them ignores the CLOSE.
  for (const ConnId& id : disowned_) session_->send_line(protocol::close_conn(id));
  disowned_.clear();
  events_.on_online(*session_);
}

void SessionArbiter::on_session_closed(uint64_t number, std::string_view reason) {
  if (state_ == ArbiterState::no_session || session_->number() != number) return;
  TLOG_INFO("event=client-offline session={} reason=\"{}\" client={}", number, reason, name_);
  lose_session(reason);
  // Anyone who was waiting on the probe can have the place now.
  seat_newcomers();
}

void SessionArbiter::lose_session(std::string_view reason) {
  if (state_ == ArbiterState::no_session) return;
  TLOG_DEBUG("event=session-ended client={} session={} reason=\"{}\"", name_, session_->number(),
             reason);
  session_->close();
  move_to(ArbiterState::no_session);
  events_.on_lost(*session_);
  // We may be inside one of the session's own callbacks (event_loop.hpp, the lifetime rule).
  loop_.destroy_later(std::move(session_));
}

void SessionArbiter::seat_newcomers() {
  auto waiting = std::move(newcomers_);
  newcomers_.clear();
  if (waiting.empty()) return;
  if (state_ == ArbiterState::no_session && !closed_) {
    open_session(std::move(waiting.front()));
    waiting.erase(waiting.begin());
  }
  for (auto& newcomer : waiting) refuse_busy(newcomer);
}

void SessionArbiter::refuse_busy(Newcomer& newcomer) {
  send_at_once(newcomer.socket, protocol::err(protocol::kErrBusy, "a client is already connected"),
               true);
  ++refused_busy_;
  uint64_t suppressed = 0;
  if (busy_log_.allow(suppressed))
    TLOG_INFO("event=control-refused reason=busy peer={} client={} suppressed={}", newcomer.peer,
              name_, suppressed);
}

void SessionArbiter::close() {
  closed_ = true;
  newcomers_.clear();
  if (state_ != ArbiterState::no_session) {
    session_->close();
    loop_.destroy_later(std::move(session_));
    move_to(ArbiterState::no_session);
  }
}

}  // namespace tunnel::server
