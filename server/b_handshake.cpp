// Line reading on port B: with MSG_PEEK over plain TCP, so the line is consumed and nothing after
// it; through the stream over TLS.
#include "b_handshake.hpp"

#include <sys/socket.h>

#include <cerrno>

#include "tunnel/address.hpp"
#include "tunnel/line_reader.hpp"

namespace tunnel::server {

BHandshake::BHandshake(EventLoop& loop, StreamSocket socket, Duration timeout, OnLine on_line,
                       OnFailed on_failed)
    : channel_(loop, std::move(socket.fd), kReadable, [this](uint32_t) { on_readable(); }),
      tls_(std::move(socket.tls)),
      deadline_(loop, [this] { give_up(HandshakeFailure::timeout); }),
      buffered_(loop,
                [this] {
                  if (!line_complete() && line_.size() >= kMaxLineLength)
                    give_up(HandshakeFailure::line_too_long);
                }),
      peer_(peer_address(channel_.fd()).to_string()),
      line_(std::move(socket.unread)),
      on_line_(std::move(on_line)),
      on_failed_(std::move(on_failed)) {
  deadline_.arm(timeout);
  if (line_.find('\n') != std::string::npos || line_.size() >= kMaxLineLength)
    buffered_.arm(Duration::zero());
}

void BHandshake::on_readable() {
  if (done_) return;
  if (tls_) return read_tls();
  read_plain();
}

void BHandshake::read_plain() {
  char peeked[kMaxLineLength];
  size_t want = kMaxLineLength - line_.size();
  ssize_t n = ::recv(channel_.fd(), peeked, want, MSG_PEEK);
  if (n == 0) return give_up(HandshakeFailure::closed);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    return give_up(HandshakeFailure::reset);
  }
  std::string_view view(peeked, static_cast<size_t>(n));
  auto newline = view.find('\n');
  // Consume only through the newline; without one, everything seen belongs to the first line.
  size_t take = newline == std::string_view::npos ? view.size() : newline + 1;
  ssize_t consumed = ::recv(channel_.fd(), peeked, take, 0);
  if (consumed != static_cast<ssize_t>(take)) return give_up(HandshakeFailure::reset);
  line_.append(peeked, take);
  if (!line_complete() && line_.size() >= kMaxLineLength) give_up(HandshakeFailure::line_too_long);
}

void BHandshake::read_tls() {
  // Until the stream wants the socket again: decrypted bytes left inside it would never be
  // reported by the poller (tls_stream.hpp).
  while (!done_) {
    char chunk[kMaxLineLength];
    auto result = tls_->read({chunk, sizeof chunk});
    switch (result.status) {
      case tls::IoStatus::ok:
        line_.append(chunk, result.bytes);
        if (line_complete()) return;
        if (line_.size() >= kMaxLineLength) return give_up(HandshakeFailure::line_too_long);
        continue;
      case tls::IoStatus::want_read:
        channel_.set_interest(kReadable);
        return;
      case tls::IoStatus::want_write:
        channel_.set_interest(kReadable | kWritable);
        return;
      case tls::IoStatus::eof:
        return give_up(HandshakeFailure::closed);
      case tls::IoStatus::reset:
      case tls::IoStatus::error:
        return give_up(HandshakeFailure::reset);
    }
  }
}

bool BHandshake::line_complete() {
  if (done_) return true;
  auto newline = line_.find('\n');
  if (newline == std::string::npos || newline >= kMaxLineLength) return false;
  done_ = true;
  deadline_.cancel();
  buffered_.cancel();
  std::string line = line_.substr(0, newline);
  StreamSocket socket{channel_.release(), std::move(tls_), line_.substr(newline + 1)};
  auto on_line = std::move(on_line_);
  on_line(std::move(socket), line);
  return true;
}

void BHandshake::cancel() {
  done_ = true;
  deadline_.cancel();
  buffered_.cancel();
  channel_.close();
}

void BHandshake::give_up(HandshakeFailure failure) {
  if (done_) return;
  done_ = true;
  deadline_.cancel();
  buffered_.cancel();
  channel_.close();
  auto on_failed = std::move(on_failed_);
  on_failed(failure, peer_);
}

std::string_view to_string(HandshakeFailure failure) {
  switch (failure) {
    case HandshakeFailure::timeout:
      return "handshake-timeout";
    case HandshakeFailure::line_too_long:
      return "line-too-long";
    case HandshakeFailure::closed:
      return "closed";
    case HandshakeFailure::reset:
      return "reset";
  }
  return "?";
}

}  // namespace tunnel::server
