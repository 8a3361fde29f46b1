// The life of one external connection on the server (docs/ARCHITECTURE.md has the table):
//   admit                     -> waiting_for_client, or announced at once if a session serves
//                                the connection's service
//   waiting_for_client        -> announced           a session started serving it (NEW sent)
//   announced                 -> announced           the session told went away, or answered
//                                                    FAIL, and another one serves the service
//                                                    (NEW under a fresh id)
//   announced                 -> waiting_for_client  the session told went away, none other
//   announced                 -> relaying            DATA <id> claimed it
//   waiting_for_client, announced -> handed_off      (instead of NEW) the session picked has a
//                                                    pooled data connection: NEW on it, with the
//                                                    visitor's first bytes
//   handed_off                -> relaying            READY on the pooled connection
//   handed_off                -> announced/waiting   the pooled connection was dead (no TAKEN in
//                                                    time, closed) or its client answered FAIL, or
//                                                    its session went away: announced again under
//                                                    a fresh id (after a dead one, with NEW)
//   waiting_for_client, announced, handed_off -> ended   pair timeout (no-client / pair-timeout),
//                                                    FAIL from every session serving it, A reset,
//                                                    service removed, shutdown
//   relaying                  -> ended               the relay finished (both ends closed)
// Every change of state goes through move_to(); an entry leaves the table only in remove().
#include "connection_table.hpp"

#include "tunnel/protocol.hpp"
#include "tunnel/proxy_protocol.hpp"
#include "tunnel/socket.hpp"
#include "tunnel/timer.hpp"

namespace tunnel::server {

namespace {

bool is_pending(ConnState state) {
  return state == ConnState::waiting_for_client || state == ConnState::announced ||
         state == ConnState::handed_off;
}

}  // namespace

std::string_view to_string(ConnState state) {
  switch (state) {
    case ConnState::waiting_for_client:
      return "waiting-for-client";
    case ConnState::announced:
      return "announced";
    case ConnState::handed_off:
      return "handed-off";
    case ConnState::relaying:
      return "relaying";
    case ConnState::ended:
      return "ended";
  }
  return "?";
}

// What an entry needs only until it relays (or ends unpaired): allocated apart and freed when the
// relay starts, so a relaying entry (most entries, for most of their life) is 88 bytes instead
// of 176 (552 when all of this was inline).
struct ConnectionTable::Pending {
  Clock::time_point admitted;
  std::optional<Addresses> addresses;    // from a PROXY header
  std::vector<uint64_t> failed_at;       // the sessions that answered FAIL for it, by number
  std::unique_ptr<PoolHandoff> handoff;  // handed_off: it holds the external socket meanwhile
  ConnId park_id;                        // handed_off: the PARK id of the pooled connection
  uint64_t handed_session = 0;           // handed_off: the session it came from, by number
  // Interest is empty: A's bytes stay in the kernel until the relay starts, and only a reset or
  // error (always reported) tells us the external side is gone. A FIN alone is not: a half-closed
  // request still deserves its answer.
  std::optional<Channel> external;
  Timer deadline;

  Pending(EventLoop& loop, std::function<void()> on_deadline)
      : admitted(loop.now()), deadline(loop, std::move(on_deadline)) {}
};

struct ConnectionTable::Entry {
  ConnId id;
  ConnState state = ConnState::waiting_for_client;
  bool pool_failed = false;          // a pooled connection was dead: NEW from now on
  std::shared_ptr<Service> service;  // kept by relays too: their bytes count for it at the end
  ClientLink* link = nullptr;        // the session told (announced, handed_off), else null
  std::string client = "-";          // the name of the last client told (logs, metrics)
  std::unique_ptr<Pending> pending;  // until the relay starts

  // The entry's own callbacks hold the entry, not its id: the id changes when a lost session's
  // announcements are voided (rename), and the entry's timer and socket are quieted before
  // it is retired (remove), so the entry exists whenever they can run.
  Entry(EventLoop& loop, ConnId conn_id, ConnectionTable& table)
      : id(conn_id), pending(std::make_unique<Pending>(loop, [&table, this] {
          table.end_unpaired(*this,
                             state == ConnState::waiting_for_client ? FailureReason::no_client
                                                                    : FailureReason::pair_timeout,
                             "");
        })) {}
};

ConnectionTable::ConnectionTable(EventLoop& loop, Duration pair_timeout, size_t max_pending,
                                 Events events, Duration handoff_timeout)
    : loop_(loop),
      pair_timeout_(pair_timeout),
      max_pending_(max_pending),
      events_(std::move(events)),
      handoff_timeout_(handoff_timeout),
      relays_(loop, [this](const ConnId& id, const RelayOutcome& outcome,
                           Duration lasted) { on_relay_ended(id, outcome, lasted); }),
      pools_(loop, pair_timeout) {}

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
  if (is_pending(entry.state) && !is_pending(next)) --entry.service->pending;
  entry.state = next;
  if (next != ConnState::ended) ++counts_[static_cast<size_t>(next)];  // ended entries leave
}

void ConnectionTable::admit(Fd external, std::shared_ptr<Service> service,
                            std::optional<Addresses> addresses) {
  if (service->pending >= max_pending_) {
    // Shed at once: a flood of A connections must not grow the table without bound.
    set_linger_reset(external.get());
    external.reset();
    uint64_t suppressed = 0;
    if (failure_log_[static_cast<size_t>(FailureReason::max_pending)].allow(suppressed))
      TLOG_WARN("event=conn-failed reason=max-pending service={} pending={} suppressed={}",
                service->name(), service->pending, suppressed);
    ++service->counters.failed[static_cast<size_t>(FailureReason::max_pending)];
    events_.on_failure(FailureReason::max_pending);
    return;
  }
  ConnId id = ConnId::random();
  auto entry = std::make_unique<Entry>(loop_, id, *this);
  Entry* e = entry.get();
  e->service = std::move(service);
  e->pending->addresses = std::move(addresses);
  watch_external(*e, std::move(external));
  Entry& added = *entries_.emplace(id, std::move(entry)).first->second;
  ++counts_[static_cast<size_t>(ConnState::waiting_for_client)];
  ++added.service->pending;
  added.pending->deadline.arm(pair_timeout_);
  TLOG_DEBUG("event=accepted conn={} service={} pending={}", id.short_hex(), added.service->name(),
             pending());
  announce(added);
}

void ConnectionTable::watch_external(Entry& entry, Fd external) {
  entry.pending->external.emplace(loop_, std::move(external), 0, [this, e = &entry](uint32_t) {
    end_unpaired(*e, FailureReason::closed_early, "external side reset");
  });
}

bool ConnectionTable::announce(Entry& entry) {
  ClientLink* link = entry.service->pick(entry.pending->failed_at, loop_.now());
  if (!link) return false;
  if (!entry.pool_failed) {
    if (auto pooled = pools_.take(*link)) {
      hand_off(entry, *link, std::move(*pooled));
      return true;
    }
  }
  link->send_line(
      protocol::new_conn(entry.id, link->speaks_services() ? entry.service->name() : ""));
  entry.link = link;
  entry.client = link->name();
  if (entry.state != ConnState::announced) move_to(entry, ConnState::announced);
  TLOG_DEBUG("event=announced conn={} service={} client={} session={}", entry.id.short_hex(),
             entry.service->name(), entry.client, link->number());
  return true;
}

ConnectionTable::Entry& ConnectionTable::rename(const ConnId& old_id, std::string_view why) {
  auto node = entries_.extract(old_id);
  const ConnId new_id = ConnId::random();
  node.key() = new_id;
  node.mapped()->id = new_id;
  Entry& entry = *entries_.insert(std::move(node)).position->second;
  TLOG_DEBUG("event=conn-renamed conn={} new={} service={} reason={}", old_id.short_hex(),
             new_id.short_hex(), entry.service->name(), why);
  return entry;
}

void ConnectionTable::service_served(Service& service) {
  for (auto& [id, entry] : entries_)
    if (entry->state == ConnState::waiting_for_client && entry->service.get() == &service)
      announce(*entry);
}

std::vector<ConnId> ConnectionTable::link_lost(const ClientLink& link) {
  // What the lost session was told goes back under a fresh id. A DATA line for the old id may
  // still arrive (the client may be alive, only its control connection lost): it is refused as
  // unknown, so it can never be paired with a connection another session is serving.
  std::vector<ConnId> voided;
  take_from(link, nullptr, "session-lost", &voided);
  // Its pooled connections were authenticated under its key: they go with it.
  pools_.end(link);
  return voided;
}

void ConnectionTable::take_from(const ClientLink& link, const Service* service,
                                std::string_view why, std::vector<ConnId>* voided) {
  std::vector<ConnId> taken;
  for (auto& [id, entry] : entries_) {
    if (entry->link != &link || (service && entry->service.get() != service)) continue;
    if (entry->state == ConnState::announced) taken.push_back(id);
    if (entry->state != ConnState::handed_off || service) continue;
    // A lost session's handoff whose client has said TAKEN runs on: that client is alive and may
    // already be delivering the visitor's bytes. It ends as any handoff does (READY, FAIL, its
    // connection ending). One not taken (a frozen or gone client) is taken back: its pooled
    // connection is reset, so a client that reads the NEW only later cannot answer it.
    if (entry->pending->handoff->taken())
      entry->link = nullptr;
    else
      taken.push_back(id);
  }
  for (const ConnId& old_id : taken) {
    Entry& old = *entries_.at(old_id);
    if (old.state == ConnState::handed_off)
      take_back(old);
    else if (voided)
      voided->push_back(old_id);
    Entry& entry = rename(old_id, why);
    entry.link = nullptr;
    move_to(entry, ConnState::waiting_for_client);
    announce(entry);  // another client serving the service takes it at once
  }
}

void ConnectionTable::link_left(ClientLink& link, const Service& service) {
  std::vector<ConnId> taken_back;
  take_from(link, &service, "not-allowed", &taken_back);
  for (const ConnId& old_id : taken_back) link.send_line(protocol::close_conn(old_id));
}

void ConnectionTable::service_removed(const Service& service) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto next = std::next(it);
    Entry& entry = *it->second;
    if (entry.service.get() == &service && entry.state != ConnState::relaying)
      end_unpaired(entry, FailureReason::service_removed, "");
    it = next;
  }
}

const ClientLink* ConnectionTable::announced_to(const ConnId& id) const {
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second->state != ConnState::announced) return nullptr;
  return it->second->link;
}

bool ConnectionTable::claim(const ConnId& id, StreamSocket data) {
  auto it = entries_.find(id);
  // Only an announced id can be claimed: anything else was never given to a client, or is taken.
  if (it == entries_.end() || it->second->state != ConnState::announced) return false;
  Entry& entry = *it->second;
  Fd external = entry.pending->external->release();
  entry.pending->external.reset();
  // The target learns the visitor's address ahead of the visitor's bytes (the client relays
  // the header untouched). A fresh connection's send buffer always takes these few bytes.
  if (auto header = proxy_header(entry, external.get()); !header.empty() && !send_now(data, header))
    TLOG_DEBUG("event=proxy-header-unsent conn={}", id.short_hex());  // the relay sees why
  start_relay(entry, std::move(external), std::move(data));
  return true;
}

std::string ConnectionTable::proxy_header(const Entry& entry, int external) const {
  auto version = entry.service->config().send_proxy;
  if (!version) return {};
  Addresses a = entry.pending->addresses
                    ? *entry.pending->addresses
                    : Addresses{peer_address(external), local_address(external)};
  return proxy_protocol::header(*version, a.visitor, a.reached);
}

void ConnectionTable::start_relay(Entry& entry, Fd external, StreamSocket data) {
  auto waited = std::chrono::duration_cast<Duration>(loop_.now() - entry.pending->admitted);
  // What only waiting needed goes now (its external socket and handoff are gone already; the
  // deadline is not running: its callback never starts a relay).
  entry.pending->deadline.cancel();
  loop_.destroy_later(std::move(entry.pending));
  move_to(entry, ConnState::relaying);
  ++entry.service->counters.by_client[entry.client].paired;
  TLOG_DEBUG("event=paired conn={} service={} client={} waited_ms={}", entry.id.short_hex(),
             entry.service->name(), entry.client, waited.count());
  set_keepalive(data.fd.get());
  if (data.tls)
    relays_.start(entry.id, std::move(external), std::move(data.fd), TlsSide::service,
                  std::move(data.tls), data.unread);
  else
    relays_.start(entry.id, std::move(external), std::move(data.fd));
}

void ConnectionTable::hand_off(Entry& entry, ClientLink& link, WarmPools::Taken pooled) {
  Fd external = entry.pending->external->release();
  entry.pending->external.reset();
  std::string preamble =
      protocol::new_conn(entry.id, link.speaks_services() ? entry.service->name() : "") +
      proxy_header(entry, external.get());
  entry.link = &link;
  entry.client = link.name();
  entry.pending->park_id = pooled.park_id;
  entry.pending->handed_session = link.number();
  move_to(entry, ConnState::handed_off);
  TLOG_DEBUG("event=handed-off conn={} service={} client={} session={}", entry.id.short_hex(),
             entry.service->name(), entry.client, link.number());
  entry.pending->handoff = std::make_unique<PoolHandoff>(
      loop_, entry.id, std::move(external), std::move(pooled.socket), std::move(preamble),
      handoff_timeout_,
      [this, e = &entry](PoolHandoff::Result result) { on_handoff_done(*e, std::move(result)); });
  entry.pending->handoff->start();
}

void ConnectionTable::on_handoff_done(Entry& entry, PoolHandoff::Result result) {
  ++handoffs_[static_cast<size_t>(result.outcome)];
  // Called from the handoff's own handler (event_loop.hpp, the lifetime rule).
  loop_.destroy_later(std::move(entry.pending->handoff));
  if (result.outcome == HandoffOutcome::ready) {
    entry.service->counters.by_client[entry.client].bytes_to_client += result.early_bytes;
    if (events_.on_paired) events_.on_paired(result.early_bytes);
    return start_relay(entry, std::move(result.external), std::move(result.pooled));
  }
  watch_external(entry, std::move(result.external));
  switch (result.outcome) {
    case HandoffOutcome::visitor_gone:
      return end_unpaired(entry, FailureReason::closed_early, result.detail);
    case HandoffOutcome::target_failed:
      return retry_elsewhere(entry, entry.link, entry.pending->handed_session, result.detail);
    case HandoffOutcome::dead:
      return after_dead_pooled(entry, result.detail);
    case HandoffOutcome::ready:
      return;
  }
}

void ConnectionTable::after_dead_pooled(Entry& entry, std::string_view detail) {
  uint64_t suppressed = 0;
  if (dead_log_.allow(suppressed))
    TLOG_WARN("event=pool-connection-dead conn={} service={} client={} detail=\"{}\" suppressed={}",
              entry.id.short_hex(), entry.service->name(), entry.client, detail, suppressed);
  if (entry.link) {
    // Its siblings are as old: they are replaced. Other sessions serving the service are
    // preferred for a while, as after a FAIL.
    pools_.distrust(*entry.link);
    entry.service->failed_on(*entry.link, loop_.now());
  }
  entry.pool_failed = true;        // this visitor takes the NEW path
  const ConnId old_id = entry.id;  // rename() changes entry.id
  Entry& renamed = rename(old_id, "pool-dead");
  renamed.link = nullptr;
  move_to(renamed, ConnState::waiting_for_client);
  announce(renamed);
}

void ConnectionTable::take_back(Entry& entry) {
  if (!entry.pending || !entry.pending->handoff) return;
  Fd external = entry.pending->handoff->cancel();
  loop_.destroy_later(std::move(entry.pending->handoff));
  watch_external(entry, std::move(external));
}

void ConnectionTable::fail(ClientLink& from, const ConnId& id, std::string_view reason) {
  auto it = entries_.find(id);
  // A client can only give up on what it was told.
  if (it == entries_.end()) return park_failed(from, id);
  if (it->second->state != ConnState::announced || it->second->link != &from) return;
  retry_elsewhere(*it->second, &from, from.number(), reason);
}

void ConnectionTable::park_failed(ClientLink& from, const ConnId& park_id) {
  // A pooled connection the client could not open, or lost while parked. If it was just handed a
  // visitor, the client never read that NEW (it had lost the connection): the visitor is safe to
  // announce again, which the server could not know behind a proxy that keeps its side open.
  for (auto& [id, entry] : entries_)
    if (entry->state == ConnState::handed_off && entry->pending->park_id == park_id &&
        entry->link == &from) {
      Entry& handed = *entry;
      take_back(handed);
      ++handoffs_[static_cast<size_t>(HandoffOutcome::dead)];
      return after_dead_pooled(handed, "the client lost the pooled connection");
    }
  pools_.forget(from, park_id);
}

void ConnectionTable::retry_elsewhere(Entry& failed, ClientLink* from, uint64_t from_number,
                                      std::string_view reason) {
  const ConnId id = failed.id;
  if (from) failed.service->failed_on(*from, loop_.now());
  TLOG_DEBUG("event=target-failed conn={} service={} client={} detail={}", id.short_hex(),
             failed.service->name(), failed.client, reason);
  // Another client serving the service may reach its target: it gets the connection under a
  // fresh id (the failed client is done with the old one and needs no CLOSE).
  failed.pending->failed_at.push_back(from_number);
  const std::string failed_client = failed.client;
  Entry& entry = rename(id, "target-failed");
  entry.link = nullptr;
  if (!announce(entry)) return end_unpaired(entry, FailureReason::target_unreachable, reason);
  uint64_t suppressed = 0;
  if (retry_log_.allow(suppressed))
    TLOG_INFO(
        "event=conn-retried conn={} service={} failed_client={} client={} detail={} "
        "suppressed={}",
        entry.id.short_hex(), entry.service->name(), failed_client, entry.client, reason,
        suppressed);
}

void ConnectionTable::end_unpaired(Entry& entry, FailureReason failure, std::string_view detail) {
  if (entry.state == ConnState::relaying || entry.state == ConnState::ended) return;
  take_back(entry);  // a pooled connection closes: its client lets go
  const ConnId id = entry.id;
  auto it = entries_.find(id);
  // The client may be dialing for it: tell it to stop, unless the client itself gave up.
  if (entry.state == ConnState::announced && failure != FailureReason::target_unreachable &&
      entry.link)
    entry.link->send_line(protocol::close_conn(id));
  auto waited = std::chrono::duration_cast<Duration>(loop_.now() - entry.pending->admitted);
  if (failure == FailureReason::closed_early) {
    TLOG_DEBUG("event=conn-failed conn={} service={} client={} reason={} waited_ms={}",
               id.short_hex(), entry.service->name(), entry.client, to_string(failure),
               waited.count());
  } else {
    uint64_t suppressed = 0;
    if (failure_log_[static_cast<size_t>(failure)].allow(suppressed))
      TLOG_INFO(
          "event=conn-failed conn={} service={} client={} reason={}{}{} waited_ms={} "
          "suppressed={}",
          id.short_hex(), entry.service->name(), entry.client, to_string(failure),
          detail.empty() ? "" : " detail=", detail, waited.count(), suppressed);
  }
  // A connection refused by the target is reset, so the external client sees a refusal rather
  // than an empty answer.
  if (failure == FailureReason::target_unreachable) set_linger_reset(entry.pending->external->fd());
  ++entry.service->counters.failed[static_cast<size_t>(failure)];
  events_.on_failure(failure);
  remove(it);
}

void ConnectionTable::on_relay_ended(const ConnId& id, const RelayOutcome& outcome,
                                     Duration lasted) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return events_.on_relay_ended(outcome);
  Entry& entry = *it->second;
  TLOG_DEBUG(
      "event=conn-closed conn={} service={} client={} bytes_to_client={} bytes_to_external={} "
      "duration_ms={} reason=\"{}\"",
      id.short_hex(), entry.service->name(), entry.client, outcome.bytes_to_service,
      outcome.bytes_to_visitor, lasted.count(), outcome.reason);
  auto& served = entry.service->counters.by_client[entry.client];
  served.bytes_to_client += outcome.bytes_to_service;
  served.bytes_to_external += outcome.bytes_to_visitor;
  events_.on_relay_ended(outcome);
  remove(it);
}

// We may be inside the entry's own handler (its timer, its socket): the external socket is closed
// now, the entry itself is freed after this batch (event_loop.hpp, the lifetime rule).
void ConnectionTable::remove(Entries::iterator it) {
  auto entry = std::move(it->second);
  entries_.erase(it);
  move_to(*entry, ConnState::ended);
  if (Pending* pending = entry->pending.get()) {
    pending->deadline.cancel();
    if (pending->handoff) {
      pending->handoff->cancel();  // the external socket it gives back closes here
      loop_.destroy_later(std::move(pending->handoff));
    }
    if (pending->external) pending->external->close();
  }
  loop_.destroy_later(std::move(entry));
}

void ConnectionTable::drain(std::function<void()> drained) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto next = std::next(it);
    if (it->second->state != ConnState::relaying) remove(it);
    it = next;
  }
  pools_.close_all();
  relays_.when_drained(std::move(drained));
}

void ConnectionTable::abort_relays() {
  relays_.abort_all("server stopping");
}

}  // namespace tunnel::server
