// Parsing of `:port`, `host:port` and `[v6]:port`, and turning them into socket addresses.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tunnel {

struct HostPort {
  std::string host;  // empty for `:port` (every local address)
  uint16_t port = 0;
  std::string to_string() const;  // brackets an IPv6 host again
  bool operator==(const HostPort&) const = default;
};

// Throws std::invalid_argument with a readable reason. Port 0 is allowed only when allow_port_zero
// (listening on an ephemeral port).
HostPort parse_host_port(std::string_view text, bool allow_port_zero);

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
  int family() const { return storage.ss_family; }
  std::string to_string() const;  // numeric host:port, IPv6 in brackets
};

// Every address a name resolved to, tried in order when connecting.
using SocketAddresses = std::vector<SocketAddress>;

// Resolves with getaddrinfo. This may block on DNS, so it is called only at start-up, before the
// event loop runs. For `:port` with passive=true it yields the IPv6 wildcard (dual-stack) and the
// IPv4 wildcard as fallback. Throws std::runtime_error when nothing resolves.
SocketAddresses resolve(const HostPort& where, bool passive);

// The address a socket is bound to, and the one it is connected to.
SocketAddress local_address(int fd);
SocketAddress peer_address(int fd);

}  // namespace tunnel
