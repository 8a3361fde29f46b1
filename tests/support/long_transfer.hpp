// A long echo transfer through one connection of a service served by several clients, driven
// step by step by the test (a relay in flight across a kill, a freeze or a reload). Header-only:
// it checks with Catch's macros, so it belongs to the test that includes it.
#pragma once

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <string>

#include "support/payload.hpp"
#include "support/socket_io.hpp"

namespace tunnel::test {

// A long echo transfer through one connection, driven step by step by the test.
class LongTransfer {
 public:
  // Connects to `port` until the banner is `banner` (round robin may give another first).
  LongTransfer(uint16_t port, const std::string& banner, uint64_t seed)
      : stream_(seed), checker_(seed) {
    for (int attempt = 0; attempt < 10; ++attempt) {
      socket_ = connect_tcp(port);
      const ReadResult line = read_line(socket_, Millis(10000), 128);
      INFO("a banner: " << line.describe());
      REQUIRE(line.end == End::complete);
      if (line.data == banner) return;
    }
    FAIL("10 connections and none reached " << banner);
  }
  // Sends `size` more bytes and reads their echo, 64 KiB at a time.
  void exchange(size_t size) {
    std::string chunk;
    for (size_t done = 0; done < size;) {
      const size_t n = std::min<size_t>(65536, size - done);
      stream_.next(chunk, n);
      send_all(socket_, chunk);
      const std::string echoed = read_exact(socket_, n, Millis(10000));
      REQUIRE(checker_.check(echoed));
      done += n;
    }
  }
  // Half-closes and expects the target's EOF with nothing more.
  void finish() {
    shutdown_write(socket_);
    const ReadResult end = read_to_end(socket_, Millis(10000), 1);
    INFO("after " << checker_.checked() << " bytes echoed: " << end.describe());
    REQUIRE(closed_without_data(end));
    REQUIRE(end.end == End::eof);
  }
  uint64_t checked() const { return checker_.checked(); }

 private:
  Socket socket_;
  PayloadStream stream_;
  PayloadChecker checker_;
};

}  // namespace tunnel::test
