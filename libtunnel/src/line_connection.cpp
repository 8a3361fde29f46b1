// Line-oriented I/O on one socket, used by both ends of the control connection.
#include "tunnel/line_connection.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "tunnel/duration.hpp"
#include "tunnel/socket.hpp"

namespace tunnel {

LineConnection::LineConnection(EventLoop& loop, Fd fd, OnLine on_line, OnClose on_close)
    : channel_(loop, std::move(fd), kReadable, [this](uint32_t events) { on_ready(events); }),
      on_line_(std::move(on_line)),
      on_close_(std::move(on_close)),
      report_loss_(loop, [this] { on_close_(deferred_loss_); }),
      deferred_lines_(loop, [this] { deliver(); }) {
  // Lines are small and each is waited for (a NEW is a visitor waiting): Nagle would hold one
  // back until the peer acknowledged the one before, up to its delayed-ACK timer.
  set_nodelay(channel_.fd());
}

LineConnection::LineConnection(EventLoop& loop, StreamSocket socket, OnLine on_line,
                               OnClose on_close)
    : LineConnection(loop, std::move(socket.fd), std::move(on_line), std::move(on_close)) {
  tls_ = std::move(socket.tls);
  if (!socket.unread.empty()) {
    reader_.feed(socket.unread);
    // Lines that came with the handshake are passed on from the loop, as if just received.
    deferred_lines_.arm(Duration::zero());
  }
}

void LineConnection::send(std::string_view line) {
  if (!open()) return;
  outgoing_.append(line);
  if (auto broken = flush()) {
    broken = explained(std::move(*broken));
    channel_.close();
    outgoing_.clear();
    deferred_loss_ = std::move(*broken);
    report_loss_.arm(Duration::zero());
  }
}

void LineConnection::close() {
  // Over TLS the peer is told this end is deliberate (close_notify), so it does not report a
  // truncated connection. Best effort: a socket that cannot take it now is closed all the same.
  if (tls_ && channel_.fd() >= 0) tls_->shutdown_write();
  channel_.close();
  report_loss_.cancel();
  deferred_lines_.cancel();
}

void LineConnection::on_ready(uint32_t events) {
  // Over TLS a write may wait for readability too: retry it on any event.
  if ((events & kWritable) || (tls_ && !outgoing_.empty())) {
    if (auto broken = flush()) return lost(explained(std::move(*broken)));
  }
  const bool read_can_go_on = read_wants_write_ && (events & kWritable);
  if (!(events & (kReadable | kHangup | kError)) && !read_can_go_on) return;
  auto broken = tls_ ? receive_tls() : receive();
  // Lines that arrived before a close are still passed on.
  if (!deliver()) return;
  if (broken) lost(*broken);
}

std::optional<std::string> LineConnection::receive() {
  char chunk[4096];
  ssize_t n = ::recv(channel_.fd(), chunk, sizeof chunk, 0);
  if (n == 0) return "closed by peer";
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return std::nullopt;
    return std::strerror(errno);
  }
  reader_.feed({chunk, static_cast<size_t>(n)});
  return std::nullopt;
}

std::optional<std::string> LineConnection::receive_tls() {
  // Until the stream wants the socket again: decrypted bytes left inside it would never be
  // reported by the poller (tls_stream.hpp).
  read_wants_write_ = false;
  for (;;) {
    char chunk[4096];
    auto result = tls_->read({chunk, sizeof chunk});
    switch (result.status) {
      case tls::IoStatus::ok:
        reader_.feed({chunk, result.bytes});
        if (reader_.overflowed()) return std::nullopt;
        continue;
      case tls::IoStatus::want_read:
        return std::nullopt;
      case tls::IoStatus::want_write:
        read_wants_write_ = true;
        update_interest();
        return std::nullopt;
      case tls::IoStatus::eof:
        return "closed by peer";
      case tls::IoStatus::reset:
      case tls::IoStatus::error:
        return result.detail.empty() ? "TLS error" : result.detail;
    }
  }
}

std::string LineConnection::explained(std::string write_error) {
  // A TLS peer that refuses us (mTLS: after our side of the handshake has completed) sends an
  // alert and then resets: our write meets the reset, but the alert, which says why, is usually
  // still waiting in the receive buffer. Lines read here are kept for nobody: the connection is
  // ending.
  if (!tls_) return write_error;
  auto said = receive_tls();
  return said ? *said : write_error;
}

bool LineConnection::deliver() {
  while (auto line = reader_.next()) {
    on_line_(*line);
    if (!open()) return false;  // the handler closed us
  }
  if (reader_.overflowed()) {
    lost("line too long");
    return false;
  }
  return true;
}

std::optional<std::string> LineConnection::flush() {
  while (!outgoing_.empty()) {
    size_t written = 0;
    if (auto broken = write_some(written)) return broken;
    if (written == 0) break;  // the socket (or the TLS stream) is full: wait for writability
    outgoing_.erase(0, written);
  }
  if (outgoing_.size() > kMaxQueued) return "peer stopped reading";
  update_interest();
  return std::nullopt;
}

std::optional<std::string> LineConnection::write_some(size_t& written) {
  if (tls_) {
    // After want_read/want_write the same bytes are offered again: outgoing_ only grows at its end.
    auto result = tls_->write({outgoing_.data(), outgoing_.size()});
    if (result.status == tls::IoStatus::ok) written = result.bytes;
    if (result.status == tls::IoStatus::ok || result.status == tls::IoStatus::want_read ||
        result.status == tls::IoStatus::want_write)
      return std::nullopt;
    return result.detail.empty() ? "TLS error" : result.detail;
  }
  long n = send_nosignal(channel_.fd(), outgoing_.data(), outgoing_.size());
  if (n > 0) written = static_cast<size_t>(n);
  if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR))) return std::nullopt;
  return n < 0 ? std::strerror(errno) : "write returned nothing";
}

void LineConnection::update_interest() {
  // Writable is wanted for queued lines, and over TLS for a read that has to write first (a
  // key update's answer): a later flush must not drop that wish.
  bool writable = !outgoing_.empty() || read_wants_write_;
  channel_.set_interest(writable ? (kReadable | kWritable) : kReadable);
}

void LineConnection::lost(std::string_view reason) {
  channel_.close();
  deferred_lines_.cancel();
  outgoing_.clear();
  on_close_(reason);
}

}  // namespace tunnel
