// Accepting connections, including when the process runs out of descriptors.
#include "tunnel/listener.hpp"

#include <fcntl.h>

#include <cerrno>
#include <stdexcept>

#include "tunnel/socket.hpp"

namespace tunnel {
namespace {

// Enough for a burst; the rest stay in the backlog and make the socket readable again.
constexpr int kAcceptsPerEvent = 64;
constexpr auto kPauseAfterFailure = std::chrono::milliseconds(100);

Fd open_reserve() {
  return Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
}

}  // namespace

Listener::Listener(EventLoop& loop, std::string name, const std::vector<SocketAddress>& candidates,
                   OnAccept on_accept)
    : loop_(loop),
      name_(std::move(name)),
      on_accept_(std::move(on_accept)),
      reserve_(open_reserve()),
      resume_(loop, [this] {
        if (channel_) channel_->set_interest(kReadable);
      }) {
  std::error_code ec;
  for (const auto& candidate : candidates) {
    Fd fd = listen_tcp(candidate, SOMAXCONN, ec);
    if (!fd) {
      // The IPv6 wildcard fails on hosts without IPv6: the IPv4 one is next in the list.
      if (ec == std::errc::address_family_not_supported) continue;
      throw std::runtime_error(
          fmt::format("cannot listen on {}: {}", candidate.to_string(), ec.message()));
    }
    address_ = local_address(fd.get());
    channel_ = std::make_unique<Channel>(loop_, std::move(fd), kReadable,
                                         [this](uint32_t) { on_readable(); });
    return;
  }
  throw std::runtime_error(fmt::format("cannot listen: {}", ec.message()));
}

void Listener::on_readable() {
  for (int i = 0; i < kAcceptsPerEvent && channel_; ++i) {
    std::error_code ec;
    Fd connection = accept_connection(channel_->fd(), ec);
    if (connection) {
      on_accept_(std::move(connection));
      continue;
    }
    if (!ec) return;  // backlog empty
    // Compare the raw value: error_code's operator== is a virtual call, and with no descriptor
    // left even the sanitizers' checks of that call fail.
    if ((ec.value() == EMFILE || ec.value() == ENFILE) && shed_one()) return;
    // The waiting connection cannot be taken now (no reserve descriptor, no kernel memory, ...):
    // stop listening for a moment instead of being woken for it again and again.
    uint64_t suppressed = 0;
    if (failure_log_.allow(suppressed))
      TLOG_WARN("event=accept-failed listener={} error=\"{}\" action=pause suppressed={}", name_,
                ec.message(), suppressed);
    channel_->set_interest(0);
    resume_.arm(kPauseAfterFailure);
    return;
  }
}

// Out of descriptors, the waiting connection would keep the listener readable and the loop
// spinning. Free the reserve, accept and close that connection, and take the reserve back.
// Returns false when that was not possible (no reserve: another process took the slot).
bool Listener::shed_one() {
  if (!reserve_) reserve_ = open_reserve();
  if (!reserve_) return false;
  uint64_t suppressed = 0;
  if (exhausted_log_.allow(suppressed))
    TLOG_WARN("event=fd-exhausted listener={} action=shed suppressed={}", name_, suppressed);
  reserve_.reset();
  std::error_code ec;
  Fd victim = accept_connection(channel_->fd(), ec);
  bool shed = static_cast<bool>(victim);
  victim.reset();
  reserve_ = open_reserve();
  return shed;
}

}  // namespace tunnel
