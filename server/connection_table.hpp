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
#include "service.hpp"
#include "tunnel/address.hpp"
#include "tunnel/conn_id.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/log.hpp"
#include "tunnel/relay_set.hpp"
#include "tunnel/stream_socket.hpp"

namespace tunnel::server {

enum class ConnState {
  waiting_for_client,  // no session has been told (none serves the service, or the one told went
                       // away or failed)
  announced,           // NEW <id> sent to one session; waiting for DATA <id>
  relaying,            // paired with the client's data connection; bytes flow
  ended,               // finished; the entry leaves the table in the same step
  // Room here for the pool (handed to a pooled link).
};
inline constexpr size_t kConnStates = static_cast<size_t>(ConnState::ended) + 1;
std::string_view to_string(ConnState state);

class ConnectionTable {
 public:
  struct Events {
    std::function<void(FailureReason)> on_failure;            // ended without a relay
    std::function<void(const RelayOutcome&)> on_relay_ended;  // for the byte counters
  };

  ConnectionTable(EventLoop& loop, Duration pair_timeout, size_t max_pending, Events events);
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
    return count(ConnState::waiting_for_client) + count(ConnState::announced);
  }
  size_t relaying() const { return count(ConnState::relaying); }
  size_t count(ConnState state) const { return counts_[static_cast<size_t>(state)]; }
  std::optional<ConnState> state_of(const ConnId& id) const;
  const RelaySet& relays() const { return relays_; }

 private:
  struct Entry;
  using Entries = std::unordered_map<ConnId, std::unique_ptr<Entry>, ConnIdHash>;

  void move_to(Entry& entry, ConnState next);
  // Tells a session serving the entry's service about it, if one can take it (false: none).
  bool announce(Entry& entry);
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
  RelaySet relays_;
  log::RateLimit failure_log_[kFailureReasons];
  log::RateLimit retry_log_;
};

}  // namespace tunnel::server
