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

  // One buffer per direction, of this many bytes, held only while that direction has bytes in
  // flight. 16 KiB is the most plaintext one TLS record carries (RFC 8446, 5.1): toward the TLS
  // side each SSL_write of a full buffer makes one full record (the least overhead and one send
  // per record), and from it each SSL_read can take a whole record, so a record is split between
  // the buffer and the Stream only when the buffer was partly full. Larger would only make more
  // records per call; smaller would make short records, or leave most of each record waiting
  // inside the Stream. It is also a quarter of the plain relay's 64 KiB buffer.
  static constexpr size_t kBufferSize = 16 * 1024;

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
  // Buffers held now (0, 1 or 2): 0 for an idle relay.
  size_t buffers_held() const;

 private:
  enum Side { kVisitor = 0, kService = 1 };
  struct Flow;
  void on_ready(Side side, uint32_t events);
  void on_kick();
  void pump(Flow& flow);
  bool read(Flow& flow);
  bool write(Flow& flow);
  void pass_on_end(Flow& flow);
  void top_up(Flow& flow);
  bool needs_kick() const;
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
  Done done_;
  bool finished_ = false;
};

}  // namespace tunnel
