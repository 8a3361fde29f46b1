// Large seeded transfers over a socket: one side streams PayloadStream bytes, the other checks
// every byte as it arrives and reports count, first mismatch, checksum and how the stream ended.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "support/socket_io.hpp"

namespace tunnel::test {

struct SendReport {
  uint64_t sent = 0;
  uint64_t checksum = 0;  // FNV-1a of the bytes sent
  std::string error;      // empty when everything was sent
};

struct ReceiveReport {
  uint64_t received = 0;
  uint64_t checksum = 0;  // FNV-1a of the bytes received
  std::optional<uint64_t> first_mismatch;
  End end = End::timeout;  // how the stream ended after the expected bytes (or before them)
  std::string describe() const;
};

// Sends `size` bytes of the stream `seed`, then half-closes (FIN); `stall` bounds how long the peer
// may take nothing. Never throws, so it can run on a thread of its own.
SendReport send_stream(const Socket& socket, uint64_t seed, uint64_t size, Millis stall);
// Receives until EOF/reset/error (or `stall` without a byte), checking against the stream `seed`.
ReceiveReport receive_stream(const Socket& socket, uint64_t seed, Millis stall);

}  // namespace tunnel::test
