// ProxyHeaderReader in-process over real loopback TCP: complete v1/v2 headers, headers trickling
// in byte by byte, payload left untouched behind the header, invalid and oversized headers, EOF,
// reset and timeout, and a stalled partial header that must not wake the loop.
#include "proxy_header_reader.hpp"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "state_support.hpp"
#include "tunnel/socket.hpp"

using namespace std::chrono_literals;
using namespace state_tests;
using tunnel::Fd;
using tunnel::SocketAddress;
using tunnel::server::ProxiedAddresses;
using tunnel::server::ProxyHeaderFailure;
using tunnel::server::ProxyHeaderReader;
namespace pp = tunnel::proxy_protocol;

namespace {

SocketAddress address(const char* host, uint16_t port) {
  return tunnel::resolve(tunnel::HostPort{host, port}, false).front();
}

// One TCP connection over 127.0.0.1: the visitor's end (blocking, the test writes on it) and the
// accepted end (non-blocking, for the reader).
struct TcpPair {
  Fd visitor;
  Fd accepted;
};

TcpPair tcp_pair() {
  std::error_code ec;
  Fd listener = tunnel::listen_tcp(address("127.0.0.1", 0), 4, ec);
  REQUIRE(listener);
  SocketAddress where = tunnel::local_address(listener.get());
  Fd visitor(::socket(where.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(::connect(visitor.get(), reinterpret_cast<const sockaddr*>(&where.storage),
                    where.length) == 0);
  pollfd ready{listener.get(), POLLIN, 0};
  REQUIRE(::poll(&ready, 1, 5000) == 1);
  Fd accepted = tunnel::accept_connection(listener.get(), ec);
  REQUIRE(accepted);
  return {std::move(visitor), std::move(accepted)};
}

void reset_close(Fd& fd) {
  tunnel::set_linger_reset(fd.get());
  fd.reset();
}

int receive_low_water_mark(int fd) {
  int mark = 0;
  socklen_t length = sizeof mark;
  REQUIRE(::getsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &mark, &length) == 0);
  return mark;
}

// A v2 PROXY header of exactly `total` bytes: IPv4 addresses, then padding the receiver skips.
std::string v2_header_of_size(size_t total) {
  std::string header =
      pp::header(pp::Version::v2, address("192.0.2.1", 1111), address("192.0.2.2", 2222));
  REQUIRE(total >= header.size());
  const size_t body = total - 16;
  header[14] = static_cast<char>(body >> 8);
  header[15] = static_cast<char>(body & 0xff);
  header.append(total - header.size(), '\0');
  return header;
}

struct Harness {
  ManualLoop manual;
  std::unique_ptr<ProxyHeaderReader> reader;
  bool done = false;
  bool failed = false;
  Fd fd;
  ProxiedAddresses addresses;
  ProxyHeaderFailure failure = ProxyHeaderFailure::timeout;
  std::string detail;

  void start(Fd socket, tunnel::Duration timeout = 5s) {
    reader = std::make_unique<ProxyHeaderReader>(
        manual.loop, std::move(socket), timeout,
        [this](Fd handed, const ProxiedAddresses& got) {
          CHECK(!finished());
          done = true;
          fd = std::move(handed);
          addresses = got;
        },
        [this](Fd handed, ProxyHeaderFailure why, std::string_view text) {
          CHECK(!finished());
          failed = true;
          fd = std::move(handed);
          failure = why;
          detail = std::string(text);
        });
  }
  bool finished() const { return done || failed; }
  bool finish() {
    return manual.pump_until([this] { return finished(); });
  }
  // Pumps until the reader has looked at the socket more than `peeks` times.
  bool peeked_past(uint64_t peeks) {
    return manual.pump_until([&] { return reader->peeks() > peeks || finished(); });
  }
};

// Everything readable on `fd` until `size` bytes arrived (bounded).
std::string read_exactly(int fd, size_t size) {
  std::string got;
  for (int round = 0; round < 500 && got.size() < size; ++round) {
    pollfd readable{fd, POLLIN, 0};
    if (::poll(&readable, 1, 10) < 0) break;
    if (!read_available(fd, got)) break;
  }
  return got;
}

}  // namespace

TEST_CASE("a complete PROXY header is consumed and its addresses handed on with the socket") {
  struct Case {
    const char* source_host;
    const char* destination_host;
    const char* source;
    const char* destination;
  };
  auto version = GENERATE(pp::Version::v1, pp::Version::v2);
  auto c = GENERATE(Case{"203.0.113.7", "198.51.100.1", "203.0.113.7:40000", "198.51.100.1:443"},
                    Case{"2001:db8::7", "2001:db8::1", "[2001:db8::7]:40000", "[2001:db8::1]:443"});
  INFO((version == pp::Version::v1 ? "v1 " : "v2 ") << c.source << " -> " << c.destination);
  const auto src = address(c.source_host, 40000);
  const auto dst = address(c.destination_host, 443);
  Harness h;
  auto pair = tcp_pair();
  h.start(std::move(pair.accepted));
  REQUIRE(write_all(pair.visitor.get(), pp::header(version, src, dst)));
  REQUIRE(h.finish());
  REQUIRE(h.done);
  CHECK(h.addresses.version == version);
  CHECK(h.addresses.from_header);
  CHECK(h.addresses.source.to_string() == c.source);
  CHECK(h.addresses.destination.to_string() == c.destination);
  REQUIRE(h.fd);
  // Nothing is left of the header, and the socket wakes its next owner for a single byte again.
  std::string rest;
  CHECK(read_available(h.fd.get(), rest));
  CHECK(rest.empty());
  CHECK(receive_low_water_mark(h.fd.get()) == 1);
}

TEST_CASE("a header arriving byte by byte completes, one wake-up per byte") {
  auto version = GENERATE(pp::Version::v1, pp::Version::v2);
  const std::string header =
      pp::header(version, address("203.0.113.9", 5555), address("198.51.100.2", 80));
  Harness h;
  auto pair = tcp_pair();
  tunnel::set_nodelay(pair.visitor.get());
  h.start(std::move(pair.accepted));
  for (size_t i = 0; i < header.size(); ++i) {
    INFO("byte " << i << " of " << header.size());
    REQUIRE(!h.finished());
    uint64_t before = h.reader->peeks();
    REQUIRE(write_all(pair.visitor.get(), header.substr(i, 1)));
    REQUIRE(h.peeked_past(before));
  }
  REQUIRE(h.finish());
  REQUIRE(h.done);
  CHECK(h.addresses.source.to_string() == "203.0.113.9:5555");
  CHECK(h.addresses.destination.to_string() == "198.51.100.2:80");
  // A wake-up per write, not a loop spinning on bytes already seen.
  CHECK(h.reader->peeks() <= header.size() + 1);
}

TEST_CASE("bytes after the header stay in the socket, all of them, for the relay") {
  auto version = GENERATE(pp::Version::v1, pp::Version::v2);
  const std::string header =
      pp::header(version, address("203.0.113.7", 40000), address("198.51.100.1", 443));
  std::string payload(64 * 1024, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>('a' + i % 26);
  Harness h;
  auto pair = tcp_pair();
  h.start(std::move(pair.accepted));
  REQUIRE(write_all(pair.visitor.get(), header + payload));
  REQUIRE(h.finish());
  REQUIRE(h.done);
  CHECK(h.addresses.source.to_string() == "203.0.113.7:40000");
  const std::string got = read_exactly(h.fd.get(), payload.size());
  CHECK(got.size() == payload.size());
  CHECK(got == payload);
}

TEST_CASE("v2 LOCAL and v1 UNKNOWN hand on the socket's own addresses") {
  auto version = GENERATE(pp::Version::v1, pp::Version::v2);
  // Mixed families make the codec write the address-less form.
  const std::string header =
      pp::header(version, address("203.0.113.7", 1), address("2001:db8::1", 2));
  Harness h;
  auto pair = tcp_pair();
  const std::string visitor = tunnel::local_address(pair.visitor.get()).to_string();
  const std::string server = tunnel::peer_address(pair.visitor.get()).to_string();
  h.start(std::move(pair.accepted));
  REQUIRE(write_all(pair.visitor.get(), header + "hello"));
  REQUIRE(h.finish());
  REQUIRE(h.done);
  CHECK(h.addresses.version == version);
  CHECK_FALSE(h.addresses.from_header);
  CHECK(h.addresses.source.to_string() == visitor);
  CHECK(h.addresses.destination.to_string() == server);
  CHECK(read_exactly(h.fd.get(), 5) == "hello");
}

TEST_CASE("what is not a PROXY header fails as invalid with the parser's reason") {
  std::string v2_bad_version =
      pp::header(pp::Version::v2, address("192.0.2.1", 1), address("192.0.2.2", 2));
  v2_bad_version[12] = '\x11';
  auto [name, bytes, reason] = GENERATE_COPY(
      std::tuple{"garbage", std::string("\x01\x02\x03\x04garbage"), "no PROXY protocol header"},
      std::tuple{"an HTTP request", std::string("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
                 "no PROXY protocol header"},
      std::tuple{"v2 with version 1", v2_bad_version, "another version"},
      std::tuple{"v1 with a bad address", std::string("PROXY TCP4 1.2.3 4.5.6.7 1 2\r\n"),
                 "address"});
  INFO(name);
  Harness h;
  auto pair = tcp_pair();
  h.start(std::move(pair.accepted));
  REQUIRE(write_all(pair.visitor.get(), bytes));
  REQUIRE(h.finish());
  REQUIRE(h.failed);
  CHECK(h.failure == ProxyHeaderFailure::invalid);
  CHECK_THAT(h.detail, Catch::Contains(reason));
  CHECK(h.fd);
}

TEST_CASE("the header is bounded at 536 bytes") {
  SECTION("a v2 header of exactly 536 bytes is read, and the payload after it is untouched") {
    Harness h;
    auto pair = tcp_pair();
    h.start(std::move(pair.accepted));
    const std::string payload(4000, 'p');
    REQUIRE(write_all(pair.visitor.get(), v2_header_of_size(pp::kMaxHeader) + payload));
    REQUIRE(h.finish());
    REQUIRE(h.done);
    CHECK(h.addresses.source.to_string() == "192.0.2.1:1111");
    CHECK(read_exactly(h.fd.get(), payload.size()) == payload);
  }
  SECTION("a v2 header announcing 537 bytes is refused at once") {
    Harness h;
    auto pair = tcp_pair();
    h.start(std::move(pair.accepted));
    REQUIRE(write_all(pair.visitor.get(), v2_header_of_size(pp::kMaxHeader + 1)));
    REQUIRE(h.finish());
    REQUIRE(h.failed);
    CHECK(h.failure == ProxyHeaderFailure::invalid);
    CHECK_THAT(h.detail, Catch::Contains("longer than 536"));
  }
  SECTION("a v1 line without CRLF is refused once it is too long, before 536 bytes") {
    Harness h;
    auto pair = tcp_pair();
    h.start(std::move(pair.accepted));
    REQUIRE(write_all(pair.visitor.get(), "PROXY TCP4 " + std::string(2000, '1')));
    REQUIRE(h.finish());
    REQUIRE(h.failed);
    CHECK(h.failure == ProxyHeaderFailure::invalid);
    CHECK_THAT(h.detail, Catch::Contains("107"));
  }
}

TEST_CASE("EOF before a complete header fails as closed") {
  auto sent = GENERATE(std::string(), std::string("PROXY TCP4 192.0.2"),
                       std::string("\r\n\r\n\0\r\nQUIT\n\x21", 13));
  INFO("sent " << sent.size() << " bytes first");
  Harness h;
  auto pair = tcp_pair();
  h.start(std::move(pair.accepted));
  if (!sent.empty()) {
    uint64_t before = h.reader->peeks();
    REQUIRE(write_all(pair.visitor.get(), sent));
    REQUIRE(h.peeked_past(before));
  }
  REQUIRE(::shutdown(pair.visitor.get(), SHUT_WR) == 0);
  REQUIRE(h.finish());
  REQUIRE(h.failed);
  CHECK(h.failure == ProxyHeaderFailure::closed);
}

TEST_CASE("a reset before a complete header fails as reset") {
  auto sent = GENERATE(std::string(), std::string("PROXY TCP6 2001:db8"));
  INFO("sent " << sent.size() << " bytes first");
  Harness h;
  auto pair = tcp_pair();
  h.start(std::move(pair.accepted));
  if (!sent.empty()) {
    uint64_t before = h.reader->peeks();
    REQUIRE(write_all(pair.visitor.get(), sent));
    REQUIRE(h.peeked_past(before));
  }
  reset_close(pair.visitor);
  REQUIRE(h.finish());
  REQUIRE(h.failed);
  CHECK(h.failure == ProxyHeaderFailure::reset);
  CHECK_FALSE(h.detail.empty());
}

TEST_CASE("no complete header within the timeout fails as timeout") {
  auto sent = GENERATE(std::string(), std::string("PROXY TCP4 "));
  INFO("sent " << sent.size() << " bytes first");
  Harness h;
  auto pair = tcp_pair();
  h.start(std::move(pair.accepted), 3s);
  REQUIRE(write_all(pair.visitor.get(), sent));
  h.manual.settle();
  h.manual.advance(2999ms);
  h.manual.settle();
  REQUIRE_FALSE(h.finished());
  h.manual.advance(1ms);
  REQUIRE(h.finish());
  REQUIRE(h.failed);
  CHECK(h.failure == ProxyHeaderFailure::timeout);
}

TEST_CASE("a stalled partial header does not wake the loop, and completes when the rest comes") {
  auto version = GENERATE(pp::Version::v1, pp::Version::v2);
  const std::string header =
      pp::header(version, address("203.0.113.7", 40000), address("198.51.100.1", 443));
  Harness h;
  auto pair = tcp_pair();
  h.start(std::move(pair.accepted));
  REQUIRE(write_all(pair.visitor.get(), header.substr(0, header.size() - 3)));
  REQUIRE(h.peeked_past(0));
  REQUIRE(!h.finished());
  // A level-triggered loop woken by bytes it has already seen would peek on every round.
  const uint64_t peeks = h.reader->peeks();
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0; round < 10; ++round) h.manual.loop.run_once(20);
  CHECK(h.reader->peeks() == peeks);
  CHECK(std::chrono::steady_clock::now() - start >= 150ms);  // each round really slept
  REQUIRE(!h.finished());
  REQUIRE(write_all(pair.visitor.get(), header.substr(header.size() - 3) + "GET"));
  REQUIRE(h.finish());
  REQUIRE(h.done);
  CHECK(h.addresses.source.to_string() == "203.0.113.7:40000");
  CHECK(read_exactly(h.fd.get(), 3) == "GET");
}

TEST_CASE("on a socket that ignores SO_RCVLOWAT a stalled header still does not spin") {
  // A Unix socket reports readable whatever the low-water mark: the spurious-wake-up path.
  const std::string header =
      pp::header(pp::Version::v1, address("203.0.113.7", 40000), address("198.51.100.1", 443));
  Harness h;
  auto pair = socket_pair();
  h.start(std::move(pair.ours));
  REQUIRE(write_all(pair.theirs.get(), header.substr(0, 10)));
  REQUIRE(h.peeked_past(0));
  h.manual.settle();
  const uint64_t peeks = h.reader->peeks();
  for (int round = 0; round < 10; ++round) h.manual.loop.run_once(20);
  CHECK(h.reader->peeks() == peeks);
  REQUIRE(write_all(pair.theirs.get(), header.substr(10)));
  h.manual.advance(100ms);
  REQUIRE(h.finish());
  REQUIRE(h.done);
  CHECK(h.addresses.source.to_string() == "203.0.113.7:40000");
}

TEST_CASE("cancel closes the socket and calls neither callback") {
  Harness h;
  auto pair = tcp_pair();
  h.start(std::move(pair.accepted));
  REQUIRE(write_all(pair.visitor.get(), "PROXY "));
  REQUIRE(h.peeked_past(0));
  h.reader->cancel();
  h.manual.advance(10s);
  h.manual.settle();
  CHECK_FALSE(h.finished());
  CHECK(h.manual.pump_until([&] { return peer_closed(pair.visitor.get()); }));
}
