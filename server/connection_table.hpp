// Every external (A) connection of the server, by connection id, from accept to the end of its
// relay: the server's per-connection state machine. connection_table.cpp holds every transition
// (docs/ARCHITECTURE.md, "The server's connection table").
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "client_link.hpp"
#include "failure_reason.hpp"
#include "pool_handoff.hpp"
#include "service.hpp"
#include "tunnel/address.hpp"
#include "tunnel/conn_id.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/log.hpp"
#include "tunnel/relay_set.hpp"
#include "tunnel/stream_socket.hpp"
#include "warm_pools.hpp"

namespace tunnel::server {

enum class ConnState {
  waiting_for_client,  // no session has been told (none serves the service, or the one told went
                       // away or failed)
  announced,           // NEW <id> sent to one session; waiting for DATA <id>
  handed_off,          // given to one of a session's pooled data connections; waiting for READY
  relaying,            // paired with the client's data connection; bytes flow
  ended,               // finished; the entry leaves the table in the same step
};
inline constexpr size_t kConnStates = static_cast<size_t>(ConnState::ended) + 1;
std::string_view to_string(ConnState state);

class ConnectionTable {
 public:
  struct Events {
    std::function<void(FailureReason)> on_failure;            // ended without a relay
    std::function<void(const RelayOutcome&)> on_relay_ended;  // for the byte counters
    // A handoff to a pooled connection became a relay, after `early_bytes` of the visitor's had
    // gone ahead (the relay's byte counts start after them).
    std::function<void(uint64_t early_bytes)> on_paired;
  };

  // `handoff_timeout`: how long a pooled data connection has to answer TAKEN before it counts as
  // dead (the server's probe timeout: a live client answers within it).
  ConnectionTable(EventLoop& loop, Duration pair_timeout, size_t max_pending, Events events,
                  Duration handoff_timeout = std::chrono::seconds(1));
  ~ConnectionTable();

  // The two addresses of an external connection: the visitor's and the one it reached (from a
  // PROXY header when the service accepts one). Unknown: read from the socket when needed.
  struct Addresses {
    SocketAddress visitor;
    SocketAddress reached;
  };
  // A connection for `service` was accepted on its A listener.
  void admit(Fd external, std::shared_ptr<Service> service,
             std::optional<Addresses> addresses = std::nullopt);
  // A session started serving `service`: the connections waiting for one are announced.
  void service_served(Service& service);
  // A session ended (it serves nothing any more). What it was told goes back to waiting under
  // fresh ids and is announced to another session serving the service, if any. Returns the old
  // ids, for the next session of the same client to be told CLOSE.
  std::vector<ConnId> link_lost(const ClientLink& link);
  // `link` may no longer serve `service` (a reload): what it was told for it and has not claimed
  // is taken back (CLOSE) and announced to another session serving it, under a fresh id.
  void link_left(ClientLink& link, const Service& service);
  // The service is gone (reload): its connections not yet relaying end; relays run on.
  void service_removed(const Service& service);
  // The session an announced id was told to, or null (unknown id, waiting, relaying).
  const ClientLink* announced_to(const ConnId& id) const;
  // DATA <id> arrived on `data`. Pairs and starts the relay when the id was announced; otherwise
  // returns false and `data` is closed by the caller dropping it.
  bool claim(const ConnId& id, StreamSocket data);
  // FAIL <id> <reason> arrived from `from`: another session serving the service gets the
  // connection (under a fresh id) if there is one not yet tried; otherwise it ends.
  void fail(ClientLink& from, const ConnId& id, std::string_view reason);

  // Shutting down: ends every connection not yet relaying (without counting it as failed), then
  // calls `drained` once the relays have finished.
  void drain(std::function<void()> drained);
  // Resets every relay still running.
  void abort_relays();

  size_t pending() const {
    return count(ConnState::waiting_for_client) + count(ConnState::announced) +
           count(ConnState::handed_off);
  }
  size_t relaying() const { return count(ConnState::relaying); }
  size_t count(ConnState state) const { return counts_[static_cast<size_t>(state)]; }
  std::optional<ConnState> state_of(const ConnId& id) const;
  const RelaySet& relays() const { return relays_; }
  // The sessions' warm pools: B's gate parks connections here, sessions size them.
  WarmPools& pools() { return pools_; }
  const WarmPools& pools() const { return pools_; }
  // Handoffs to pooled connections that ended so, since start.
  uint64_t handoffs(HandoffOutcome outcome) const {
    return handoffs_[static_cast<size_t>(outcome)];
  }

 private:
  struct Pending;
  struct Entry;
  using Entries = std::unordered_map<ConnId, std::unique_ptr<Entry>, ConnIdHash>;

  void move_to(Entry& entry, ConnState next);
  // Tells a session serving the entry's service about it, if one can take it (false: none): hands
  // it to one of the session's pooled connections if there is one, else sends NEW.
  bool announce(Entry& entry);
  void hand_off(Entry& entry, ClientLink& link, WarmPools::Taken pooled);
  void on_handoff_done(Entry& entry, PoolHandoff::Result result);
  // Stops a handoff in progress (the pooled connection closes) and watches the external side again.
  void take_back(Entry& entry);
  // Watches `external` for a reset while the entry waits (no read: its bytes stay in the kernel).
  void watch_external(Entry& entry, Fd external);
  // The session told `entry` could not reach its target: another serving the service gets it
  // under a fresh id, if one has not tried; else it ends.
  // `from` may be null (its session has ended since); `from_number` is its session number.
  void retry_elsewhere(Entry& entry, ClientLink* from, uint64_t from_number,
                       std::string_view reason);
  // FAIL <id> for no entry: a PARK id (see the .cpp).
  void park_failed(ClientLink& from, const ConnId& park_id);
  // The pooled connection of a handoff is of no use (dead, lost): announced again, with NEW.
  void after_dead_pooled(Entry& entry, std::string_view detail);
  // The PROXY header the entry's service sends to its target, or empty.
  std::string proxy_header(const Entry& entry, int external) const;
  // Pairs the entry's external side with `data` and starts the relay.
  void start_relay(Entry& entry, Fd external, StreamSocket data);
  // A session gave up what it had (lost: `service` null; or no longer allowed to serve `service`):
  // what it was told with NEW goes back to waiting under a fresh id and is announced again. A
  // handoff its client has said TAKEN for is never taken back (that client may already be
  // delivering the visitor's bytes: a second attempt could deliver them twice); nor is any handoff
  // on a reload. A lost session's handoffs not yet taken are (see the .cpp).
  void take_from(const ClientLink& link, const Service* service, std::string_view why,
                 std::vector<ConnId>* voided);
  // Gives the entry a fresh id (what it was told under the old one is void); returns the entry.
  Entry& rename(const ConnId& old_id, std::string_view why);
  void end_unpaired(Entry& entry, FailureReason failure, std::string_view detail);
  void on_relay_ended(const ConnId& id, const RelayOutcome& outcome, Duration lasted);
  void remove(Entries::iterator it);

  EventLoop& loop_;
  Duration pair_timeout_;
  size_t max_pending_;
  Events events_;
  Entries entries_;
  std::array<size_t, kConnStates> counts_{};
  Duration handoff_timeout_;
  RelaySet relays_;
  WarmPools pools_;
  std::array<uint64_t, 4> handoffs_{};
  log::RateLimit failure_log_[kFailureReasons];
  log::RateLimit retry_log_;
  log::RateLimit dead_log_;
};

}  // namespace tunnel::server
