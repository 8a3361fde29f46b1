// A connection on port B until its next line has arrived (the first line says what it is; with
// auth, the control connection's proof is a second one). Over plain TCP it reads exactly up to
// the `\n`, so not one payload byte of a data connection is consumed here; over TLS whatever came
// after the line in the same read is handed on as the socket's unread bytes.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "tunnel/channel.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/stream_socket.hpp"
#include "tunnel/timer.hpp"

namespace tunnel::server {

// Why a B connection never produced a first line.
enum class HandshakeFailure {
  timeout,        // nothing complete within the handshake timeout
  line_too_long,  // no `\n` within the maximum line length
  closed,         // the peer closed before a whole line (not worth a warning)
  reset,          // the peer reset, or a read failed
};
std::string_view to_string(HandshakeFailure failure);

class BHandshake {
 public:
  // Exactly one of the two is called, once, from the handshake's own handlers (the owner hands a
  // finished handshake to EventLoop::destroy_later). on_line gets the line without `\n` and takes
  // the socket.
  using OnLine = std::function<void(StreamSocket socket, std::string_view line)>;
  using OnFailed = std::function<void(HandshakeFailure failure, std::string_view peer)>;

  BHandshake(EventLoop& loop, StreamSocket socket, Duration timeout, OnLine on_line,
             OnFailed on_failed);
  const std::string& peer() const { return peer_; }
  // Closes the connection and calls neither callback (shutting down). An owner retiring a
  // handshake that has not finished calls this first: destroy_later frees it only after the batch.
  void cancel();

 private:
  void on_readable();
  void read_plain();
  void read_tls();
  // Hands over the line if `line_` holds one (bytes after it become the socket's unread bytes).
  bool line_complete();
  void give_up(HandshakeFailure failure);

  Channel channel_;
  std::unique_ptr<tls::Stream> tls_;  // after channel_: freed first, while the socket is open
  Timer deadline_;
  Timer buffered_;  // a line already in the unread bytes is handed on from the loop
  std::string peer_;
  std::string line_;
  OnLine on_line_;
  OnFailed on_failed_;
  bool done_ = false;
};

}  // namespace tunnel::server
