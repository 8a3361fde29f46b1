// Warm pools: PARK ids out, parked connections in, refills.
#include "warm_pools.hpp"

#include <algorithm>
#include <vector>

#include "tunnel/channel.hpp"
#include "tunnel/log.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/socket.hpp"
#include "tunnel/timer.hpp"

namespace tunnel::server {

// A data connection waiting for a visitor. The client sends nothing on it until it is handed one,
// so any readability (an end, a reset, stray bytes) means it is of no use any more.
struct WarmPools::Parked {
  ConnId id;
  Channel channel;
  std::unique_ptr<tls::Stream> tls;  // after channel: freed first, while the socket is open
  Parked(EventLoop& loop, const ConnId& parked_id, Fd fd, std::unique_ptr<tls::Stream> stream,
         WarmPools& pools, Pool& pool)
      : id(parked_id),
        channel(loop, std::move(fd), kReadable,
                [this, &pools, &pool](uint32_t) { pools.on_parked_readable(pool, *this); }),
        tls(std::move(stream)) {}
};

struct WarmPools::Pool {
  ClientLink* link;
  size_t wanted = 0;
  std::unordered_map<ConnId, Clock::time_point, ConnIdHash> issued;  // PARK told, not yet here
  std::vector<std::unique_ptr<Parked>> parked;                       // oldest first
  Timer refill_pause;
  Timer expiry;
  Pool(EventLoop& loop, ClientLink& owner, std::function<void()> on_refill,
       std::function<void()> on_expiry)
      : link(&owner),
        refill_pause(loop, std::move(on_refill)),
        expiry(loop, std::move(on_expiry)) {}
  size_t kept() const { return issued.size() + parked.size(); }
};

WarmPools::WarmPools(EventLoop& loop, Duration park_timeout)
    : loop_(loop), park_timeout_(park_timeout) {}

WarmPools::~WarmPools() {
  close_all();
}

void WarmPools::request(ClientLink& link, size_t wanted) {
  auto it = pools_.find(&link);
  if (it == pools_.end()) {
    if (wanted == 0) return;
    auto created = std::make_unique<Pool>(
        loop_, link, [this, &link] { refill(*pools_.at(&link)); },
        [this, &link] {
          Pool& pool = *pools_.at(&link);
          // Ids told with PARK whose connection never came are void; their places are asked
          // for again after the pause.
          size_t expired = 0;
          const auto cutoff = loop_.now() - park_timeout_;
          for (auto id = pool.issued.begin(); id != pool.issued.end();) {
            if (id->second <= cutoff) {
              issued_.erase(id->first);
              id = pool.issued.erase(id);
              ++expired;
            } else {
              ++id;
            }
          }
          if (!pool.issued.empty()) pool.expiry.arm(park_timeout_);
          if (expired) lost(pool, expired);
        });
    it = pools_.emplace(&link, std::move(created)).first;
  }
  Pool& pool = *it->second;
  // One line per change, and a client repeating POOL cannot flood the log.
  uint64_t suppressed = 0;
  if (pool.wanted != wanted && request_log_.allow(suppressed))
    TLOG_INFO("event=pool-requested client={} session={} size={} suppressed={}", link.name(),
              link.number(), wanted, suppressed);
  pool.wanted = wanted;
  // A smaller pool lets the oldest parked connections go (ids already told are parked or refused
  // when their connection comes).
  while (pool.parked.size() > wanted) drop_parked(pool, *pool.parked.front());
  refill(pool);
}

void WarmPools::refill(Pool& pool) {
  if (!pool.link->open()) return;
  while (pool.kept() < pool.wanted) {
    const ConnId id = ConnId::random();
    pool.issued.emplace(id, loop_.now());
    issued_.emplace(id, &pool);
    pool.link->send_line(protocol::park(id));
  }
  if (!pool.issued.empty() && !pool.expiry.armed()) pool.expiry.arm(park_timeout_);
}

void WarmPools::lost(Pool& pool, size_t count) {
  lost_total_ += count;
  if (!pool.refill_pause.armed()) pool.refill_pause.arm(kRefillPause);
}

const ClientLink* WarmPools::issued_to(const ConnId& id) const {
  auto it = issued_.find(id);
  return it == issued_.end() ? nullptr : it->second->link;
}

bool WarmPools::park(const ConnId& id, StreamSocket socket) {
  auto it = issued_.find(id);
  if (it == issued_.end()) return false;
  Pool& pool = *it->second;
  issued_.erase(it);
  pool.issued.erase(id);
  // A client says nothing after its DATA line until it is handed a visitor; a pool that shrank
  // meanwhile has no room for it.
  if (!socket.unread.empty() || pool.parked.size() >= pool.wanted) {
    lost(pool, 1);
    return false;
  }
  set_keepalive(socket.fd.get());
  // The handoff writes the NEW line and the visitor's bytes apart: neither may wait for an ACK.
  set_nodelay(socket.fd.get());
  TLOG_DEBUG("event=pool-parked client={} session={} conn={} parked={}", pool.link->name(),
             pool.link->number(), id.short_hex(), pool.parked.size() + 1);
  pool.parked.push_back(std::make_unique<Parked>(loop_, id, std::move(socket.fd),
                                                 std::move(socket.tls), *this, pool));
  return true;
}

void WarmPools::on_parked_readable(Pool& pool, Parked& parked) {
  if (parked.tls) {
    // Nothing is expected; a TLS stream may still have something of its own to take in.
    char nothing[64];
    auto result = parked.tls->read({nothing, sizeof nothing});
    if (result.status == tls::IoStatus::want_read) return;
  }
  TLOG_DEBUG("event=pool-parked-closed client={} conn={}", pool.link->name(),
             parked.id.short_hex());
  drop_parked(pool, parked);
  lost(pool, 1);
}

std::optional<WarmPools::Taken> WarmPools::take(ClientLink& link) {
  auto it = pools_.find(&link);
  if (it == pools_.end() || it->second->parked.empty()) return std::nullopt;
  Pool& pool = *it->second;
  std::unique_ptr<Parked> parked = std::move(pool.parked.back());
  pool.parked.pop_back();
  Taken taken{StreamSocket{parked->channel.release(), std::move(parked->tls), {}}, parked->id};
  // We may be inside another handler of this batch; the entry holds no socket any more.
  loop_.destroy_later(std::move(parked));
  ++taken_total_;
  refill(pool);
  return taken;
}

void WarmPools::forget(const ClientLink& link, const ConnId& id) {
  auto it = issued_.find(id);
  if (it == issued_.end()) {
    // Lost while parked: the client saw it end (behind a proxy the server may not).
    auto pool = pools_.find(&link);
    if (pool == pools_.end()) return;
    for (auto& parked : pool->second->parked)
      if (parked->id == id) {
        drop_parked(*pool->second, *parked);
        return lost(*pool->second, 1);
      }
    return;
  }
  if (it->second->link != &link) return;
  Pool& pool = *it->second;
  issued_.erase(it);
  pool.issued.erase(id);
  lost(pool, 1);
}

void WarmPools::distrust(ClientLink& link) {
  auto it = pools_.find(&link);
  if (it == pools_.end()) return;
  Pool& pool = *it->second;
  const size_t dropped = pool.parked.size();
  while (!pool.parked.empty()) drop_parked(pool, *pool.parked.front());
  lost(pool, dropped);
}

void WarmPools::drop_parked(Pool& pool, Parked& parked) {
  auto it = std::find_if(pool.parked.begin(), pool.parked.end(),
                         [&](const auto& candidate) { return candidate.get() == &parked; });
  if (it == pool.parked.end()) return;
  std::unique_ptr<Parked> gone = std::move(*it);
  pool.parked.erase(it);
  // We may be inside its own handler (event_loop.hpp, the lifetime rule).
  gone->channel.close();
  loop_.destroy_later(std::move(gone));
}

void WarmPools::end(const ClientLink& link) {
  auto it = pools_.find(&link);
  if (it == pools_.end()) return;
  Pool& pool = *it->second;
  for (const auto& [id, when] : pool.issued) issued_.erase(id);
  while (!pool.parked.empty()) drop_parked(pool, *pool.parked.front());
  // The pool may be inside one of its own timers' callbacks: freed after this batch.
  pool.refill_pause.cancel();
  pool.expiry.cancel();
  loop_.destroy_later(std::move(it->second));
  pools_.erase(it);
}

void WarmPools::close_all() {
  while (!pools_.empty()) end(*pools_.begin()->first);
}

size_t WarmPools::parked() const {
  size_t total = 0;
  for (const auto& [link, pool] : pools_) total += pool->parked.size();
  return total;
}

size_t WarmPools::parked(const ClientLink& link) const {
  auto it = pools_.find(&link);
  return it == pools_.end() ? 0 : it->second->parked.size();
}

}  // namespace tunnel::server
