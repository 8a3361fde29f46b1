// Non-blocking connect: completion arrives as writability, the result is read from SO_ERROR.
#include "tunnel/connector.hpp"

#include <cerrno>

#include "tunnel/socket.hpp"

namespace tunnel {

namespace {

Fd begin_connect(const SocketAddress& to, std::error_code& error) {
  Fd fd = start_connect(to, error);
  if (!fd && !error) error = std::make_error_code(std::errc::io_error);
  return fd;
}

}  // namespace

Connector::Connector(EventLoop& loop, const SocketAddress& to, Duration timeout, Done done)
    : channel_(loop, begin_connect(to, error_), kWritable,
               [this](uint32_t) { finish(take_socket_error(channel_.fd())); }),
      deadline_(loop,
                [this] { finish(error_ ? error_ : std::make_error_code(std::errc::timed_out)); }),
      done_(std::move(done)) {
  // Immediate failures (no route, no descriptors) are reported from the loop, never from inside
  // the constructor, so the owner sees the same order of events either way.
  deadline_.arm(error_ ? Duration::zero() : timeout);
}

void Connector::finish(std::error_code error) {
  if (!done_) return;
  deadline_.cancel();
  Fd fd = channel_.release();
  if (error) fd.reset();
  auto done = std::move(done_);
  done_ = nullptr;
  done(std::move(fd), error);
}

const char* connect_failure_word(std::error_code error) {
  switch (static_cast<std::errc>(error.value())) {
    case std::errc::connection_refused:
      return "connection-refused";
    case std::errc::timed_out:
      return "timeout";
    case std::errc::network_unreachable:
    case std::errc::host_unreachable:
      return "unreachable";
    case std::errc::connection_reset:
      return "reset";
    case std::errc::too_many_files_open:
    case std::errc::too_many_files_open_in_system:
      return "out-of-descriptors";
    default:
      return "connect-failed";
  }
}

}  // namespace tunnel
