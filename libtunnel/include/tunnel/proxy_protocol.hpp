// The PROXY protocol (HAProxy's, versions 1 and 2): the header a proxy puts in front of a TCP
// stream to say whom the connection really came from. The tunnel sends one to a target that asks
// for it (nginx's `proxy_protocol`, sshd behind HAProxy) and accepts one on port A behind a load
// balancer. Pure functions over bytes; the sockets live elsewhere.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "tunnel/address.hpp"

namespace tunnel::proxy_protocol {

enum class Version { v1, v2 };

// The header for a TCP connection from `source` to `destination` (both IPv4 or both IPv6; an
// IPv4-mapped IPv6 address counts as IPv4). Mixed or other families give the "unknown" form
// (v1 `PROXY UNKNOWN`, v2 LOCAL), which tells the receiver to use the connection's own addresses.
std::string header(Version version, const SocketAddress& source, const SocketAddress& destination);

// The longest header parse() reads before deciding: v1 is at most 107 bytes, and a v2 header
// longer than this (with TLVs) is refused rather than buffered without bound.
inline constexpr size_t kMaxHeader = 536;

struct Parsed {
  enum class Status {
    incomplete,  // a prefix of a valid header: read more
    invalid,     // not a PROXY header, or a broken one: close the connection
    complete,    // `length` bytes are the header; the stream's own bytes follow
  };
  Status status = Status::incomplete;
  size_t length = 0;
  Version version = Version::v1;
  // The addresses it carries; empty for v1 UNKNOWN and v2 LOCAL/UNSPEC (use the socket's own).
  std::optional<SocketAddress> source;
  std::optional<SocketAddress> destination;
  std::string error;  // when invalid: one line for the log
};

// Reads a header at the start of `bytes` (which may hold more than the header).
Parsed parse(std::string_view bytes);

}  // namespace tunnel::proxy_protocol
