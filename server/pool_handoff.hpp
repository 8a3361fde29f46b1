// One external connection being handed to a pooled data connection (docs/PROTOCOL.md, "Warm
// pool"): the server writes `NEW <id> [<service>]` (and a PROXY header, if the service sends one)
// on the parked connection and forwards the visitor's bytes at once, without waiting; the client
// answers `TAKEN <id>` when it has the line and `READY <id>` once its target is connected (or
// `FAIL <id> <reason>`).
//
// Until READY nothing is taken off the external socket: its bytes are peeked and sent, so if the
// pooled connection turns out dead or the client cannot reach its target, the visitor's bytes are
// all still there for another attempt. At READY the bytes already sent are consumed and the relay
// takes both sockets over. What is sent before READY is bounded (kMaxEarlyBytes); the rest waits
// in the kernel for the relay.
//
// Dead means the client cannot have acted on the handoff: the connection ended (or broke the
// protocol) before READY, or no TAKEN has come and the client's host has not even acknowledged
// what was sent (the kernel still holds it, SIOCOUTQ) after the ack timeout and four round trips.
// A client whose host took the bytes may just be slow (frozen, or behind a long path) and may
// still deliver them to its target: it is waited for (up to the pair timeout), never raced by a
// second attempt that would deliver the visitor's bytes twice.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "tunnel/channel.hpp"
#include "tunnel/conn_id.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/stream_socket.hpp"
#include "tunnel/timer.hpp"

namespace tunnel::server {

enum class HandoffOutcome {
  ready,          // READY: relay the two sockets
  target_failed,  // FAIL <id> <reason>: the client could not reach its target
  dead,           // ended or broke the protocol before READY, or its host acknowledged nothing
  visitor_gone,   // the external side reset
};

class PoolHandoff {
 public:
  struct Result {
    HandoffOutcome outcome;
    Fd external;             // always given back (nothing consumed unless ready)
    StreamSocket pooled;     // ready: the data connection, with what followed READY as unread
    std::string detail;      // target_failed: the client's reason; dead: why
    size_t early_bytes = 0;  // ready: the visitor's bytes that went ahead (the relay's count
                             // starts after them)
  };
  // Called once, from one of the handoff's own handlers (the owner frees it with destroy_later).
  using Done = std::function<void(Result result)>;

  // `preamble` is what goes ahead of the visitor's bytes (the NEW line, a PROXY header).
  PoolHandoff(EventLoop& loop, const ConnId& id, Fd external, StreamSocket pooled,
              std::string preamble, Duration ack_timeout, Done done);
  ~PoolHandoff();
  // Sends the preamble and what the visitor has sent so far. Separate from the constructor because
  // it may finish at once (`done` then runs from here).
  void start();

  // Stops everything and gives the external socket back, untouched; the pooled one is closed
  // (which tells the client to let go). No callback runs after this.
  Fd cancel();

  // The client has said TAKEN: it is alive and acting on the handoff.
  bool taken() const { return taken_; }
  // How many times the external socket was peeked (tests: a stalled visitor must not wake us).
  uint64_t peeks() const { return peeks_; }

  // The most of the visitor's bytes sent before READY (kept in the external socket meanwhile).
  static constexpr size_t kMaxEarlyBytes = 64 * 1024;

 private:
  void on_external(uint32_t events);
  void on_pooled(uint32_t events);
  // Sends the visitor's bytes not sent yet, as far as the pooled connection takes them.
  void forward();
  // Reads the client's lines, up to and including READY.
  void read_lines();
  void on_line(std::string_view line);
  // No TAKEN yet: dead only if the client's host has not acknowledged what was sent.
  void on_ack_deadline();
  // READY came and nothing is half-written: consume what was sent and finish.
  void complete_ready();
  void finish(HandoffOutcome outcome, std::string detail);

  ConnId id_;
  Channel external_;
  Channel pooled_;
  std::unique_ptr<tls::Stream> tls_;  // after pooled_: freed first, while the socket is open
  std::string preamble_;              // not yet sent
  std::string lines_;                 // what the client said so far
  size_t sent_ = 0;                   // visitor's bytes sent (peeked, not consumed)
  bool external_ended_ = false;       // the visitor sent its FIN: nothing more to forward
  bool blocked_ = false;              // the pooled connection's send buffer is full
  bool taken_ = false;
  bool ready_ = false;
  bool done_ = false;
  uint64_t peeks_ = 0;
  Timer ack_deadline_;
  Duration ack_timeout_;
  Clock::time_point started_;
  EventLoop& loop_;
  Done done_callback_;
};

}  // namespace tunnel::server
