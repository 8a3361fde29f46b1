// PoolHandoff in-process: the visitor on real loopback TCP (SO_RCVLOWAT is a TCP matter), the
// pooled connection a socketpair the test answers on. What goes ahead of READY is only peeked, so
// every failure hands the visitor back with all its bytes; READY consumes exactly what was sent;
// a stalled visitor does not wake the loop; the client's lines may come in pieces, and what
// follows READY stays for the relay.
#include "pool_handoff.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "state_support.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/socket.hpp"

using namespace std::chrono_literals;
using namespace state_tests;
using tunnel::ConnId;
using tunnel::Fd;
using tunnel::server::HandoffOutcome;
using tunnel::server::PoolHandoff;

namespace {

// A TCP connection over 127.0.0.1: the visitor's end (the test writes on it) and the server's.
struct Visitor {
  Fd visitor;
  Fd server_side;
};

Visitor visitor_connection(LoopbackListener& listener) {
  const auto& where = listener.address();
  Fd visitor(::socket(where.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(::connect(visitor.get(), reinterpret_cast<const sockaddr*>(&where.storage),
                    where.length) == 0);
  Fd accepted;
  for (int tries = 0; tries < 500 && !accepted; ++tries) {
    pollfd ready{visitor.get(), POLLOUT, 0};
    ::poll(&ready, 1, 10);
    accepted = listener.accept_one();
  }
  REQUIRE(accepted);
  return {std::move(visitor), std::move(accepted)};
}

// What is readable on `fd` now, waiting up to ~1 s for the first `size` bytes.
std::string read_some_bytes(int fd, size_t size) {
  std::string got;
  for (int round = 0; round < 100 && got.size() < size; ++round) {
    pollfd readable{fd, POLLIN, 0};
    if (::poll(&readable, 1, 10) < 0) break;
    if (!read_available(fd, got)) break;
  }
  return got;
}

struct Harness {
  ManualLoop manual;
  LoopbackListener listener;
  Visitor v = visitor_connection(listener);
  SocketPair pooled = socket_pair();
  const ConnId id = ConnId::random();
  std::unique_ptr<PoolHandoff> handoff;
  std::optional<PoolHandoff::Result> result;

  void start(std::string preamble = {}) {
    if (preamble.empty()) preamble = tunnel::protocol::new_conn(id, "web");
    handoff = std::make_unique<PoolHandoff>(manual.loop, id, std::move(v.server_side),
                                            plain(std::move(pooled.ours)), preamble, 1s,
                                            [this](PoolHandoff::Result r) {
                                              CHECK(!result);
                                              result = std::move(r);
                                            });
    handoff->start();
  }
  bool finish() {
    return manual.pump_until([this] { return result.has_value(); });
  }
  // What the client side of the pooled connection has received, waiting for `size` bytes.
  std::string client_got(size_t size) {
    std::string got;
    manual.pump_until([&] {
      read_available(pooled.theirs.get(), got);
      return got.size() >= size;
    });
    return got;
  }
  void client_says(std::string_view bytes) { REQUIRE(write_all(pooled.theirs.get(), bytes)); }
  void visitor_says(std::string_view bytes) { REQUIRE(write_all(v.visitor.get(), bytes)); }
};

}  // namespace

TEST_CASE("pool handoff: NEW and the visitor's bytes go ahead; READY consumes exactly them") {
  Harness h;
  h.visitor_says("GET / HTTP/1.1\r\n");
  h.start();
  const std::string line = tunnel::protocol::new_conn(h.id, "web");
  h.manual.pump_until([&] { return h.handoff->peeks() > 0; });
  CHECK(h.client_got(line.size() + 16) == line + "GET / HTTP/1.1\r\n");
  h.visitor_says("Host: x\r\n");
  CHECK(h.client_got(9) == "Host: x\r\n");
  // TAKEN and READY in pieces, the target's first bytes in the same write as READY.
  h.client_says("TAK");
  h.manual.settle();
  h.client_says("EN " + h.id.hex() + "\nREADY " + h.id.hex() + "\nHTTP/1.1 200");
  REQUIRE(h.finish());
  CHECK(h.result->outcome == HandoffOutcome::ready);
  CHECK(h.result->early_bytes == 25);
  // The visitor's bytes sent ahead left its socket; what it sends now is the relay's.
  h.visitor_says("rest");
  CHECK(read_some_bytes(h.result->external.get(), 4) == "rest");
  // Over plain TCP the target's bytes after READY are still in the pooled socket.
  CHECK(read_some_bytes(h.result->pooled.fd.get(), 12) == "HTTP/1.1 200");
  CHECK(h.result->pooled.unread.empty());
}

TEST_CASE(
    "pool handoff: no TAKEN within the timeout: dead, and the visitor's bytes all still there") {
  Harness h;
  h.visitor_says("hello");
  h.start();
  h.manual.pump_until([&] { return h.handoff->peeks() > 0; });
  h.manual.settle();
  CHECK_FALSE(h.result);
  h.manual.advance(1100ms);
  REQUIRE(h.finish());
  CHECK(h.result->outcome == HandoffOutcome::dead);
  CHECK(read_some_bytes(h.result->external.get(), 5) == "hello");
  // The pooled connection was closed: the client learns it.
  std::string all;
  CHECK(h.manual.pump_until([&] { return !read_available(h.pooled.theirs.get(), all); }));
}

TEST_CASE("pool handoff: no TAKEN, but the client's host took every byte: waited for, not dead") {
  Harness h;
  h.visitor_says("request");
  h.start();
  const std::string line = tunnel::protocol::new_conn(h.id, "web");
  CHECK(h.client_got(line.size() + 7) == line + "request");  // read: nothing unacknowledged
  h.manual.advance(1100ms);
  h.manual.settle();
  h.manual.advance(5s);
  h.manual.settle();
  CHECK_FALSE(h.result);
  h.client_says("TAKEN " + h.id.hex() + "\nREADY " + h.id.hex() + "\n");
  REQUIRE(h.finish());
  CHECK(h.result->outcome == HandoffOutcome::ready);
}

TEST_CASE("pool handoff: TAKEN stops the timeout; FAIL then gives the visitor back untouched") {
  Harness h;
  h.visitor_says("request");
  h.start();
  h.client_says("TAKEN " + h.id.hex() + "\n");
  h.manual.settle();
  h.manual.advance(5s);
  h.manual.settle();
  CHECK_FALSE(h.result);
  h.client_says("FAIL " + h.id.hex() + " connection-refused\n");
  REQUIRE(h.finish());
  CHECK(h.result->outcome == HandoffOutcome::target_failed);
  CHECK(h.result->detail == "connection-refused");
  CHECK(read_some_bytes(h.result->external.get(), 7) == "request");
}

TEST_CASE("pool handoff: a wrong id, a closed pooled connection or a visitor reset end it") {
  SECTION("a line for another id") {
    Harness h;
    h.start();
    h.client_says("TAKEN " + ConnId::random().hex() + "\n");
    REQUIRE(h.finish());
    CHECK(h.result->outcome == HandoffOutcome::dead);
  }
  SECTION("the pooled connection closes before READY") {
    Harness h;
    h.start();
    h.pooled.theirs.reset();
    REQUIRE(h.finish());
    CHECK(h.result->outcome == HandoffOutcome::dead);
  }
  SECTION("the visitor resets") {
    Harness h;
    h.start();
    tunnel::set_linger_reset(h.v.visitor.get());
    h.v.visitor.reset();
    REQUIRE(h.finish());
    CHECK(h.result->outcome == HandoffOutcome::visitor_gone);
  }
}

TEST_CASE("pool handoff: a stalled visitor and a visitor's FIN do not wake the loop again") {
  Harness h;
  h.start();
  h.visitor_says("partial request");
  h.manual.pump_until([&] { return h.handoff->peeks() > 0; });
  h.manual.settle(20);
  const uint64_t stalled = h.handoff->peeks();
  h.manual.settle(20);
  CHECK(h.handoff->peeks() == stalled);
  ::shutdown(h.v.visitor.get(), SHUT_WR);
  h.manual.pump_until([&] { return h.handoff->peeks() > stalled; });
  h.manual.settle(20);
  const uint64_t after_fin = h.handoff->peeks();
  h.manual.settle(20);
  CHECK(h.handoff->peeks() == after_fin);
  CHECK(after_fin <= stalled + 2);
  // READY still works, and the FIN is there for the relay after the bytes.
  h.client_says("READY " + h.id.hex() + "\n");
  REQUIRE(h.finish());
  REQUIRE(h.result->outcome == HandoffOutcome::ready);
  char byte;
  CHECK(::recv(h.result->external.get(), &byte, 1, MSG_DONTWAIT) == 0);
}

TEST_CASE(
    "pool handoff: at most 64 KiB go ahead of READY; the rest waits in the visitor's socket") {
  Harness h;
  // The client reads everything, so the bound is the handoff's and not the socket buffers'.
  const std::string upload(200 * 1024, 'u');
  h.start();
  std::string sent_ahead;
  size_t written = 0;
  for (int round = 0; round < 2000 && sent_ahead.size() < PoolHandoff::kMaxEarlyBytes + 64;
       ++round) {
    if (written < upload.size()) {
      long n = ::send(h.v.visitor.get(), upload.data() + written, upload.size() - written,
                      MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) written += static_cast<size_t>(n);
    }
    h.manual.settle(1);
    read_available(h.pooled.theirs.get(), sent_ahead);
    if (round > 200 && sent_ahead.size() >= PoolHandoff::kMaxEarlyBytes) break;
  }
  const std::string line = tunnel::protocol::new_conn(h.id, "web");
  CHECK(sent_ahead.size() == line.size() + PoolHandoff::kMaxEarlyBytes);
  h.client_says("READY " + h.id.hex() + "\n");
  REQUIRE(h.finish());
  REQUIRE(h.result->outcome == HandoffOutcome::ready);
  CHECK(h.result->early_bytes == PoolHandoff::kMaxEarlyBytes);
}
