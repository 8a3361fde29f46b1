// The life of an A connection on the server until it is paired (DESIGN §3):
//   admit -> waiting_for_client -> announced -> claimed by DATA <id>    (handed to a relay)
//   any state -> ended: pair-timeout / no-client, FAIL from the client, A closed early,
//   max-pending.
#include "pending_table.hpp"

#include "tunnel/protocol.hpp"
#include "tunnel/socket.hpp"

namespace tunnel::server {

struct PendingTable::Entry {
  ConnId id;
  PendingState state = PendingState::waiting_for_client;
  Clock::time_point admitted;
  // Interest is empty: A's bytes stay in the kernel until pairing, and only a reset or error
  // (always reported) tells us the external side is gone. A FIN alone is not: a half-closed request
  // still deserves its answer.
  Channel external;
  Timer deadline;

  Entry(EventLoop& loop, ConnId conn_id, Fd fd, std::function<void()> on_gone,
        std::function<void()> on_deadline)
      : id(conn_id),
        admitted(loop.now()),
        external(loop, std::move(fd), 0, [on_gone](uint32_t) { on_gone(); }),
        deadline(loop, std::move(on_deadline)) {}
};

PendingTable::PendingTable(EventLoop& loop, ClientLink& client, Duration pair_timeout,
                           size_t max_pending, OnFailure on_failure)
    : loop_(loop),
      client_(client),
      pair_timeout_(pair_timeout),
      max_pending_(max_pending),
      on_failure_(std::move(on_failure)) {}

PendingTable::~PendingTable() = default;

void PendingTable::admit(Fd external) {
  if (entries_.size() >= max_pending_) {
    // Shed at once: a flood of A connections must not grow the table without bound.
    set_linger_reset(external.get());
    external.reset();
    uint64_t suppressed = 0;
    auto& limit = failure_log_[static_cast<int>(FailureReason::max_pending)];
    if (limit.allow(suppressed))
      TLOG_WARN("event=conn-failed reason=max-pending pending={} suppressed={}", entries_.size(),
                suppressed);
    on_failure_(FailureReason::max_pending);
    return;
  }
  ConnId id = ConnId::random();
  auto entry = std::make_unique<Entry>(
      loop_, id, std::move(external),
      [this, id] { end(id, FailureReason::closed_early, "external side reset"); },
      [this, id] {
        auto it = entries_.find(id);
        if (it == entries_.end()) return;
        end(id,
            it->second->state == PendingState::announced ? FailureReason::pair_timeout
                                                         : FailureReason::no_client,
            "");
      });
  entry->deadline.arm(pair_timeout_);
  Entry& added = *entries_.emplace(id, std::move(entry)).first->second;
  TLOG_DEBUG("event=accepted conn={} pending={}", id.short_hex(), entries_.size());
  if (client_.online()) announce(added);
}

void PendingTable::announce(Entry& entry) {
  if (!client_.online()) return;
  client_.send_line(protocol::new_conn(entry.id));
  entry.state = PendingState::announced;
  TLOG_DEBUG("event=announced conn={}", entry.id.short_hex());
}

void PendingTable::client_online() {
  for (auto& [id, entry] : entries_)
    if (entry->state == PendingState::waiting_for_client) announce(*entry);
}

void PendingTable::client_lost() {
  for (auto& [id, entry] : entries_) entry->state = PendingState::waiting_for_client;
}

std::optional<Fd> PendingTable::claim(const ConnId& id) {
  auto it = entries_.find(id);
  // Only an announced id can be claimed: anything else was never given to a client.
  if (it == entries_.end() || it->second->state != PendingState::announced) return std::nullopt;
  Fd external = it->second->external.release();
  auto waited = std::chrono::duration_cast<Duration>(loop_.now() - it->second->admitted);
  entries_.erase(it);
  TLOG_DEBUG("event=paired conn={} waited_ms={}", id.short_hex(), waited.count());
  return external;
}

void PendingTable::close_all() {
  entries_.clear();
}

void PendingTable::fail(const ConnId& id, std::string_view reason) {
  end(id, FailureReason::target_unreachable, reason);
}

void PendingTable::end(const ConnId& id, FailureReason failure, std::string_view detail) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  auto entry = std::move(it->second);
  entries_.erase(it);
  // The client may be dialing for it: tell it to stop, unless the client itself gave up.
  if (entry->state == PendingState::announced && failure != FailureReason::target_unreachable)
    client_.send_line(protocol::close_conn(id));
  auto waited = std::chrono::duration_cast<Duration>(loop_.now() - entry->admitted);
  if (failure == FailureReason::closed_early) {
    TLOG_DEBUG("event=conn-failed conn={} reason={} waited_ms={}", id.short_hex(),
               to_string(failure), waited.count());
  } else {
    uint64_t suppressed = 0;
    if (failure_log_[static_cast<int>(failure)].allow(suppressed))
      TLOG_INFO("event=conn-failed conn={} reason={}{}{} waited_ms={} suppressed={}",
                id.short_hex(), to_string(failure), detail.empty() ? "" : " detail=", detail,
                waited.count(), suppressed);
  }
  on_failure_(failure);
  // The external socket closes with `entry`. A connection refused by the target is reset, so the
  // external client sees a refusal rather than an empty answer.
  if (failure == FailureReason::target_unreachable) set_linger_reset(entry->external.fd());
  entry->deadline.cancel();
}

}  // namespace tunnel::server
