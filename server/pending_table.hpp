// External (A) connections waiting for the client's data connection, by connection ID. This is the
// server's per-connection state machine; pending_table.cpp holds every transition.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "client_link.hpp"
#include "failure_reason.hpp"
#include "tunnel/channel.hpp"
#include "tunnel/conn_id.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/log.hpp"
#include "tunnel/timer.hpp"

namespace tunnel::server {

enum class PendingState {
  waiting_for_client,  // no client has been told (none online, or the one told went away)
  announced,           // NEW <id> sent; waiting for DATA <id>
};

class PendingTable {
 public:
  // Told of every connection that ends unpaired (for counting).
  using OnFailure = std::function<void(FailureReason)>;

  PendingTable(EventLoop& loop, ClientLink& client, Duration pair_timeout, size_t max_pending,
               OnFailure on_failure);
  ~PendingTable();

  // A connection was accepted on A.
  void admit(Fd external);
  // A client came online: every waiting connection is announced to it.
  void client_online();
  // The client went away: what it was told is void; those connections wait for the next one.
  void client_lost();
  // DATA <id> arrived. Returns the A socket and forgets the id, or nothing if the id is not
  // pending.
  std::optional<Fd> claim(const ConnId& id);
  // FAIL <id> <reason> arrived from the client.
  void fail(const ConnId& id, std::string_view reason);

  // Closes every waiting connection (shutting down).
  void close_all();

  size_t size() const { return entries_.size(); }

 private:
  struct Entry;
  void end(const ConnId& id, FailureReason failure, std::string_view detail);
  void announce(Entry& entry);

  EventLoop& loop_;
  ClientLink& client_;
  Duration pair_timeout_;
  size_t max_pending_;
  OnFailure on_failure_;
  std::unordered_map<ConnId, std::unique_ptr<Entry>, ConnIdHash> entries_;
  log::RateLimit failure_log_[kFailureReasons];
};

}  // namespace tunnel::server
