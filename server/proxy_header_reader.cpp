// PROXY header reading on port A without consuming a byte past the header.
//
// Peeking leaves the bytes in the socket, and the poller is level-triggered: a partial header that
// stalls would keep the socket readable and the loop spinning. So after each peek that found an
// incomplete header, SO_RCVLOWAT is set to one byte more than what was seen: TCP then reports the
// socket readable only when new bytes arrive, or at EOF or an error, which it reports whatever the
// low-water mark. A wake-up that brings nothing new is therefore the end of the stream (or an
// error), which poll(POLLRDHUP) confirms. Anything else (memory pressure, a socket that ignores
// the mark) is treated as spurious: the socket is left out of the poller for a moment, so even
// then the loop does not spin. The mark goes back to 1 before the socket is handed on.
#include "proxy_header_reader.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "tunnel/socket.hpp"

namespace tunnel::server {
namespace {

// How long a socket that woke the loop for nothing stays out of the poller.
constexpr auto kSpuriousPause = std::chrono::milliseconds(50);

std::string errno_text(int error) {
  return std::error_code(error, std::system_category()).message();
}

}  // namespace

ProxyHeaderReader::ProxyHeaderReader(EventLoop& loop, Fd fd, Duration timeout, OnDone on_done,
                                     OnFailed on_failed)
    : channel_(loop, std::move(fd), kReadable, [this](uint32_t) { on_event(); }),
      deadline_(loop, [this] { give_up(ProxyHeaderFailure::timeout, ""); }),
      retry_(loop,
             [this] {
               if (channel_.resume())
                 give_up(ProxyHeaderFailure::reset, "cannot watch the socket again");
             }),
      on_done_(std::move(on_done)),
      on_failed_(std::move(on_failed)) {
  deadline_.arm(timeout);
}

void ProxyHeaderReader::on_event() {
  if (done_) return;
  ++peeks_;
  char peeked[proxy_protocol::kMaxHeader];
  ssize_t n = ::recv(channel_.fd(), peeked, sizeof peeked, MSG_PEEK);
  if (n == 0) return give_up(ProxyHeaderFailure::closed, "");
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    return give_up(ProxyHeaderFailure::reset, errno_text(errno));
  }
  size_t length = static_cast<size_t>(n);
  auto parsed = proxy_protocol::parse({peeked, length});
  switch (parsed.status) {
    case proxy_protocol::Parsed::Status::complete:
      return complete(parsed);
    case proxy_protocol::Parsed::Status::invalid:
      return give_up(ProxyHeaderFailure::invalid, parsed.error);
    case proxy_protocol::Parsed::Status::incomplete:
      break;
  }
  // The parser decides within kMaxHeader bytes; this only guards the bound.
  if (length >= proxy_protocol::kMaxHeader)
    return give_up(ProxyHeaderFailure::invalid, "no complete PROXY header within 536 bytes");
  if (length > seen_) {
    seen_ = length;
    if (!wait_for_more_than(length))
      give_up(ProxyHeaderFailure::reset, "cannot set SO_RCVLOWAT: " + errno_text(errno));
    return;
  }
  // Woken with nothing new: the peer has finished or failed, or the wake-up was spurious.
  pollfd state{channel_.fd(), POLLRDHUP, 0};
  if (::poll(&state, 1, 0) == 1) {
    if (state.revents & POLLERR) {
      auto error = take_socket_error(channel_.fd());
      return give_up(ProxyHeaderFailure::reset, error ? error.message() : "socket error");
    }
    if (state.revents & (POLLRDHUP | POLLHUP)) return give_up(ProxyHeaderFailure::closed, "");
  }
  channel_.suspend();
  retry_.arm(kSpuriousPause);
}

bool ProxyHeaderReader::wait_for_more_than(size_t bytes) {
  int mark = static_cast<int>(bytes) + 1;
  return ::setsockopt(channel_.fd(), SOL_SOCKET, SO_RCVLOWAT, &mark, sizeof mark) == 0;
}

void ProxyHeaderReader::complete(const proxy_protocol::Parsed& parsed) {
  char header[proxy_protocol::kMaxHeader];
  ssize_t consumed = ::recv(channel_.fd(), header, parsed.length, 0);
  if (consumed != static_cast<ssize_t>(parsed.length))
    return give_up(ProxyHeaderFailure::reset, "the peeked header could not be read");
  if (!wait_for_more_than(0))
    return give_up(ProxyHeaderFailure::reset, "cannot reset SO_RCVLOWAT: " + errno_text(errno));
  ProxiedAddresses addresses;
  addresses.version = parsed.version;
  addresses.from_header = parsed.source.has_value() && parsed.destination.has_value();
  addresses.source = addresses.from_header ? *parsed.source : peer_address(channel_.fd());
  addresses.destination =
      addresses.from_header ? *parsed.destination : local_address(channel_.fd());
  done_ = true;
  deadline_.cancel();
  retry_.cancel();
  auto on_done = std::move(on_done_);
  on_done(channel_.release(), addresses);
}

void ProxyHeaderReader::cancel() {
  done_ = true;
  deadline_.cancel();
  retry_.cancel();
  channel_.close();
}

void ProxyHeaderReader::give_up(ProxyHeaderFailure failure, std::string_view detail) {
  if (done_) return;
  done_ = true;
  deadline_.cancel();
  retry_.cancel();
  auto on_failed = std::move(on_failed_);
  on_failed(channel_.release(), failure, detail);
}

std::string_view to_string(ProxyHeaderFailure failure) {
  switch (failure) {
    case ProxyHeaderFailure::timeout:
      return "timeout";
    case ProxyHeaderFailure::invalid:
      return "invalid";
    case ProxyHeaderFailure::closed:
      return "closed";
    case ProxyHeaderFailure::reset:
      return "reset";
  }
  return "?";
}

}  // namespace tunnel::server
