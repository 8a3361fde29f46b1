// First-line reading on port B with MSG_PEEK, so the line is consumed and nothing after it.
#include "b_handshake.hpp"

#include <sys/socket.h>

#include <cerrno>

#include "tunnel/address.hpp"
#include "tunnel/line_reader.hpp"

namespace tunnel::server {

BHandshake::BHandshake(EventLoop& loop, Fd fd, Duration timeout, OnLine on_line, OnFailed on_failed)
    : channel_(loop, std::move(fd), kReadable, [this](uint32_t) { on_readable(); }),
      deadline_(loop, [this] { give_up(HandshakeFailure::timeout); }),
      peer_(peer_address(channel_.fd()).to_string()),
      on_line_(std::move(on_line)),
      on_failed_(std::move(on_failed)) {
  deadline_.arm(timeout);
}

void BHandshake::on_readable() {
  if (done_) return;
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
  if (newline == std::string_view::npos) {
    if (line_.size() >= kMaxLineLength) give_up(HandshakeFailure::line_too_long);
    return;
  }
  done_ = true;
  deadline_.cancel();
  line_.pop_back();
  std::string line = std::move(line_);
  auto on_line = std::move(on_line_);
  on_line(channel_.release(), line);
}

void BHandshake::cancel() {
  done_ = true;
  deadline_.cancel();
  channel_.close();
}

void BHandshake::give_up(HandshakeFailure failure) {
  if (done_) return;
  done_ = true;
  deadline_.cancel();
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
