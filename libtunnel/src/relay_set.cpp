// The daemon's relays by id: starting, reporting the ones that ended, aborting, draining.
#include "tunnel/relay_set.hpp"

#include <cassert>
#include <chrono>
#include <utility>
#include <variant>

namespace tunnel {

RelaySet::RelaySet(EventLoop& loop, OnEnded on_ended)
    : loop_(loop),
      on_ended_(std::move(on_ended)),
      trimmer_(loop, PipePool::kTrimInterval, [this] { pipes_.trim_idle(); }) {
  trimmer_.start();
}

RelaySet::~RelaySet() = default;

void RelaySet::start(const ConnId& id, Fd visitor_side, Fd service_side) {
  assert(!contains(id) && "a relay id is started at most once while it is in the set");
  const uint64_t serial = next_serial_++;
  const Clock::time_point started = loop_.now();
  auto relay = std::make_unique<Relay>(loop_, pipes_, std::move(visitor_side),
                                       std::move(service_side), done_for(id, serial, started));
  add(id, std::move(relay), serial);
}

void RelaySet::start(const ConnId& id, Fd visitor_side, Fd service_side, TlsSide tls_side,
                     std::unique_ptr<tls::Stream> stream, std::string_view initial) {
  assert(!contains(id) && "a relay id is started at most once while it is in the set");
  const uint64_t serial = next_serial_++;
  const Clock::time_point started = loop_.now();
  auto relay =
      std::make_unique<TlsRelay>(loop_, std::move(visitor_side), std::move(service_side), tls_side,
                                 std::move(stream), initial, done_for(id, serial, started));
  add(id, std::move(relay), serial);
}

std::function<void(const RelayOutcome&)> RelaySet::done_for(const ConnId& id, uint64_t serial,
                                                            Clock::time_point started) {
  return [this, alive = std::weak_ptr<int>(alive_), id, serial, started](const RelayOutcome& o) {
    if (alive.lock()) ended(id, serial, started, o);
  };
}

void RelaySet::add(const ConnId& id, AnyRelay relay, uint64_t serial) {
  // A duplicate id breaks the contract: the newcomer's sockets are closed by its destructor.
  if (!relays_.try_emplace(id, Entry{std::move(relay), serial}).second) return;
  ++unreported_;
}

void RelaySet::abort(const ConnId& id, std::string reason) {
  auto it = relays_.find(id);
  if (it == relays_.end()) return;
  Entry entry = std::move(it->second);
  relays_.erase(it);
  // The relay defers its `done`, which reports it to on_ended from the loop.
  std::visit([&](auto& relay) { relay->abort(std::move(reason)); }, entry.relay);
  retire(entry);
}

void RelaySet::abort_all(std::string reason) {
  auto all = std::move(relays_);
  relays_.clear();
  for (auto& [id, entry] : all) {
    std::visit([&](auto& relay) { relay->abort(reason); }, entry.relay);
    retire(entry);
  }
}

uint64_t RelaySet::live_bytes_to_service() const {
  uint64_t sum = 0;
  for (const auto& [id, entry] : relays_)
    sum += std::visit([](const auto& relay) { return relay->bytes_to_service(); }, entry.relay);
  return sum;
}

uint64_t RelaySet::live_bytes_to_visitor() const {
  uint64_t sum = 0;
  for (const auto& [id, entry] : relays_)
    sum += std::visit([](const auto& relay) { return relay->bytes_to_visitor(); }, entry.relay);
  return sum;
}

void RelaySet::when_drained(std::function<void()> drained) {
  if (unreported_ == 0) {
    drained();
    return;
  }
  drained_.push_back(std::move(drained));
}

// The relay's `done`, run from the loop after the batch in which it ended (or was aborted).
void RelaySet::ended(const ConnId& id, uint64_t serial, Clock::time_point started,
                     const RelayOutcome& outcome) {
  auto it = relays_.find(id);
  if (it != relays_.end() && it->second.serial == serial) {
    retire(it->second);
    relays_.erase(it);
  }
  --unreported_;
  on_ended_(id, outcome, std::chrono::duration_cast<Duration>(loop_.now() - started));
  // on_ended may have started another relay: then the set is not drained after all.
  if (unreported_ == 0 && !drained_.empty()) {
    auto waiting = std::move(drained_);
    drained_.clear();
    for (auto& drained : waiting) drained();
  }
}

// The relay may be in the middle of its own callbacks (the lifetime rule, event_loop.hpp).
void RelaySet::retire(Entry& entry) {
  std::visit([&](auto& relay) { loop_.destroy_later(std::move(relay)); }, entry.relay);
}

}  // namespace tunnel
