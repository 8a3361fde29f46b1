// Handing an external connection to a pooled data connection (pool_handoff.hpp says what and why).
//
// The external socket is peeked, never read, until READY. Peeked bytes stay in the socket and the
// poller is level-triggered, so after each peek SO_RCVLOWAT is set to one byte more than what was
// sent: the socket then wakes the loop only for new bytes, an end or an error (as in
// proxy_header_reader.cpp). A wake-up with nothing new is the visitor's FIN (poll(POLLRDHUP) says
// so): the FIN itself is left for the relay to pass on.
#include "pool_handoff.hpp"

#include <fmt/format.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "tunnel/line_reader.hpp"
#include "tunnel/log.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/socket.hpp"

namespace tunnel::server {
namespace {

// One scratch buffer for every handoff: the loop runs one handler at a time.
std::array<char, PoolHandoff::kMaxEarlyBytes>& scratch() {
  static std::array<char, PoolHandoff::kMaxEarlyBytes> buffer;
  return buffer;
}

bool set_low_water_mark(int fd, size_t bytes) {
  int mark = static_cast<int>(bytes);
  return ::setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &mark, sizeof mark) == 0;
}

bool peer_finished(int fd) {
  pollfd state{fd, POLLRDHUP, 0};
  return ::poll(&state, 1, 0) == 1 && (state.revents & (POLLRDHUP | POLLHUP)) != 0;
}

}  // namespace

PoolHandoff::PoolHandoff(EventLoop& loop, const ConnId& id, Fd external, StreamSocket pooled,
                         std::string preamble, Duration ack_timeout, Done done)
    : id_(id),
      external_(loop, std::move(external), kReadable,
                [this](uint32_t events) { on_external(events); }),
      pooled_(loop, std::move(pooled.fd), kReadable,
              [this](uint32_t events) { on_pooled(events); }),
      tls_(std::move(pooled.tls)),
      preamble_(std::move(preamble)),
      ack_deadline_(loop, [this] { on_ack_deadline(); }),
      ack_timeout_(ack_timeout),
      started_(loop.now()),
      loop_(loop),
      done_callback_(std::move(done)) {
  ack_deadline_.arm(ack_timeout);
}

void PoolHandoff::start() {
  forward();
}

PoolHandoff::~PoolHandoff() = default;

void PoolHandoff::on_ack_deadline() {
  // A TAKEN may be waiting behind a busy loop: read it first.
  read_lines();
  if (done_ || taken_) return;
  int unacknowledged = 0;
  if (::ioctl(pooled_.fd(), SIOCOUTQ, &unacknowledged) != 0)
    return finish(HandoffOutcome::dead, "cannot read the send queue");
  if (unacknowledged == 0) {
    // The client's host has everything: the client is slow, not gone. It is waited for.
    TLOG_DEBUG("event=pool-handoff-slow conn={} detail=\"no TAKEN yet, all acknowledged\"",
               id_.short_hex());
    return;
  }
  // Four round trips as the kernel measures them, for a long path.
  tcp_info info{};
  socklen_t length = sizeof info;
  Duration round_trips{};
  if (::getsockopt(pooled_.fd(), IPPROTO_TCP, TCP_INFO, &info, &length) == 0)
    round_trips =
        std::chrono::duration_cast<Duration>(std::chrono::microseconds(4 * info.tcpi_rtt));
  const Duration limit = std::max(ack_timeout_, round_trips);
  const auto waited = std::chrono::duration_cast<Duration>(loop_.now() - started_);
  if (waited < limit) return ack_deadline_.arm(limit - waited);
  finish(HandoffOutcome::dead,
         fmt::format("{} bytes unacknowledged after {} ms", unacknowledged, waited.count()));
}

void PoolHandoff::on_external(uint32_t events) {
  if (done_) return;
  // We never shut the external side down for writing, so a hang-up is a reset.
  if (events & (kError | kHangup)) {
    auto error = take_socket_error(external_.fd());
    return finish(HandoffOutcome::visitor_gone, error ? error.message() : "hang-up");
  }
  forward();
}

void PoolHandoff::on_pooled(uint32_t events) {
  if (done_) return;
  if ((events & kWritable) && blocked_) {
    blocked_ = false;
    pooled_.set_interest(kReadable);
    forward();
    if (done_) return;
  }
  if (events & (kReadable | kHangup | kError)) read_lines();
}

void PoolHandoff::forward() {
  if (done_ || blocked_) return;
  auto write = [this](const char* bytes, size_t length) -> std::optional<size_t> {
    if (!tls_) {
      long n = send_nosignal(pooled_.fd(), bytes, length);
      if (n >= 0) return static_cast<size_t>(n);
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return std::nullopt;
    }
    auto result = tls_->write({bytes, length});
    switch (result.status) {
      case tls::IoStatus::ok:
        return result.bytes;
      case tls::IoStatus::want_read:
      case tls::IoStatus::want_write:
        return 0;  // repeated with the same bytes (re-peeked) once writable
      default:
        return std::nullopt;
    }
  };
  auto block = [this] {
    blocked_ = true;
    pooled_.set_interest(kReadable | kWritable);
    external_.set_interest(0);
  };
  while (!preamble_.empty()) {
    auto written = write(preamble_.data(), preamble_.size());
    if (!written) return finish(HandoffOutcome::dead, "the pooled connection refused the NEW line");
    preamble_.erase(0, *written);
    if (!preamble_.empty()) return block();
  }
  if (ready_) return complete_ready();
  if (external_ended_ || sent_ >= kMaxEarlyBytes) return external_.set_interest(0);
  auto& buffer = scratch();
  ++peeks_;
  ssize_t n = ::recv(external_.fd(), buffer.data(), buffer.size(), MSG_PEEK | MSG_DONTWAIT);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    return finish(HandoffOutcome::visitor_gone, std::strerror(errno));
  }
  const auto peeked = static_cast<size_t>(n);
  if (peeked <= sent_) {
    // Nothing new: the visitor has finished sending (the relay passes its FIN on later).
    if (peeked == 0 || peer_finished(external_.fd())) {
      external_ended_ = true;
      return external_.set_interest(0);
    }
    return;  // spurious: the mark below still holds
  }
  auto written = write(buffer.data() + sent_, peeked - sent_);
  if (!written) return finish(HandoffOutcome::dead, "the pooled connection failed");
  sent_ += *written;
  if (sent_ < peeked) return block();
  if (sent_ >= kMaxEarlyBytes) return external_.set_interest(0);
  external_.set_interest(kReadable);
  if (!set_low_water_mark(external_.fd(), sent_ + 1))
    finish(HandoffOutcome::visitor_gone, "cannot set SO_RCVLOWAT");
}

void PoolHandoff::read_lines() {
  char buffer[4096];
  while (!done_) {
    if (tls_) {
      auto result = tls_->read({buffer, sizeof buffer});
      if (result.status == tls::IoStatus::want_read) return;
      if (result.status == tls::IoStatus::want_write)
        return pooled_.set_interest(kReadable | kWritable);
      if (result.status != tls::IoStatus::ok)
        return finish(HandoffOutcome::dead, result.detail.empty() ? "closed" : result.detail);
      lines_.append(buffer, result.bytes);
    } else {
      // Only whole lines are taken off the socket: what follows READY is the target's, for the
      // relay.
      ssize_t n = ::recv(pooled_.fd(), buffer, sizeof buffer, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0) return finish(HandoffOutcome::dead, "closed");
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        return finish(HandoffOutcome::dead, std::strerror(errno));
      }
      std::string_view peeked(buffer, static_cast<size_t>(n));
      auto end = peeked.find('\n');
      size_t take = end == std::string_view::npos ? peeked.size() : end + 1;
      if (::recv(pooled_.fd(), buffer, take, MSG_DONTWAIT) != static_cast<ssize_t>(take))
        return finish(HandoffOutcome::dead, "the peeked line could not be read");
      lines_.append(buffer, take);
    }
    // Each complete line in turn; a READY ends the reading, the rest is the target's.
    for (auto end = lines_.find('\n'); end != std::string::npos && !done_ && !ready_;
         end = lines_.find('\n')) {
      std::string line = lines_.substr(0, end);
      lines_.erase(0, end + 1);
      on_line(line);
    }
    if (done_ || ready_) return;
    if (lines_.size() >= kMaxLineLength) return finish(HandoffOutcome::dead, "line too long");
  }
}

void PoolHandoff::on_line(std::string_view line) {
  auto parsed = protocol::parse_message(line);
  auto* message = std::get_if<protocol::Message>(&parsed);
  if (!message || message->id != id_)
    return finish(HandoffOutcome::dead, "unexpected line on the pooled connection");
  switch (message->verb) {
    case protocol::Verb::taken:
      TLOG_DEBUG("event=pool-taken conn={}", id_.short_hex());
      taken_ = true;
      ack_deadline_.cancel();
      return;
    case protocol::Verb::ready:
      ready_ = true;
      ack_deadline_.cancel();
      // A TLS write left unfinished must be finished first, with the same bytes (tls_stream.hpp).
      if (!blocked_) complete_ready();
      return;
    case protocol::Verb::fail:
      return finish(HandoffOutcome::target_failed, message->word);
    default:
      return finish(HandoffOutcome::dead, "unexpected line on the pooled connection");
  }
}

void PoolHandoff::complete_ready() {
  if (!preamble_.empty()) return;  // still going out; forward() comes back here
  // The bytes the client has now leave the external socket; the rest is the relay's.
  auto& buffer = scratch();
  size_t consumed = 0;
  while (consumed < sent_) {
    ssize_t n = ::recv(external_.fd(), buffer.data(), sent_ - consumed, MSG_DONTWAIT);
    if (n <= 0) break;  // cannot happen for peeked bytes; the relay would see the error anyway
    consumed += static_cast<size_t>(n);
  }
  finish(HandoffOutcome::ready, "");
}

void PoolHandoff::finish(HandoffOutcome outcome, std::string detail) {
  if (done_) return;
  done_ = true;
  ack_deadline_.cancel();
  set_low_water_mark(external_.fd(), 1);
  Result result{outcome,
                external_.release(),
                {},
                std::move(detail),
                outcome == HandoffOutcome::ready ? sent_ : 0};
  if (outcome == HandoffOutcome::ready) {
    result.pooled = StreamSocket{pooled_.release(), std::move(tls_), std::move(lines_)};
  } else {
    // A reset tells the client to let go of the visitor: it stops dialing its target, and a
    // client that reads the NEW line only now cannot answer it (its TAKEN fails).
    set_linger_reset(pooled_.fd());
    pooled_.close();
  }
  auto done = std::move(done_callback_);
  done(std::move(result));
}

Fd PoolHandoff::cancel() {
  done_ = true;
  ack_deadline_.cancel();
  set_low_water_mark(external_.fd(), 1);
  set_linger_reset(pooled_.fd());
  pooled_.close();
  return external_.release();
}

}  // namespace tunnel::server
