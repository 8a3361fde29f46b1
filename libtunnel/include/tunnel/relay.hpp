// Moves bytes both ways between two connected sockets until both directions have ended, unchanged,
// with end-to-end half-close: when one side finishes sending, the other is shut down for writing
// once the bytes in flight are delivered, and the reverse direction keeps flowing. An error or
// reset on either side resets the other. Linux: splice(2) through pooled pipes; a buffer path
// otherwise.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "tunnel/channel.hpp"
#include "tunnel/event_loop.hpp"
#include "tunnel/fd.hpp"
#include "tunnel/pipe_pool.hpp"

namespace tunnel {

struct RelayOutcome {
  uint64_t bytes_a_to_b = 0;
  uint64_t bytes_b_to_a = 0;
  bool reset = false;  // ended by an error or reset rather than two clean FINs
  std::string reason;  // "closed", or what went wrong and on which side
};

class Relay {
 public:
  using Done = std::function<void(const RelayOutcome&)>;

  // Both sockets must be connected and non-blocking. `done` runs once, deferred to the end of the
  // loop's current batch, after both descriptors are closed; it may destroy the Relay.
  Relay(EventLoop& loop, PipePool& pipes, Fd a, Fd b, Done done);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // Ends the relay now with resets on both sides (used when shutting down hard).
  void abort(std::string reason);
  uint64_t bytes_a_to_b() const;
  uint64_t bytes_b_to_a() const;

 private:
  struct Flow;
  void on_ready(int side, uint32_t events);
  void pump(Flow& flow);
  void update_interest();
  void fail(std::string reason);
  void maybe_finish();

  EventLoop& loop_;
  PipePool& pipes_;
  std::unique_ptr<Channel> side_[2];
  std::unique_ptr<Flow> flow_[2];  // flow_[0]: a -> b, flow_[1]: b -> a
  Done done_;
  bool finished_ = false;
};

}  // namespace tunnel
