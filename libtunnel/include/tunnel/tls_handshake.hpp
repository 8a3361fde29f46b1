// Drives one Stream's TLS handshake on an event loop: the socket's interest follows what OpenSSL
// wants (readable or writable), a deadline bounds the whole handshake, and the result is reported
// exactly once. A peer that stalls holds nothing but its socket, its Stream and a timer until the
// deadline.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string_view>

#include "tunnel/channel.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/event_loop.hpp"
#include "tunnel/fd.hpp"
#include "tunnel/timer.hpp"
#include "tunnel/tls_stream.hpp"

namespace tunnel::tls {

class Handshake {
 public:
  // The established stream and its socket, out of the poller, for the owner to register anew.
  using Done = std::function<void(Fd fd, std::unique_ptr<Stream> stream)>;
  // The socket is handed back too (the stream is freed), e.g. for a server to answer a plaintext
  // client in plain text before closing; dropping the Fd closes it.
  using Failed = std::function<void(Fd fd, Failure failure, std::string_view detail)>;

  // `stream` must be over `fd` and not started. The first step runs from the loop, never from the
  // constructor. `done` / `failed` run once, from this object's own handlers: an owner that wants
  // the Handshake gone hands it to EventLoop::destroy_later (the lifetime rule, event_loop.hpp).
  Handshake(EventLoop& loop, Fd fd, std::unique_ptr<Stream> stream, Duration timeout, Done done,
            Failed failed);

  // Gives up: closes the socket, frees nothing else yet, and never calls back. An owner retiring
  // a Handshake calls this first (an event already in the current batch would still arrive).
  void cancel();
  bool finished() const { return finished_; }

 private:
  void step();
  void on_timeout();
  void fail(Failure failure, std::string_view detail);

  EventLoop& loop_;
  std::unique_ptr<Stream> stream_;
  Duration timeout_;
  std::optional<Channel> channel_;
  Timer deadline_;
  Done done_;
  Failed failed_;
  bool finished_ = false;
};

}  // namespace tunnel::tls
