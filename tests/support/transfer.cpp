// Streaming seeded payloads with byte-by-byte verification.
#include "support/transfer.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "support/payload.hpp"

namespace tunnel::test {

std::string ReceiveReport::describe() const {
  std::string out = std::to_string(received) + " bytes received, then " + to_string(end);
  if (first_mismatch) out += ", first wrong byte at offset " + std::to_string(*first_mismatch);
  return out;
}

SendReport send_stream(const Socket& socket, uint64_t seed, uint64_t size, Millis stall) {
  SendReport report;
  report.checksum = fnv1a("");
  PayloadStream stream(seed);
  std::string chunk;
  while (report.sent < size) {
    stream.next(chunk, static_cast<size_t>(std::min<uint64_t>(256 * 1024, size - report.sent)));
    int error = 0;
    if (!try_send_all(socket, chunk, stall, error)) {
      report.error =
          "send failed after " + std::to_string(report.sent) + " bytes: " +
          (error == ETIMEDOUT ? "peer took nothing for " + std::to_string(stall.count()) + " ms"
                              : std::string(std::strerror(error)));
      return report;
    }
    report.checksum = fnv1a(chunk, report.checksum);
    report.sent += chunk.size();
  }
  if (::shutdown(socket.fd(), SHUT_WR) != 0) {
    report.error =
        "shutdown(SHUT_WR) after sending everything: " + std::string(std::strerror(errno));
  }
  return report;
}

ReceiveReport receive_stream(const Socket& socket, uint64_t seed, Millis stall) {
  ReceiveReport report;
  PayloadChecker checker(seed);
  while (true) {
    ReadResult r = read_some(socket, 256 * 1024, stall);
    if (r.end != End::complete) {
      report.end = r.end;
      break;
    }
    checker.check(r.data);
  }
  report.received = checker.checked();
  report.checksum = checker.checksum();
  report.first_mismatch = checker.first_mismatch();
  return report;
}

}  // namespace tunnel::test
