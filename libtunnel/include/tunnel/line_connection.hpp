// A connection that speaks in protocol lines (the control connection, both ends): reads and splits
// lines, queues outgoing lines, and reports one close with a reason. Over plain TCP or TLS.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "tunnel/channel.hpp"
#include "tunnel/line_reader.hpp"
#include "tunnel/stream_socket.hpp"
#include "tunnel/timer.hpp"

namespace tunnel {

class LineConnection {
 public:
  using OnLine = std::function<void(std::string_view line)>;
  using OnClose = std::function<void(std::string_view reason)>;

  // Queued output beyond this means the peer stopped reading: the connection is closed.
  static constexpr size_t kMaxQueued = 1 << 20;

  // The callbacks run from this object's own handlers: they may call close(), and an owner that
  // wants the connection gone hands it to EventLoop::destroy_later (event_loop.hpp).
  LineConnection(EventLoop& loop, Fd fd, OnLine on_line, OnClose on_close);
  // Over TLS when `socket.tls` is set; `socket.unread` is read before anything from the socket.
  LineConnection(EventLoop& loop, StreamSocket socket, OnLine on_line, OnClose on_close);

  // Queues a whole line (with its `\n`) and sends what the socket takes now. Never calls on_close
  // itself: a failure found here closes the socket and is reported from the loop right after, so a
  // caller can go on using its own state.
  void send(std::string_view line);
  // Closes now; on_close is not called.
  void close();
  bool open() const { return channel_.fd() >= 0; }
  int fd() const { return channel_.fd(); }

 private:
  void on_ready(uint32_t events);
  // Reads what the socket (or the TLS stream) has; returns the reason if the connection broke.
  std::optional<std::string> receive();
  std::optional<std::string> receive_tls();
  // The reason to report for a failed write: over TLS, the peer's alert if one arrived first.
  std::string explained(std::string write_error);
  // Passes on the complete lines read so far; false once the connection is closed.
  bool deliver();
  // Writes what the socket takes; returns the reason if the connection broke.
  std::optional<std::string> flush();
  // One write of the queued bytes, plain or TLS: `written` stays 0 when it must wait.
  std::optional<std::string> write_some(size_t& written);
  void update_interest();
  void lost(std::string_view reason);

  Channel channel_;
  std::unique_ptr<tls::Stream> tls_;  // declared after channel_: freed first, socket still open
  bool read_wants_write_ = false;     // TLS: the last read waits for writability
  LineReader reader_;
  std::string outgoing_;
  OnLine on_line_;
  OnClose on_close_;
  std::string deferred_loss_;
  Timer report_loss_;
  Timer deferred_lines_;
};

}  // namespace tunnel
