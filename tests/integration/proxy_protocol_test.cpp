// The PROXY protocol against a real nginx: first the harness itself (nginx logs the address of a
// header the test sends, and refuses a connection without one), then the tunnel in front of it.
#include "tunnel/proxy_protocol.hpp"

#include <catch2/catch.hpp>
#include <string>

#include "support/nginx.hpp"
#include "support/socket_io.hpp"
#include "tunnel/address.hpp"

using namespace tunnel::test;
namespace pp = tunnel::proxy_protocol;

namespace {

tunnel::SocketAddress address(const std::string& host, uint16_t port) {
  return tunnel::resolve(tunnel::HostPort{host, port}, false).front();
}

const std::string kRequest = "GET /who HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";

}  // namespace

TEST_CASE("harness: nginx logs the source of the PROXY header the test sends") {
  auto version = GENERATE(pp::Version::v1, pp::Version::v2);
  auto [host, logged] = GENERATE(std::pair{"203.0.113.45", "203.0.113.45"},
                                 std::pair{"2001:db8::45", "2001:db8::45"});
  INFO((version == pp::Version::v1 ? "v1 from " : "v2 from ") << host);
  Nginx nginx;
  Socket socket = connect_tcp(nginx.port());
  const auto source = address(host, 51234);
  const auto destination = address(
      std::string(host).find(':') != std::string::npos ? "2001:db8::1" : "198.51.100.1", 80);
  send_all(socket, pp::header(version, source, destination) + kRequest);
  const auto reply = read_to_end(socket, Millis(5000));
  INFO(reply.describe() << "\nerror log:\n" << nginx.error_log());
  CHECK(reply.data.starts_with("HTTP/1.1 200"));
  CHECK(reply.data.ends_with(Nginx::kBody));
  const auto request = nginx.wait_for_request(0);
  INFO(request.line);
  CHECK(request.proxy_address == logged);
  CHECK(request.proxy_port == "51234");
  CHECK(request.remote_address == "127.0.0.1");
  CHECK(request.request == "GET /who HTTP/1.1");
  CHECK(request.status == "200");
}

TEST_CASE("harness: a proxy_protocol listener refuses a request without a header") {
  Nginx nginx;
  Socket socket = connect_tcp(nginx.port());
  send_all(socket, kRequest);
  const auto reply = read_to_end(socket, Millis(5000));
  INFO(reply.describe());
  CHECK(closed_without_data(reply));
  CHECK(poll_until([&] { return nginx.error_log().find("broken header") != std::string::npos; },
                   Millis(5000)));
  INFO("error log:\n" << nginx.error_log());
  CHECK(nginx.requests() == 0);
}

TEST_CASE("harness: a plain listener answers the same request and logs no PROXY address") {
  Nginx nginx(Nginx::Options{.proxy_protocol = false});
  Socket socket = connect_tcp(nginx.port());
  send_all(socket, kRequest);
  const auto reply = read_to_end(socket, Millis(5000));
  INFO(reply.describe() << "\nerror log:\n" << nginx.error_log());
  CHECK(reply.data.starts_with("HTTP/1.1 200"));
  CHECK(reply.data.ends_with(Nginx::kBody));
  const auto request = nginx.wait_for_request(0);
  INFO(request.line);
  CHECK(request.proxy_address == "-");
  CHECK(request.remote_address == "127.0.0.1");
  CHECK(request.remote_port == std::to_string(local_port(socket)));
}
