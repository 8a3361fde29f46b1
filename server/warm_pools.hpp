// Every session's warm pool (docs/PROTOCOL.md, "Warm pool"): the ids the server told it to PARK,
// the data connections parked under them, and their refills. A parked connection is a socket and
// nothing else: no relay buffer and no pipe until a visitor is handed to it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>

#include "client_link.hpp"
#include "tunnel/conn_id.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/event_loop.hpp"
#include "tunnel/log.hpp"
#include "tunnel/stream_socket.hpp"

namespace tunnel::server {

class WarmPools {
 public:
  // `park_timeout`: how long an id told with PARK waits for its connection before it is void.
  WarmPools(EventLoop& loop, Duration park_timeout);
  ~WarmPools();
  WarmPools(const WarmPools&) = delete;
  WarmPools& operator=(const WarmPools&) = delete;

  // POOL <n> from `link`, `wanted` already bounded by its cap: from now on that many connections
  // are kept parked or on their way (PARK lines are sent for the missing ones).
  void request(ClientLink& link, size_t wanted);
  // The session a PARK id was told to and that still waits for its connection, or null.
  const ClientLink* issued_to(const ConnId& id) const;
  // DATA <id> for a PARK id. False when the id waits for nothing (the caller closes `socket`).
  bool park(const ConnId& id, StreamSocket socket);
  // A parked connection of `link`'s, the most recently parked first (the likeliest to be alive),
  // with the PARK id it came under; its replacement is asked for at once. None when empty.
  struct Taken {
    StreamSocket socket;
    ConnId park_id;
  };
  std::optional<Taken> take(ClientLink& link);
  // FAIL <id> for a PARK id: `link` could not open that connection, or lost it while parked; it
  // is closed if here and asked for again later.
  void forget(const ClientLink& link, const ConnId& id);
  // A connection taken from `link`'s pool turned out dead: the pool's other parked connections
  // are as old or older, so they are dropped and asked for again (after a pause, so that a
  // client whose pooled connections keep dying cannot make the server spin).
  void distrust(ClientLink& link);
  // The session ended: its parked connections close and the ids it was told are void.
  void end(const ClientLink& link);
  // Shutting down: every parked connection closes.
  void close_all();

  size_t parked() const;
  size_t parked(const ClientLink& link) const;
  // Counters for the metrics.
  uint64_t taken_total() const { return taken_total_; }
  uint64_t lost_total() const { return lost_total_; }

  // How long a pool waits before it asks again for connections it lost (closed while parked,
  // never opened, distrusted), so that losses cannot turn into a storm of PARK lines.
  static constexpr auto kRefillPause = std::chrono::seconds(1);

 private:
  struct Parked;
  struct Pool;
  void lost(Pool& pool, size_t count);
  void refill(Pool& pool);
  void drop_parked(Pool& pool, Parked& parked);
  void on_parked_readable(Pool& pool, Parked& parked);

  EventLoop& loop_;
  Duration park_timeout_;
  std::unordered_map<const ClientLink*, std::unique_ptr<Pool>> pools_;
  std::unordered_map<ConnId, Pool*, ConnIdHash> issued_;
  uint64_t taken_total_ = 0;
  uint64_t lost_total_ = 0;
  log::RateLimit request_log_;
};

}  // namespace tunnel::server
