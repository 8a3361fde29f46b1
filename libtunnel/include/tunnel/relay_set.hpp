// The relays of one daemon, by connection id: the pipe pool and its trimming, live byte totals,
// and the drain/abort used at shutdown. Plain relays (Relay, splice) and relays with one TLS side
// (TlsRelay) live in the same set, under the same ids, and are reported alike.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "tunnel/conn_id.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/event_loop.hpp"
#include "tunnel/fd.hpp"
#include "tunnel/pipe_pool.hpp"
#include "tunnel/relay.hpp"
#include "tunnel/timer.hpp"
#include "tunnel/tls_relay.hpp"
#include "tunnel/tls_stream.hpp"

namespace tunnel {

class RelaySet {
 public:
  // Told once per relay after it has ended and left the set, from the loop (never inside
  // start/abort).
  using OnEnded =
      std::function<void(const ConnId& id, const RelayOutcome& outcome, Duration lasted)>;

  // Owns a PipePool and a PeriodicTimer that calls trim_idle every PipePool::kTrimInterval.
  RelaySet(EventLoop& loop, OnEnded on_ended);
  ~RelaySet();
  RelaySet(const RelaySet&) = delete;
  RelaySet& operator=(const RelaySet&) = delete;

  // Starts relaying under `id` (which must not be in the set).
  void start(const ConnId& id, Fd visitor_side, Fd service_side);
  // The same with one TLS side: `stream` is over the socket of the side `tls_side` names, its
  // handshake done; `initial` is plaintext already read from it, delivered first to the other side
  // (TlsRelay). The relay owns both sockets and the stream.
  void start(const ConnId& id, Fd visitor_side, Fd service_side, TlsSide tls_side,
             std::unique_ptr<tls::Stream> stream, std::string_view initial = {});
  bool contains(const ConnId& id) const { return relays_.contains(id); }
  // Resets both sides of that relay now and removes it from the set at once (contains() is false
  // on return); on_ended still reports it, from the loop. No-op for an unknown id.
  void abort(const ConnId& id, std::string reason);
  // abort() for every relay.
  void abort_all(std::string reason);
  size_t size() const { return relays_.size(); }

  // Bytes of relays still running, summed (for metrics read at scrape time).
  uint64_t live_bytes_to_service() const;
  uint64_t live_bytes_to_visitor() const;

  // Calls `drained` once the set is empty and every relay that left it has been reported: at once
  // if that is already so, else from the loop right after the last relay ended (after its
  // on_ended).
  void when_drained(std::function<void()> drained);

  PipePool& pipes() { return pipes_; }

 private:
  // Either kind of relay; both have abort() and the byte counts, and are retired alike.
  using AnyRelay = std::variant<std::unique_ptr<Relay>, std::unique_ptr<TlsRelay>>;
  // One per relay for as long as it runs, so kept small (its map node is a 64-byte malloc chunk,
  // 80 with the start time, which only the relay's `done` needs: it has its own copy).
  struct Entry {
    AnyRelay relay;
    uint64_t serial = 0;  // tells this relay from an earlier one under the same id
  };
  // The `done` of the relay started now under `id`.
  std::function<void(const RelayOutcome&)> done_for(const ConnId& id, uint64_t serial,
                                                    Clock::time_point started);
  void add(const ConnId& id, AnyRelay relay, uint64_t serial);
  void ended(const ConnId& id, uint64_t serial, Clock::time_point started,
             const RelayOutcome& outcome);
  void retire(Entry& entry);

  EventLoop& loop_;
  OnEnded on_ended_;
  PipePool pipes_;  // before relays_: a relay gives its pipe back when it is destroyed
  PeriodicTimer trimmer_;
  std::unordered_map<ConnId, Entry, ConnIdHash> relays_;
  size_t unreported_ = 0;  // started and not yet told to on_ended (in the set or just aborted)
  uint64_t next_serial_ = 1;
  std::vector<std::function<void()>> drained_;
  // A relay's `done` runs deferred, possibly after this set is gone: it checks this first.
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

}  // namespace tunnel
