// The life of one external connection on the server (docs/ARCHITECTURE.md has the table):
//   admit                     -> waiting_for_client, or announced at once if a client is online
//   waiting_for_client        -> announced           a client came online (NEW <id> sent)
//   announced                 -> waiting_for_client  that client went away before DATA
//   announced                 -> relaying            DATA <id> claimed it
//   waiting_for_client, announced -> ended           pair timeout (no-client / pair-timeout),
//                                                    FAIL from the client, A reset, shutdown
//   relaying                  -> ended               the relay finished (both ends closed)
// Every change of state goes through move_to(); an entry leaves the table only in remove().
#include "connection_table.hpp"

#include "tunnel/protocol.hpp"
#include "tunnel/socket.hpp"
#include "tunnel/timer.hpp"

namespace tunnel::server {

std::string_view to_string(ConnState state) {
  switch (state) {
    case ConnState::waiting_for_client:
      return "waiting-for-client";
    case ConnState::announced:
      return "announced";
    case ConnState::relaying:
      return "relaying";
    case ConnState::ended:
      return "ended";
  }
  return "?";
}

struct ConnectionTable::Entry {
  ConnId id;
  ConnState state = ConnState::waiting_for_client;
  Clock::time_point admitted;
  // Until pairing. Interest is empty: A's bytes stay in the kernel until the relay starts, and only
  // a reset or error (always reported) tells us the external side is gone. A FIN alone is not: a
  // half-closed request still deserves its answer.
  std::optional<Channel> external;
  Timer deadline;

  // The entry's own callbacks hold the entry, not its id: the id changes when a lost session's
  // announcements are voided (client_lost), and the entry's timer and socket are quieted before
  // it is retired (remove), so the entry exists whenever they can run.
  Entry(EventLoop& loop, ConnId conn_id, ConnectionTable& table)
      : id(conn_id), admitted(loop.now()), deadline(loop, [&table, this] {
          table.end_unpaired(*this,
                             state == ConnState::announced ? FailureReason::pair_timeout
                                                           : FailureReason::no_client,
                             "");
        }) {}
};

ConnectionTable::ConnectionTable(EventLoop& loop, ClientLink& client, Duration pair_timeout,
                                 size_t max_pending, Events events)
    : loop_(loop),
      client_(client),
      pair_timeout_(pair_timeout),
      max_pending_(max_pending),
      events_(std::move(events)),
      relays_(loop, [this](const ConnId& id, const RelayOutcome& outcome, Duration lasted) {
        on_relay_ended(id, outcome, lasted);
      }) {}

ConnectionTable::~ConnectionTable() = default;

std::optional<ConnState> ConnectionTable::state_of(const ConnId& id) const {
  auto it = entries_.find(id);
  if (it == entries_.end()) return std::nullopt;
  return it->second->state;
}

void ConnectionTable::move_to(Entry& entry, ConnState next) {
  TLOG_DEBUG("event=conn-state conn={} from={} to={}", entry.id.short_hex(), to_string(entry.state),
             to_string(next));
  --counts_[static_cast<size_t>(entry.state)];
  entry.state = next;
  if (next != ConnState::ended) ++counts_[static_cast<size_t>(next)];  // ended entries leave
}

void ConnectionTable::admit(Fd external) {
  if (pending() >= max_pending_) {
    // Shed at once: a flood of A connections must not grow the table without bound.
    set_linger_reset(external.get());
    external.reset();
    uint64_t suppressed = 0;
    if (failure_log_[static_cast<size_t>(FailureReason::max_pending)].allow(suppressed))
      TLOG_WARN("event=conn-failed reason=max-pending pending={} suppressed={}", pending(),
                suppressed);
    events_.on_failure(FailureReason::max_pending);
    return;
  }
  ConnId id = ConnId::random();
  auto entry = std::make_unique<Entry>(loop_, id, *this);
  Entry* e = entry.get();
  e->external.emplace(loop_, std::move(external), 0, [this, e](uint32_t) {
    end_unpaired(*e, FailureReason::closed_early, "external side reset");
  });
  Entry& added = *entries_.emplace(id, std::move(entry)).first->second;
  ++counts_[static_cast<size_t>(ConnState::waiting_for_client)];
  added.deadline.arm(pair_timeout_);
  TLOG_DEBUG("event=accepted conn={} pending={}", id.short_hex(), pending());
  announce(added);
}

void ConnectionTable::announce(Entry& entry) {
  if (!client_.online()) return;
  client_.send_line(protocol::new_conn(entry.id));
  move_to(entry, ConnState::announced);
  TLOG_DEBUG("event=announced conn={}", entry.id.short_hex());
}

void ConnectionTable::client_online() {
  // The ids a lost session was told are void: say so first, so that whatever that client still
  // has for them (a dial, a relay whose DATA was refused) ends. A client that never knew them
  // ignores the CLOSE.
  for (const ConnId& id : disowned_) client_.send_line(protocol::close_conn(id));
  disowned_.clear();
  for (auto& [id, entry] : entries_)
    if (entry->state == ConnState::waiting_for_client) announce(*entry);
}

void ConnectionTable::client_lost() {
  // What the lost session was told goes back to waiting under a fresh id. A DATA line for the old
  // id may still arrive (the client may be alive, only its control connection lost): it is
  // refused as unknown, so it can never be paired with a connection the next session is serving.
  std::vector<ConnId> voided;
  for (auto& [id, entry] : entries_)
    if (entry->state == ConnState::announced) voided.push_back(id);
  for (const ConnId& old_id : voided) {
    auto node = entries_.extract(old_id);
    const ConnId new_id = ConnId::random();
    node.key() = new_id;
    node.mapped()->id = new_id;
    Entry& entry = *entries_.insert(std::move(node)).position->second;
    TLOG_DEBUG("event=conn-renamed conn={} new={} reason=session-lost", old_id.short_hex(),
               new_id.short_hex());
    move_to(entry, ConnState::waiting_for_client);
    // Bounded: at most max_pending ids wait to be disowned (sessions lost in a row add up).
    if (disowned_.size() >= max_pending_) disowned_.erase(disowned_.begin());
    disowned_.push_back(old_id);
  }
}

bool ConnectionTable::claim(const ConnId& id, StreamSocket data) {
  auto it = entries_.find(id);
  // Only an announced id can be claimed: anything else was never given to a client, or is taken.
  if (it == entries_.end() || it->second->state != ConnState::announced) return false;
  Entry& entry = *it->second;
  entry.deadline.cancel();
  Fd external = entry.external->release();
  entry.external.reset();
  auto waited = std::chrono::duration_cast<Duration>(loop_.now() - entry.admitted);
  move_to(entry, ConnState::relaying);
  TLOG_DEBUG("event=paired conn={} waited_ms={}", id.short_hex(), waited.count());
  set_keepalive(data.fd.get());
  if (data.tls)
    relays_.start(id, std::move(external), std::move(data.fd), TlsSide::service,
                  std::move(data.tls), data.unread);
  else
    relays_.start(id, std::move(external), std::move(data.fd));
  return true;
}

void ConnectionTable::fail(const ConnId& id, std::string_view reason) {
  auto it = entries_.find(id);
  // A client can only give up on what it was told.
  if (it == entries_.end() || it->second->state != ConnState::announced) return;
  end_unpaired(*it->second, FailureReason::target_unreachable, reason);
}

void ConnectionTable::end_unpaired(Entry& entry, FailureReason failure, std::string_view detail) {
  if (entry.state == ConnState::relaying || entry.state == ConnState::ended) return;
  const ConnId id = entry.id;
  auto it = entries_.find(id);
  // The client may be dialing for it: tell it to stop, unless the client itself gave up.
  if (entry.state == ConnState::announced && failure != FailureReason::target_unreachable)
    client_.send_line(protocol::close_conn(id));
  auto waited = std::chrono::duration_cast<Duration>(loop_.now() - entry.admitted);
  if (failure == FailureReason::closed_early) {
    TLOG_DEBUG("event=conn-failed conn={} reason={} waited_ms={}", id.short_hex(),
               to_string(failure), waited.count());
  } else {
    uint64_t suppressed = 0;
    if (failure_log_[static_cast<size_t>(failure)].allow(suppressed))
      TLOG_INFO("event=conn-failed conn={} reason={}{}{} waited_ms={} suppressed={}",
                id.short_hex(), to_string(failure), detail.empty() ? "" : " detail=", detail,
                waited.count(), suppressed);
  }
  // A connection refused by the target is reset, so the external client sees a refusal rather
  // than an empty answer.
  if (failure == FailureReason::target_unreachable) set_linger_reset(entry.external->fd());
  events_.on_failure(failure);
  remove(it);
}

void ConnectionTable::on_relay_ended(const ConnId& id, const RelayOutcome& outcome,
                                     Duration lasted) {
  TLOG_DEBUG(
      "event=conn-closed conn={} bytes_to_client={} bytes_to_external={} duration_ms={} "
      "reason=\"{}\"",
      id.short_hex(), outcome.bytes_to_service, outcome.bytes_to_visitor, lasted.count(),
      outcome.reason);
  events_.on_relay_ended(outcome);
  auto it = entries_.find(id);
  if (it != entries_.end()) remove(it);
}

// We may be inside the entry's own handler (its timer, its socket): the external socket is closed
// now, the entry itself is freed after this batch (event_loop.hpp, the lifetime rule).
void ConnectionTable::remove(Entries::iterator it) {
  auto entry = std::move(it->second);
  entries_.erase(it);
  move_to(*entry, ConnState::ended);
  entry->deadline.cancel();
  if (entry->external) entry->external->close();
  loop_.destroy_later(std::move(entry));
}

void ConnectionTable::drain(std::function<void()> drained) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto next = std::next(it);
    if (it->second->state != ConnState::relaying) remove(it);
    it = next;
  }
  relays_.when_drained(std::move(drained));
}

void ConnectionTable::abort_relays() {
  relays_.abort_all("server stopping");
}

}  // namespace tunnel::server
