// Address parsing and start-up name resolution.
#include "tunnel/address.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <stdexcept>

namespace tunnel {
namespace {

uint16_t parse_port(std::string_view text, bool allow_zero) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value > 65535)
    throw std::invalid_argument(fmt::format("'{}' is not a port number (0-65535)", text));
  if (value == 0 && !allow_zero) throw std::invalid_argument("port 0 is not allowed here");
  return static_cast<uint16_t>(value);
}

}  // namespace

HostPort parse_host_port(std::string_view text, bool allow_port_zero) {
  HostPort result;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      throw std::invalid_argument(fmt::format("'{}' is not [ipv6]:port", text));
    result.host = std::string(text.substr(1, close - 1));
    if (result.host.empty()) throw std::invalid_argument("empty IPv6 address in brackets");
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos)
      throw std::invalid_argument(fmt::format("'{}' has no port (use host:port or :port)", text));
    result.host = std::string(text.substr(0, colon));
    if (result.host.find(':') != std::string::npos)
      throw std::invalid_argument(fmt::format("'{}': write IPv6 addresses as [addr]:port", text));
    port = text.substr(colon + 1);
  }
  result.port = parse_port(port, allow_port_zero);
  return result;
}

std::string HostPort::to_string() const {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

std::string SocketAddress::to_string() const {
  char text[INET6_ADDRSTRLEN] = "?";
  if (family() == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&storage);
    ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
    return fmt::format("{}:{}", text, ntohs(in->sin_port));
  }
  if (family() == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    return fmt::format("[{}]:{}", text, ntohs(in6->sin6_port));
  }
  return "unknown";
}

SocketAddresses resolve(const HostPort& where, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  std::string port = std::to_string(where.port);
  const char* host = where.host.empty() ? nullptr : where.host.c_str();
  addrinfo* list = nullptr;
  if (int rc = ::getaddrinfo(host, port.c_str(), &hints, &list); rc != 0)
    throw std::runtime_error(
        fmt::format("cannot resolve '{}': {}", where.to_string(), ::gai_strerror(rc)));
  std::vector<SocketAddress> out;
  for (auto* ai = list; ai; ai = ai->ai_next) {
    SocketAddress address;
    std::memcpy(&address.storage, ai->ai_addr, ai->ai_addrlen);
    address.length = ai->ai_addrlen;
    out.push_back(address);
  }
  ::freeaddrinfo(list);
  // For the wildcard, try IPv6 first: with IPV6_V6ONLY off one socket serves both families.
  if (host == nullptr)
    std::stable_partition(out.begin(), out.end(),
                          [](const SocketAddress& a) { return a.family() == AF_INET6; });
  if (out.empty())
    throw std::runtime_error(fmt::format("'{}' resolves to nothing", where.to_string()));
  return out;
}

SocketAddress local_address(int fd) {
  SocketAddress address;
  address.length = sizeof address.storage;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address.storage), &address.length);
  return address;
}

SocketAddress peer_address(int fd) {
  SocketAddress address;
  address.length = sizeof address.storage;
  ::getpeername(fd, reinterpret_cast<sockaddr*>(&address.storage), &address.length);
  return address;
}

}  // namespace tunnel
