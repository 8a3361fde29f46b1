// A fresh connection on port B until its first line says what it is (control or data). Reads
// exactly up to the `\n`, so not one payload byte of a data connection is consumed here.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "tunnel/channel.hpp"
#include "tunnel/duration.hpp"
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
  using OnLine = std::function<void(Fd fd, std::string_view line)>;
  using OnFailed = std::function<void(HandshakeFailure failure, std::string_view peer)>;

  BHandshake(EventLoop& loop, Fd fd, Duration timeout, OnLine on_line, OnFailed on_failed);
  const std::string& peer() const { return peer_; }
  // Closes the connection and calls neither callback (shutting down). An owner retiring a
  // handshake that has not finished calls this first: destroy_later frees it only after the batch.
  void cancel();

 private:
  void on_readable();
  void give_up(HandshakeFailure failure);

  Channel channel_;
  Timer deadline_;
  std::string peer_;
  std::string line_;
  OnLine on_line_;
  OnFailed on_failed_;
  bool done_ = false;
};

}  // namespace tunnel::server
