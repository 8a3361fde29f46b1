// Addresses for flags and config: `:port`, `host:port`, `[v6]:port`; port 0 only where listening
// on an ephemeral port is meant. Bad text is refused with a readable reason.
#include "tunnel/address.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <catch2/catch.hpp>
#include <stdexcept>
#include <string>

using tunnel::HostPort;
using tunnel::parse_host_port;

namespace {

std::string rejection_of(const std::string& text, bool allow_port_zero = false) {
  try {
    auto hp = parse_host_port(text, allow_port_zero);
    FAIL("'" << text << "' was accepted as host '" << hp.host << "' port " << hp.port);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return {};
}

}  // namespace

TEST_CASE("address: :port means every local address") {
  auto hp = parse_host_port(":7000", false);
  CHECK(hp.host.empty());
  CHECK(hp.port == 7000);
}

TEST_CASE("address: host:port with a name or an IPv4 address") {
  auto named = parse_host_port("example.org:443", false);
  CHECK(named.host == "example.org");
  CHECK(named.port == 443);
  auto v4 = parse_host_port("127.0.0.1:65535", false);
  CHECK(v4.host == "127.0.0.1");
  CHECK(v4.port == 65535);
  CHECK(parse_host_port("localhost:1", false).port == 1);
}

TEST_CASE("address: a bracketed IPv6 host with a port") {
  auto loopback = parse_host_port("[::1]:8080", false);
  CHECK(loopback.host == "::1");
  CHECK(loopback.port == 8080);
  auto any = parse_host_port("[::]:22", false);
  CHECK(any.host == "::");
  CHECK(parse_host_port("[fe80::1%eth0]:22", false).host == "fe80::1%eth0");
}

TEST_CASE("address: port 0 is accepted only when allowed") {
  CHECK(parse_host_port(":0", true).port == 0);
  CHECK(parse_host_port("127.0.0.1:0", true).port == 0);
  CHECK(parse_host_port("[::1]:0", true).port == 0);
  CHECK_THAT(rejection_of(":0", false), Catch::Contains("0"));
  CHECK_FALSE(rejection_of("127.0.0.1:0", false).empty());
  CHECK_FALSE(rejection_of("[::1]:0", false).empty());
}

TEST_CASE("address: ports above 65535 or not numbers are rejected") {
  for (const std::string& text :
       std::vector<std::string>{":65536", "host:70000", "[::1]:99999", "host:4294967297",
                                "host:99999999999999999999", "host:-1", "host:+80", "host:80x",
                                "host:x80", "host: 80", "host:8 0", "host:0x50", "host:http"}) {
    auto message = rejection_of(text, true);
    CHECK_FALSE(message.empty());
  }
}

TEST_CASE("address: a missing port is rejected and the message says how to write one") {
  CHECK_THAT(rejection_of("example.org"), Catch::Contains("port"));
  CHECK_FALSE(rejection_of("").empty());
  CHECK_FALSE(rejection_of("example.org:").empty());
  CHECK_FALSE(rejection_of(":").empty());
  CHECK_FALSE(rejection_of("[::1]").empty());
  CHECK_FALSE(rejection_of("[::1]:").empty());
}

TEST_CASE("address: unbracketed IPv6 is rejected and the message says to use brackets") {
  CHECK_THAT(rejection_of("::1:8080"), Catch::Contains("[") && Catch::Contains("]"));
  CHECK_FALSE(rejection_of("fe80::1:22").empty());
  CHECK_FALSE(rejection_of("::1").empty());
}

TEST_CASE("address: broken brackets are rejected") {
  for (const std::string& text : std::vector<std::string>{"[::1:80", "[]:80", "[::1]80",
                                                          "[::1]x:80", "::1]:80", "[[::1]]:80"}) {
    CHECK_FALSE(rejection_of(text).empty());
  }
}

TEST_CASE("address: HostPort::to_string writes back what parses to the same value") {
  for (const std::string& text : std::vector<std::string>{":7000", "example.org:443", "127.0.0.1:1",
                                                          "[::1]:8080", "[::]:0"}) {
    auto hp = parse_host_port(text, true);
    CHECK(hp.to_string() == text);
    auto again = parse_host_port(hp.to_string(), true);
    CHECK(again.host == hp.host);
    CHECK(again.port == hp.port);
  }
}

TEST_CASE("address: resolve turns numeric hosts into socket addresses") {
  auto v4 = tunnel::resolve(HostPort{"127.0.0.1", 9000}, false);
  REQUIRE_FALSE(v4.empty());
  CHECK(v4.front().family() == AF_INET);
  CHECK(v4.front().to_string() == "127.0.0.1:9000");

  auto v6 = tunnel::resolve(HostPort{"::1", 9001}, false);
  REQUIRE_FALSE(v6.empty());
  CHECK(v6.front().family() == AF_INET6);
  CHECK(v6.front().to_string() == "[::1]:9001");
}

TEST_CASE("address: resolving the wildcard for listening prefers IPv6 (dual stack)") {
  auto all = tunnel::resolve(HostPort{"", 9002}, true);
  REQUIRE_FALSE(all.empty());
  bool has_v6 = false;
  for (const auto& a : all) has_v6 = has_v6 || a.family() == AF_INET6;
  if (has_v6) CHECK(all.front().family() == AF_INET6);
  for (const auto& a : all) {
    CHECK((a.family() == AF_INET || a.family() == AF_INET6));
    CHECK_THAT(a.to_string(), Catch::EndsWith(":9002"));
  }
}

TEST_CASE("address: resolve throws a runtime_error naming the address when nothing resolves") {
  // Not a valid host name, so the resolver refuses it without asking DNS: no network needed.
  try {
    tunnel::resolve(HostPort{"not a host!", 80}, false);
    FAIL("'not a host!' resolved");
  } catch (const std::runtime_error& e) {
    CHECK_THAT(std::string(e.what()), Catch::Contains("not a host!:80"));
  }
}
