// Moves bytes both ways between a plain socket and a TLS stream (tls_stream.hpp) until both
// directions have ended, as Relay does between two plain sockets (relay.hpp): bytes unchanged,
// end-to-end half-close, and a reset on either side resets the other.
//
// On the server the TLS side is the service side (the data connection on port B) and the plain
// side the visitor side (the A connection); on the client it is the other way round (the data
// connection to B is the visitor side, the target the service side).
//
// How the ends map across:
//   plain FIN                  -> close_notify and a FIN on the TLS side (Stream::shutdown_write),
//                                 once every byte before it is delivered
//   close_notify (TLS eof)     -> shutdown(SHUT_WR) on the plain side, likewise
//   TCP FIN without close_notify on the TLS side (a truncation), a TLS error or a reset
//                              -> the plain side is reset
//   a reset or error on the plain side
//                              -> the TLS socket is reset (SO_LINGER 0), no close_notify
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "tunnel/channel.hpp"
#include "tunnel/event_loop.hpp"
#include "tunnel/fd.hpp"
#include "tunnel/relay.hpp"
#include "tunnel/timer.hpp"
#include "tunnel/tls_stream.hpp"

namespace tunnel {

// Which side of a relay speaks TLS.
enum class TlsSide { visitor, service };

class TlsRelay {
 public:
  using Done = std::function<void(const RelayOutcome&)>;

  // One buffer per direction, held only while that direction moves bytes (until kReleaseAfter
  // passes without a wake-up). The first holds one TLS record of plaintext (16 KiB, RFC 8446, 5.1):
  // enough for a request or a response. Once a read fills it, the direction streams, and the
  // next is kBufferSize, four full records, as much as the plain relay's buffer: toward the TLS
  // side one recv fills it and one write makes four full records, sent with one send (the
  // Stream's bulk mode); from it one recv brings about four records, decrypted into it and sent
  // on with one send. System calls, not the cipher, were most of the cost with one record per
  // recv and per send (bench/RESULTS-tls.md).
  static constexpr size_t kFirstBufferSize = 16 * 1024;
  static constexpr size_t kBufferSize = 64 * 1024;
  // Buffers (the relay's and its Stream's) are given back after a whole period this long without
  // a wake-up: between one and two periods after the last one.
  static constexpr Clock::duration kReleaseAfter = std::chrono::milliseconds(50);

  // `visitor_side` and `service_side` are connected, non-blocking sockets; the one named by
  // `tls_side` is `stream`'s socket (stream->fd()), its handshake done. The relay owns both
  // descriptors and the stream. `initial`: plaintext already read from the stream before the
  // relay started (what followed the first line in the same record), the first bytes delivered
  // to the plain side. `done` runs once, deferred to the end of the loop's current batch, after
  // both descriptors are closed (as for Relay).
  TlsRelay(EventLoop& loop, Fd visitor_side, Fd service_side, TlsSide tls_side,
           std::unique_ptr<tls::Stream> stream, std::string_view initial, Done done);
  ~TlsRelay();
  TlsRelay(const TlsRelay&) = delete;
  TlsRelay& operator=(const TlsRelay&) = delete;

  // Ends the relay now with resets on both sides (no close_notify).
  void abort(std::string reason);
  // Plaintext bytes delivered so far each way.
  uint64_t bytes_to_service() const;
  uint64_t bytes_to_visitor() const;
  // The relay's buffers held now (0, 1 or 2): 0 once idle for 2 x kReleaseAfter (the Stream's
  // are given back at the same time).
  size_t buffers_held() const;

 private:
  enum Side { kVisitor = 0, kService = 1 };
  struct Flow;
  void on_ready(Side side, uint32_t events);
  void after_wake();
  void on_kick();
  void pump(Flow& flow);
  bool read(Flow& flow);
  bool write(Flow& flow);
  void pass_on_end(Flow& flow);
  void top_up(Flow& flow);
  bool needs_kick() const;
  bool unsent(const Flow& flow) const;
  bool wants_write(const Flow& flow) const;
  void on_release();
  void update_interest();
  void close_side(Side side);
  void fail(std::string reason);
  void maybe_finish();
  RelayOutcome outcome(bool reset, std::string reason) const;

  EventLoop& loop_;
  Side tls_;                             // the side `stream_` speaks on
  std::unique_ptr<tls::Stream> stream_;  // freed once its side is closed
  std::unique_ptr<Channel> side_[2];
  // flow_[kVisitor]: visitor -> service, flow_[kService]: service -> visitor.
  std::unique_ptr<Flow> flow_[2];
  bool hung_up_[2] = {false, false};
  // Runs the flow out of the TLS side from the loop when the Stream holds decrypted bytes and the
  // buffer has room: no poller reports those bytes.
  Timer kick_;
  // Gives back the buffers of what is idle once kReleaseAfter passed without a wake-up.
  Timer release_;
  bool woken_ = false;  // since release_ was armed
  Done done_;
  bool finished_ = false;
};

}  // namespace tunnel
