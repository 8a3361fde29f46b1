// PROXY protocol v1/v2: the headers as HAProxy's specification spells them, parsing at every
// prefix (incomplete, never invalid), the payload after the header left alone, and broken headers.
#include "tunnel/proxy_protocol.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <string>

using namespace tunnel;
namespace pp = tunnel::proxy_protocol;
using Status = pp::Parsed::Status;

namespace {

SocketAddress v4(const char* ip, uint16_t port) {
  SocketAddress a;
  auto* in = reinterpret_cast<sockaddr_in*>(&a.storage);
  in->sin_family = AF_INET;
  in->sin_port = htons(port);
  REQUIRE(inet_pton(AF_INET, ip, &in->sin_addr) == 1);
  a.length = sizeof(sockaddr_in);
  return a;
}

SocketAddress v6(const char* ip, uint16_t port) {
  SocketAddress a;
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(port);
  REQUIRE(inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1);
  a.length = sizeof(sockaddr_in6);
  return a;
}

// Every proper prefix of a header is incomplete, the whole is complete with its own length, and
// bytes after it are not taken.
pp::Parsed parse_whole(const std::string& header) {
  for (size_t n = 0; n < header.size(); ++n) {
    INFO("prefix of " << n << " bytes");
    CHECK(pp::parse(std::string_view(header).substr(0, n)).status == Status::incomplete);
  }
  auto parsed = pp::parse(header + "GET / HTTP/1.1\r\n");
  REQUIRE(parsed.status == Status::complete);
  CHECK(parsed.length == header.size());
  return parsed;
}

}  // namespace

TEST_CASE("proxy protocol v1: the specification's example, both ways") {
  const std::string line = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
  CHECK(pp::header(pp::Version::v1, v4("192.168.0.1", 56324), v4("192.168.0.11", 443)) == line);
  auto parsed = parse_whole(line);
  CHECK(parsed.version == pp::Version::v1);
  REQUIRE(parsed.source);
  CHECK(parsed.source->to_string() == "192.168.0.1:56324");
  CHECK(parsed.destination->to_string() == "192.168.0.11:443");
}

TEST_CASE("proxy protocol v1: IPv6, IPv4-mapped and mixed families") {
  CHECK(pp::header(pp::Version::v1, v6("2001:db8::1", 40000), v6("2001:db8::2", 22)) ==
        "PROXY TCP6 2001:db8::1 2001:db8::2 40000 22\r\n");
  // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d: they are IPv4.
  CHECK(pp::header(pp::Version::v1, v6("::ffff:10.0.0.7", 5000), v6("::ffff:10.0.0.1", 80)) ==
        "PROXY TCP4 10.0.0.7 10.0.0.1 5000 80\r\n");
  CHECK(pp::header(pp::Version::v1, v4("10.0.0.7", 5000), v6("2001:db8::2", 80)) ==
        "PROXY UNKNOWN\r\n");
  auto unknown = parse_whole("PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n");
  CHECK_FALSE(unknown.source);
  auto six = parse_whole("PROXY TCP6 2001:db8::1 2001:db8::2 40000 22\r\n");
  CHECK(six.source->to_string() == "[2001:db8::1]:40000");
}

TEST_CASE("proxy protocol v2: IPv4 and IPv6 headers byte for byte, and back") {
  const std::string sig("\r\n\r\n\0\r\nQUIT\n", 12);
  const std::string four =
      pp::header(pp::Version::v2, v4("192.168.0.1", 56324), v4("192.168.0.11", 443));
  const std::string expected4 = sig + std::string("\x21\x11\x00\x0c", 4) +
                                std::string("\xc0\xa8\x00\x01\xc0\xa8\x00\x0b", 8) +
                                std::string("\xdc\x04\x01\xbb", 4);
  CHECK(four == expected4);
  auto parsed4 = parse_whole(four);
  CHECK(parsed4.version == pp::Version::v2);
  CHECK(parsed4.source->to_string() == "192.168.0.1:56324");
  CHECK(parsed4.destination->to_string() == "192.168.0.11:443");

  const std::string six = pp::header(pp::Version::v2, v6("2001:db8::1", 1), v6("2001:db8::2", 2));
  CHECK(six.size() == 16 + 36);
  CHECK(six.substr(12, 4) == std::string("\x21\x21\x00\x24", 4));
  auto parsed6 = parse_whole(six);
  CHECK(parsed6.source->to_string() == "[2001:db8::1]:1");
  CHECK(parsed6.destination->to_string() == "[2001:db8::2]:2");
}

TEST_CASE("proxy protocol v2: LOCAL, unknown families and TLVs") {
  const std::string sig("\r\n\r\n\0\r\nQUIT\n", 12);
  // Mixed families: LOCAL, no addresses (the receiver keeps the connection's own).
  const std::string local = pp::header(pp::Version::v2, v4("10.0.0.1", 1), v6("::1", 2));
  CHECK(local == sig + std::string("\x20\x00\x00\x00", 4));
  CHECK_FALSE(parse_whole(local).source);
  // TLVs after the addresses belong to the header and are skipped.
  std::string with_tlv = pp::header(pp::Version::v2, v4("10.0.0.1", 1), v4("10.0.0.2", 2));
  with_tlv[15] = static_cast<char>(12 + 7);
  with_tlv += std::string(
      "\x04\x00\x04"
      "abcd",
      7);  // PP2_TYPE_NOOP, 4 bytes
  auto parsed = parse_whole(with_tlv);
  CHECK(parsed.length == 16 + 19);
  CHECK(parsed.source->to_string() == "10.0.0.1:1");
}

TEST_CASE("proxy protocol: broken or missing headers are invalid, with a reason") {
  const std::string sig("\r\n\r\n\0\r\nQUIT\n", 12);
  std::string long_v2 = sig + std::string("\x21\x11\x03\x00", 4);  // 768 bytes of body: too long
  std::string v1_too_long = "PROXY TCP4 " + std::string(100, '1');
  for (const std::string& bytes : {
           std::string("GET / HTTP/1.1\r\n"),
           std::string("TUNNEL/1 DATA x\n"),
           std::string("PROXY TCP5 1.2.3.4 1.2.3.5 1 2\r\n"),
           std::string("PROXY TCP4 1.2.3.4 1.2.3.5 1\r\n"),
           std::string("PROXY TCP4 1.2.3.4 ::1 1 2\r\n"),
           std::string("PROXY TCP4 1.2.3.4 1.2.3.5 65536 2\r\n"),
           std::string("PROXY TCP4 1.2.3.4 1.2.3.5 01 2\r\n"),
           std::string("PROXY TCP4 1.2.3.4 1.2.3.5 1 2\n"),
           v1_too_long,
           sig + std::string("\x11\x11\x00\x0c", 4),  // version 1 in a v2 header
           sig + std::string("\x22\x11\x00\x0c", 4),  // command 2
           sig + std::string("\x21\x12\x00\x0c", 4) + std::string(12, '\0'),  // UDP
           sig + std::string("\x21\x11\x00\x08", 4) + std::string(8, '\0'),   // cut short
           long_v2,
       }) {
    INFO("bytes: " << bytes);
    auto parsed = pp::parse(bytes);
    CHECK(parsed.status == Status::invalid);
    CHECK_FALSE(parsed.error.empty());
  }
}
