// Moves bytes both ways between two connected sockets until both directions have ended, unchanged,
// with end-to-end half-close: when one side finishes sending, the other is shut down for writing
// once the bytes in flight are delivered, and the reverse direction keeps flowing. An error or
// reset on either side resets the other. Linux: splice(2) through pooled pipes; a buffer path
// otherwise.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "tunnel/channel.hpp"
#include "tunnel/event_loop.hpp"
#include "tunnel/fd.hpp"
#include "tunnel/pipe_pool.hpp"

namespace tunnel {

struct RelayOutcome {
  uint64_t bytes_to_service = 0;  // read from the visitor side, delivered to the service side
  uint64_t bytes_to_visitor = 0;  // read from the service side, delivered to the visitor side
  bool reset = false;             // ended by an error or reset rather than two clean FINs
  std::string reason;             // "closed", or what went wrong and on which side
};

class Relay {
 public:
  using Done = std::function<void(const RelayOutcome&)>;

  // The visitor side is the socket toward the external user (the A connection on the server, the
  // data connection on the client); the service side is the one toward the private service (the
  // data connection on the server, the target connection on the client). Both must be connected
  // and non-blocking. `done` runs once, deferred to the end of the loop's current batch, after
  // both descriptors are closed: outside the relay's own handlers, so the owner may free the
  // Relay there (RelaySet still uses destroy_later, as everything on the loop does).
  Relay(EventLoop& loop, PipePool& pipes, Fd visitor_side, Fd service_side, Done done);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // Ends the relay now with resets on both sides (used when shutting down hard).
  void abort(std::string reason);
  uint64_t bytes_to_service() const;
  uint64_t bytes_to_visitor() const;

 private:
  // Index of a side in side_, hung_up_ and flow_ (flow_[s] reads side s).
  enum Side { kVisitor = 0, kService = 1 };

  // One direction. Held inside the Relay, like the Channels: a relaying connection costs as few
  // allocations as possible (an idle one is mostly this object).
  struct Flow {
    enum class Mode { idle, pipe, buffer };

    int from = 0;  // side index bytes come from
    int to = 1;    // side index they go to
    Mode mode = Mode::idle;
    Pipe pipe;
    std::unique_ptr<char[]> buffer;  // only while the buffer path holds bytes (see pump)
    size_t buffer_start = 0;
    size_t pending = 0;  // read from `from`, not yet written to `to`
    bool splice_unsupported = false;
    bool eof = false;  // `from` will send nothing more
    // A pipe fills by slots (one per page or segment), not bytes: small segments can fill it
    // with far fewer bytes than its capacity. Once splice says so, reading waits for the next
    // write, or a level-triggered poller would report the readable source forever.
    bool pipe_full = false;
    bool shut = false;  // that end was passed on to `to` as a FIN
    uint64_t delivered = 0;

    size_t room() const;
    bool wants_read() const { return !eof && !pipe_full && room() > 0; }
  };

  void on_ready(Side side, uint32_t events);
  void pump(Flow& flow);
  void update_interest();
  void fail(std::string reason);
  void maybe_finish();
  RelayOutcome outcome(bool reset, std::string reason) const;

  EventLoop& loop_;
  PipePool& pipes_;
  std::optional<Channel> side_[2];
  // flow_[kVisitor]: visitor -> service, flow_[kService]: service -> visitor.
  Flow flow_[2];
  bool hung_up_[2] = {false, false};  // the poller has reported a hang-up for that side
  Done done_;
  bool finished_ = false;
};

}  // namespace tunnel
