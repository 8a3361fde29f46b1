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
#include "tunnel/conn_id.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/log.hpp"
#include "tunnel/relay_set.hpp"
#include "tunnel/stream_socket.hpp"

namespace tunnel::server {

enum class ConnState {
  waiting_for_client,  // no client has been told (none online, or the one told went away)
  announced,           // NEW <id> sent; waiting for DATA <id>
  relaying,            // paired with the client's data connection; bytes flow
  ended,               // finished; the entry leaves the table in the same step
  // Room here for the pool (handed to a pooled link) and for a service per entry.
};
inline constexpr size_t kConnStates = static_cast<size_t>(ConnState::ended) + 1;
std::string_view to_string(ConnState state);

class ConnectionTable {
 public:
  struct Events {
    std::function<void(FailureReason)> on_failure;            // ended without a relay
    std::function<void(const RelayOutcome&)> on_relay_ended;  // for the byte counters
  };

  ConnectionTable(EventLoop& loop, ClientLink& client, Duration pair_timeout, size_t max_pending,
                  Events events);
  ~ConnectionTable();

  // A connection was accepted on A.
  void admit(Fd external);
  // A client came online: every connection waiting for one is announced to it.
  void client_online();
  // The client went away: what it was told is void. Those connections wait for the next client
  // under fresh ids; the next client is first told CLOSE for the old ones.
  void client_lost();
  // DATA <id> arrived on `data`. Pairs and starts the relay when the id was announced; otherwise
  // returns false and `data` is closed by the caller dropping it.
  bool claim(const ConnId& id, StreamSocket data);
  // FAIL <id> <reason> arrived from the client.
  void fail(const ConnId& id, std::string_view reason);

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
  void announce(Entry& entry);
  void end_unpaired(Entry& entry, FailureReason failure, std::string_view detail);
  void on_relay_ended(const ConnId& id, const RelayOutcome& outcome, Duration lasted);
  void remove(Entries::iterator it);

  EventLoop& loop_;
  ClientLink& client_;
  Duration pair_timeout_;
  size_t max_pending_;
  Events events_;
  Entries entries_;
  std::array<size_t, kConnStates> counts_{};
  // Ids a lost session was told, to be disowned (CLOSE) to the next one.
  std::vector<ConnId> disowned_;
  RelaySet relays_;
  log::RateLimit failure_log_[kFailureReasons];
};

}  // namespace tunnel::server
