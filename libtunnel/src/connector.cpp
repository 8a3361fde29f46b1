// Non-blocking connect: completion arrives as writability, the result is read from SO_ERROR.
#include "tunnel/connector.hpp"

#include <cerrno>

#include "tunnel/socket.hpp"

namespace tunnel {

Connector::Connector(EventLoop& loop, std::span<const SocketAddress> candidates, Duration timeout,
                     Done done)
    : loop_(loop),
      candidates_(candidates),
      deadline_(loop, [this] { finish(std::make_error_code(std::errc::timed_out)); }),
      advance_(loop,
               [this] {
                 if (next_ < candidates_.size()) return try_next();
                 finish(last_error_);
               }),
      done_(std::move(done)) {
  deadline_.arm(timeout);
  try_next();
}

// Starts the next candidate; candidates that fail at once (no route, no descriptors) are skipped.
// With none left, the last error is reported, always from the loop: never from the constructor.
void Connector::try_next() {
  attempt_.reset();
  while (next_ < candidates_.size()) {
    std::error_code error;
    Fd fd = start_connect(candidates_[next_++], error);
    if (fd) {
      attempt_.emplace(loop_, std::move(fd), kWritable,
                       [this](uint32_t) { on_attempt_done(take_socket_error(attempt_->fd())); });
      return;
    }
    last_error_ = error ? error : std::make_error_code(std::errc::io_error);
  }
  if (!last_error_) last_error_ = std::make_error_code(std::errc::address_not_available);
  advance_.arm(Duration::zero());
}

void Connector::on_attempt_done(std::error_code error) {
  if (!error) return finish({});
  last_error_ = error;
  // A refused or unreachable address is not the end while the name has others. The next attempt
  // starts from the loop, not inside this one's handler.
  attempt_->close();
  if (next_ < candidates_.size()) return advance_.arm(Duration::zero());
  finish(error);
}

void Connector::cancel() {
  done_ = nullptr;
  deadline_.cancel();
  advance_.cancel();
  if (attempt_) attempt_->close();
}

void Connector::finish(std::error_code error) {
  if (!done_) return;
  deadline_.cancel();
  advance_.cancel();
  Fd fd = attempt_ ? attempt_->release() : Fd();
  if (error) fd.reset();
  auto done = std::move(done_);
  done_ = nullptr;
  done(std::move(fd), error);
}

ConnectFailure classify_connect_error(std::error_code error) {
  switch (static_cast<std::errc>(error.value())) {
    case std::errc::connection_refused:
      return ConnectFailure::refused;
    case std::errc::timed_out:
      return ConnectFailure::timeout;
    case std::errc::network_unreachable:
    case std::errc::host_unreachable:
      return ConnectFailure::unreachable;
    case std::errc::connection_reset:
      return ConnectFailure::reset;
    case std::errc::too_many_files_open:
    case std::errc::too_many_files_open_in_system:
      return ConnectFailure::out_of_descriptors;
    default:
      return ConnectFailure::other;
  }
}

std::string_view to_string(ConnectFailure failure) {
  switch (failure) {
    case ConnectFailure::refused:
      return "connection-refused";
    case ConnectFailure::timeout:
      return "timeout";
    case ConnectFailure::unreachable:
      return "unreachable";
    case ConnectFailure::reset:
      return "reset";
    case ConnectFailure::out_of_descriptors:
      return "out-of-descriptors";
    case ConnectFailure::other:
      return "connect-failed";
  }
  return "connect-failed";
}

}  // namespace tunnel
