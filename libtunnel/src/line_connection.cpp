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
      report_loss_(loop, [this] { on_close_(deferred_loss_); }) {}

void LineConnection::send(std::string_view line) {
  if (!open()) return;
  outgoing_.append(line);
  if (auto broken = flush()) {
    channel_.close();
    outgoing_.clear();
    deferred_loss_ = std::move(*broken);
    report_loss_.arm(Duration::zero());
  }
}

void LineConnection::close() {
  channel_.close();
  report_loss_.cancel();
}

void LineConnection::on_ready(uint32_t events) {
  if (events & kWritable) {
    if (auto broken = flush()) return lost(*broken);
  }
  if (!(events & (kReadable | kHangup | kError))) return;
  char chunk[4096];
  ssize_t n = ::recv(channel_.fd(), chunk, sizeof chunk, 0);
  if (n == 0) return lost("closed by peer");
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    return lost(std::strerror(errno));
  }
  reader_.feed({chunk, static_cast<size_t>(n)});
  while (auto line = reader_.next()) {
    on_line_(*line);
    if (!open()) return;  // the handler closed us
  }
  if (reader_.overflowed()) lost("line too long");
}

std::optional<std::string> LineConnection::flush() {
  while (!outgoing_.empty()) {
    long n = send_nosignal(channel_.fd(), outgoing_.data(), outgoing_.size());
    if (n > 0) {
      outgoing_.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
    return n < 0 ? std::strerror(errno) : "write returned nothing";
  }
  if (outgoing_.size() > kMaxQueued) return "peer stopped reading";
  channel_.set_interest(outgoing_.empty() ? kReadable : (kReadable | kWritable));
  return std::nullopt;
}

void LineConnection::lost(std::string_view reason) {
  channel_.close();
  outgoing_.clear();
  on_close_(reason);
}

}  // namespace tunnel
