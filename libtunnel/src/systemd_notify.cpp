// sd_notify: one datagram to the unix socket named by NOTIFY_SOCKET ('@' = abstract namespace).
#include "tunnel/systemd_notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "tunnel/fd.hpp"

namespace tunnel::systemd {

bool notify(std::string_view state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || path[0] == '\0') return false;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  size_t length = std::strlen(path);
  if (length >= sizeof address.sun_path || (path[0] != '/' && path[0] != '@')) return false;
  std::memcpy(address.sun_path, path, length);
  if (path[0] == '@') address.sun_path[0] = '\0';
  Fd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  auto size = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + length);
  return ::sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL,
                  reinterpret_cast<const sockaddr*>(&address),
                  size) == static_cast<ssize_t>(state.size());
}

namespace {

// WATCHDOG_USEC applies only to us if WATCHDOG_PID is unset or names this process.
Clock::duration watchdog_interval() {
  const char* usec = std::getenv("WATCHDOG_USEC");
  if (usec == nullptr) return {};
  if (const char* pid = std::getenv("WATCHDOG_PID"); pid && std::atol(pid) != ::getpid()) return {};
  long long value = std::atoll(usec);
  return value > 0 ? std::chrono::microseconds(value) : Clock::duration{};
}

}  // namespace

Watchdog::Watchdog(EventLoop& loop)
    : pings_(loop, watchdog_interval() / 2, [] { notify("WATCHDOG=1"); }) {
  if (watchdog_interval() > Clock::duration::zero()) pings_.start();
}

}  // namespace tunnel::systemd
