// PROXY protocol v1 (text) and v2 (binary), as HAProxy's proxy-protocol.txt specifies them.
#include "tunnel/proxy_protocol.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <array>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tunnel/words.hpp"

namespace tunnel::proxy_protocol {
namespace {

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr size_t kV1Max = 107;  // the longest v1 line, CRLF included
constexpr std::string_view kV2Signature{"\r\n\r\n\0\r\nQUIT\n", 12};
constexpr size_t kV2Fixed = 16;  // signature, version/command, family, length

// One end of a TCP connection, with IPv4-mapped IPv6 addresses taken as the IPv4 they are.
struct Endpoint {
  int family = AF_UNSPEC;
  std::array<uint8_t, 16> address{};  // 4 bytes used for AF_INET
  uint16_t port = 0;
};

Endpoint endpoint_of(const SocketAddress& a) {
  Endpoint e;
  if (a.family() == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&a.storage);
    e.family = AF_INET;
    std::memcpy(e.address.data(), &in->sin_addr, 4);
    e.port = ntohs(in->sin_port);
  } else if (a.family() == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a.storage);
    e.port = ntohs(in6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      e.family = AF_INET;
      std::memcpy(e.address.data(), in6->sin6_addr.s6_addr + 12, 4);
    } else {
      e.family = AF_INET6;
      std::memcpy(e.address.data(), in6->sin6_addr.s6_addr, 16);
    }
  }
  return e;
}

SocketAddress address_of(int family, const uint8_t* address, uint16_t port) {
  SocketAddress a;
  if (family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&a.storage);
    in->sin_family = AF_INET;
    std::memcpy(&in->sin_addr, address, 4);
    in->sin_port = htons(port);
    a.length = sizeof(sockaddr_in);
  } else {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
    in6->sin6_family = AF_INET6;
    std::memcpy(&in6->sin6_addr, address, 16);
    in6->sin6_port = htons(port);
    a.length = sizeof(sockaddr_in6);
  }
  return a;
}

std::string text_of(const Endpoint& e) {
  char buffer[INET6_ADDRSTRLEN] = {};
  inet_ntop(e.family, e.address.data(), buffer, sizeof buffer);
  return buffer;
}

void put16(std::string& out, uint16_t value) {
  out += static_cast<char>(value >> 8);
  out += static_cast<char>(value & 0xff);
}

uint16_t get16(std::string_view bytes, size_t at) {
  return static_cast<uint16_t>((static_cast<uint8_t>(bytes[at]) << 8) |
                               static_cast<uint8_t>(bytes[at + 1]));
}

Parsed invalid(std::string error) {
  Parsed p;
  p.status = Parsed::Status::invalid;
  p.error = std::move(error);
  return p;
}

std::optional<uint16_t> port_of(std::string_view text) {
  // Decimal, no sign, no leading zero (the specification's form).
  if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0')) return std::nullopt;
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value > 65535) return std::nullopt;
  return static_cast<uint16_t>(value);
}

Parsed parse_v1(std::string_view bytes) {
  auto end = bytes.substr(0, kV1Max).find("\r\n");
  if (end == std::string_view::npos) {
    if (bytes.size() >= kV1Max) return invalid("PROXY v1 line without CRLF within 107 bytes");
    if (bytes.find('\n') != std::string_view::npos) return invalid("PROXY v1 line ends in LF");
    return {};
  }
  Parsed p;
  p.version = Version::v1;
  p.length = end + 2;
  auto words = split_words(bytes.substr(0, end));
  if (words.size() >= 2 && words[1] == "UNKNOWN") {
    p.status = Parsed::Status::complete;
    return p;
  }
  if (words.size() != 6) return invalid("PROXY v1 line needs protocol, two addresses, two ports");
  int family = words[1] == "TCP4" ? AF_INET : words[1] == "TCP6" ? AF_INET6 : AF_UNSPEC;
  if (family == AF_UNSPEC) return invalid("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN");
  std::array<uint8_t, 16> source{}, destination{};
  auto source_port = port_of(words[4]), destination_port = port_of(words[5]);
  if (inet_pton(family, std::string(words[2]).c_str(), source.data()) != 1 ||
      inet_pton(family, std::string(words[3]).c_str(), destination.data()) != 1)
    return invalid("PROXY v1 address does not match its protocol");
  if (!source_port || !destination_port) return invalid("PROXY v1 port is not 0-65535");
  p.source = address_of(family, source.data(), *source_port);
  p.destination = address_of(family, destination.data(), *destination_port);
  p.status = Parsed::Status::complete;
  return p;
}

Parsed parse_v2(std::string_view bytes) {
  if (bytes.size() < kV2Fixed) return {};
  const auto version_command = static_cast<uint8_t>(bytes[12]);
  const auto family = static_cast<uint8_t>(bytes[13]);
  const size_t length = get16(bytes, 14);
  if ((version_command >> 4) != 2) return invalid("PROXY v2 header with another version");
  const uint8_t command = version_command & 0x0f;
  if (command > 1) return invalid("PROXY v2 command is neither LOCAL nor PROXY");
  if (kV2Fixed + length > kMaxHeader) return invalid("PROXY v2 header longer than 536 bytes");
  if (bytes.size() < kV2Fixed + length) return {};
  Parsed p;
  p.version = Version::v2;
  p.length = kV2Fixed + length;
  p.status = Parsed::Status::complete;
  // LOCAL (a health check of the balancer itself) and UNSPEC carry no addresses to use.
  if (command == 0 || family == 0x00) return p;
  const auto* body = reinterpret_cast<const uint8_t*>(bytes.data() + kV2Fixed);
  if (family == 0x11) {  // TCP over IPv4
    if (length < 12) return invalid("PROXY v2 IPv4 addresses cut short");
    p.source = address_of(AF_INET, body, get16(bytes, kV2Fixed + 8));
    p.destination = address_of(AF_INET, body + 4, get16(bytes, kV2Fixed + 10));
    return p;
  }
  if (family == 0x21) {  // TCP over IPv6
    if (length < 36) return invalid("PROXY v2 IPv6 addresses cut short");
    p.source = address_of(AF_INET6, body, get16(bytes, kV2Fixed + 32));
    p.destination = address_of(AF_INET6, body + 16, get16(bytes, kV2Fixed + 34));
    return p;
  }
  return invalid("PROXY v2 transport is not TCP over IPv4 or IPv6");
}

}  // namespace

std::string header(Version version, const SocketAddress& source, const SocketAddress& destination) {
  const Endpoint s = endpoint_of(source), d = endpoint_of(destination);
  const bool known = s.family != AF_UNSPEC && s.family == d.family;
  if (version == Version::v1) {
    if (!known) return "PROXY UNKNOWN\r\n";
    return std::string(kV1Prefix) + (s.family == AF_INET ? "TCP4 " : "TCP6 ") + text_of(s) + " " +
           text_of(d) + " " + std::to_string(s.port) + " " + std::to_string(d.port) + "\r\n";
  }
  std::string out(kV2Signature);
  if (!known) {
    out += '\x20';  // version 2, LOCAL
    out += '\x00';  // UNSPEC
    put16(out, 0);
    return out;
  }
  const size_t size = s.family == AF_INET ? 4 : 16;
  out += '\x21';  // version 2, PROXY
  out += s.family == AF_INET ? '\x11' : '\x21';
  put16(out, static_cast<uint16_t>(2 * size + 4));
  out.append(reinterpret_cast<const char*>(s.address.data()), size);
  out.append(reinterpret_cast<const char*>(d.address.data()), size);
  put16(out, s.port);
  put16(out, d.port);
  return out;
}

Parsed parse(std::string_view bytes) {
  // Decide by the first bytes; a prefix of either signature may still become a header.
  const size_t v1_seen = std::min(bytes.size(), kV1Prefix.size());
  if (bytes.substr(0, v1_seen) == kV1Prefix.substr(0, v1_seen))
    return v1_seen == kV1Prefix.size() ? parse_v1(bytes) : Parsed{};
  const size_t v2_seen = std::min(bytes.size(), kV2Signature.size());
  if (bytes.substr(0, v2_seen) == kV2Signature.substr(0, v2_seen))
    return v2_seen == kV2Signature.size() ? parse_v2(bytes) : Parsed{};
  return invalid("no PROXY protocol header");
}

}  // namespace tunnel::proxy_protocol
