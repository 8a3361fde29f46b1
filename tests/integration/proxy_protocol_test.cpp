// The PROXY protocol against a real nginx: first the harness itself (nginx logs the address of a
// header the test sends, and refuses a connection without one), then the real tunnel-server and
// tunnel-client in front of it: send-proxy v1/v2 (each visitor's own address and port reach nginx,
// plain, with a token, over TLS on port B, and from a [service.NAME] table), accept-proxy with and
// without send-proxy (the visitor's header is taken off; its source is passed on), and headers
// that are missing, malformed, cut short or too slow (reset, counted, logged, never relayed).
#include "tunnel/proxy_protocol.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <tuple>
#include <vector>

#include "support/auth_peer.hpp"
#include "support/daemons.hpp"
#include "support/fake_control.hpp"
#include "support/nginx.hpp"
#include "support/socket_io.hpp"
#include "support/tls_peer.hpp"
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

namespace {

using Clock = std::chrono::steady_clock;

std::string failed(const std::string& reason) {
  return "tunnel_connections_failed_total{reason=\"" + reason + "\"}";
}
std::string service_failed(const std::string& service, const std::string& reason) {
  return "tunnel_service_connections_failed_total{service=\"" + service + "\",reason=\"" + reason +
         "\"}";
}

std::vector<std::string> joined(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// tunnel-server with `server_flags` and a metrics endpoint, and a tunnel-client with
// `client_flags` online in front of the target on `target_port`.
struct Tunnel {
  Tunnel(uint16_t target_port, std::vector<std::string> server_flags,
         std::vector<std::string> client_flags = {})
      : server(joined(std::move(server_flags), {"--metrics-listen", "127.0.0.1:0"})),
        metrics(listening_port(server.process(), "metrics")),
        client(server.port_b(), loopback(target_port), std::move(client_flags)) {
    client.wait_online();
  }
  // A request on port A preceded by `prefix`; the whole answer. The visitor's socket is kept in
  // `kept` (its local port is the address the target should learn).
  ReadResult visit(const std::string& prefix, Socket* kept = nullptr) const {
    Socket socket = connect_tcp(server.port_a());
    send_all(socket, prefix + kRequest);
    auto reply = read_to_end(socket, Millis(10000));
    if (kept != nullptr) *kept = std::move(socket);
    return reply;
  }
  double value(const std::string& series) const { return metric(metrics, series); }

  Server server;
  uint16_t metrics;
  Client client;
};

void check_served(const ReadResult& reply, const Nginx& nginx) {
  INFO(reply.describe() << "\nnginx error log:\n" << nginx.error_log());
  CHECK(reply.data.starts_with("HTTP/1.1 200"));
  CHECK(reply.data.ends_with(Nginx::kBody));
}

// Visitors one after another, each on a fresh connection: nginx logs each one's own address and
// port (the local end of the test's socket) as the PROXY header's source.
void check_visitors_seen(const Tunnel& tunnel, const Nginx& nginx, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    Socket visitor;
    check_served(tunnel.visit("", &visitor), nginx);
    const auto request = nginx.wait_for_request(i);
    INFO("visitor " << i << " from 127.0.0.1:" << local_port(visitor) << "\n" << request.line);
    CHECK(request.proxy_address == "127.0.0.1");
    CHECK(request.proxy_port == std::to_string(local_port(visitor)));
    CHECK(request.remote_address == "127.0.0.1");
    CHECK(request.request == "GET /who HTTP/1.1");
    CHECK(request.status == "200");
  }
  CHECK(nginx.requests() == count);
}

// A TOML file for --config, removed when the test ends.
class TomlFile {
 public:
  explicit TomlFile(const std::string& text)
      : path_(std::filesystem::temp_directory_path() /
              ("tunnel-proxy-protocol-" + random_id() + ".toml")) {
    std::ofstream(path_) << text;
  }
  ~TomlFile() { std::filesystem::remove(path_); }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// The port of the server's `event=listening side=a addr=127.0.0.1:PORT service=<service>` line.
uint16_t service_port(const Process& server, const std::string& service) {
  const std::string line = server.wait_for_line(
      Match::regex("event=listening side=a addr=127\\.0\\.0\\.1:[0-9]+ service=" + service + "$"),
      kStartTimeout);
  const auto addr = field(line, "addr");
  return static_cast<uint16_t>(std::stoi(addr->substr(addr->rfind(':') + 1)));
}

}  // namespace

TEST_CASE("send-proxy: nginx behind the tunnel logs each visitor's own address and port") {
  const std::string version = GENERATE("v1", "v2");
  const bool with_token = GENERATE(false, true);
  INFO("--send-proxy " << version << (with_token ? ", --token-file on both sides" : ""));
  TokenDir dir;
  std::vector<std::string> auth;
  if (with_token) auth = {"--token-file", dir.write("token", new_token())};
  Nginx nginx;
  Tunnel tunnel(nginx.port(), joined({"--send-proxy", version}, auth), auth);
  tunnel.client.wait_for_line(with_token ? "auth=token" : "auth=none", Millis(1000));
  check_visitors_seen(tunnel, nginx, 3);
  CHECK(tunnel.value("tunnel_connections_paired_total") == 3);
}

TEST_CASE("send-proxy over TLS on port B: the header goes through the TLS data path") {
  TokenDir dir;
  const GenCert certs = gen_cert(dir.path() + "/tls");
  Nginx nginx;
  Tunnel tunnel(nginx.port(),
                {"--send-proxy", "v2", "--tls-cert", certs.cert(), "--tls-key", certs.key()},
                {"--tls", "--tls-pin", certs.pin, "--pool", "0"});
  check_visitors_seen(tunnel, nginx, 3);
  // The control connection and the three data connections were TLS (port B speaks nothing else).
  CHECK(tunnel.value("tunnel_tls_handshakes_total{kind=\"full\"}") +
            tunnel.value("tunnel_tls_handshakes_total{kind=\"resumed\"}") ==
        4);
}

TEST_CASE("send-proxy from a [service.NAME] table: only that service's target gets a header") {
  Nginx proxied;
  Nginx plain(Nginx::Options{.proxy_protocol = false});
  TomlFile config(
      "[service.web]\n"
      "listen = \"127.0.0.1:0\"\n"
      "send-proxy = \"v2\"\n"
      "\n"
      "[service.plain]\n"
      "listen = \"127.0.0.1:0\"\n");
  Process server("tunnel-server", {server_binary(), "--config", config.path(), "--listen-b",
                                   "127.0.0.1:0", "--log-level", "debug"});
  server.wait_for_line("event=ready", kStartTimeout);
  const uint16_t web = service_port(server, "web");
  const uint16_t plain_port = service_port(server, "plain");
  Process client("tunnel-client",
                 {client_binary(), "--server", loopback(listening_port(server, "b")), "--service",
                  "web=" + loopback(proxied.port()), "--service", "plain=" + loopback(plain.port()),
                  "--log-level", "debug"});
  client.wait_for_line("event=service-serving service=web", kStartTimeout);
  client.wait_for_line("event=service-serving service=plain", kStartTimeout);

  Socket visitor = connect_tcp(web);
  send_all(visitor, kRequest);
  check_served(read_to_end(visitor, Millis(10000)), proxied);
  const auto request = proxied.wait_for_request(0);
  INFO(request.line);
  CHECK(request.proxy_address == "127.0.0.1");
  CHECK(request.proxy_port == std::to_string(local_port(visitor)));

  // A header in front of the plain service's request would make nginx answer 400.
  Socket other = connect_tcp(plain_port);
  send_all(other, kRequest);
  check_served(read_to_end(other, Millis(10000)), plain);
  const auto plain_request = plain.wait_for_request(0);
  INFO(plain_request.line);
  CHECK(plain_request.proxy_address == "-");
  CHECK(plain_request.status == "200");
}

TEST_CASE("accept-proxy with send-proxy: the source in the visitor's header reaches nginx") {
  struct Case {
    pp::Version incoming;
    const char* outgoing;
    const char* source;
    const char* destination;
  };
  const auto c = GENERATE(Case{pp::Version::v1, "v2", "198.51.100.77", "203.0.113.1"},
                          Case{pp::Version::v2, "v1", "2001:db8::77", "2001:db8::1"},
                          Case{pp::Version::v1, "v2", "2001:db8::78", "2001:db8::1"},
                          Case{pp::Version::v2, "v2", "198.51.100.78", "203.0.113.1"});
  INFO("a " << (c.incoming == pp::Version::v1 ? "v1" : "v2") << " header from " << c.source
            << ", --send-proxy " << c.outgoing);
  Nginx nginx;
  Tunnel tunnel(nginx.port(), {"--accept-proxy", "--send-proxy", c.outgoing});
  const std::string header =
      pp::header(c.incoming, address(c.source, 4242), address(c.destination, 443));
  check_served(tunnel.visit(header), nginx);
  const auto request = nginx.wait_for_request(0);
  INFO(request.line);
  CHECK(request.proxy_address == c.source);
  CHECK(request.proxy_port == "4242");
  CHECK(request.request == "GET /who HTTP/1.1");
  CHECK(request.status == "200");
}

TEST_CASE("accept-proxy: the header is taken off, the visitor's bytes follow it untouched") {
  const auto version = GENERATE(pp::Version::v1, pp::Version::v2);
  INFO((version == pp::Version::v1 ? "a v1 header" : "a v2 header"));
  // A plain nginx answers 400 to anything that is not HTTP: a header left in the stream shows.
  Nginx nginx(Nginx::Options{.proxy_protocol = false});
  Tunnel tunnel(nginx.port(), {"--accept-proxy"});
  const std::string header =
      pp::header(version, address("198.51.100.77", 4242), address("203.0.113.1", 443));
  SECTION("header and request in one write") {
    check_served(tunnel.visit(header), nginx);
  }
  SECTION("the header a byte at a time, then the request") {
    Socket socket = connect_tcp(tunnel.server.port_a());
    set_nodelay(socket);
    for (char byte : header) send_all(socket, std::string(1, byte));
    send_all(socket, kRequest);
    check_served(read_to_end(socket, Millis(10000)), nginx);
  }
  SECTION("header, request and the visitor's EOF at once") {
    Socket socket = connect_tcp(tunnel.server.port_a());
    send_all(socket, header + kRequest);
    shutdown_write(socket);
    check_served(read_to_end(socket, Millis(10000)), nginx);
  }
  const auto request = nginx.wait_for_request(0);
  INFO(request.line);
  CHECK(request.proxy_address == "-");
  CHECK(request.remote_address == "127.0.0.1");
  CHECK(request.request == "GET /who HTTP/1.1");
  CHECK(request.status == "200");
  CHECK(tunnel.value(failed("bad-proxy-header")) == 0);
}

TEST_CASE("accept-proxy: a missing, malformed, cut or slow header is reset, counted and logged") {
  std::string bad_version =
      pp::header(pp::Version::v2, address("198.51.100.77", 1), address("203.0.113.1", 2));
  bad_version[12] = '\x11';  // version 1 in the v2 signature's version/command byte
  struct Case {
    const char* name;
    std::string bytes;
    bool close_write;     // then EOF
    const char* failure;  // the log's failure=
  };
  const auto c = GENERATE_COPY(
      Case{"no header, a plain HTTP request", kRequest, false, "invalid"},
      Case{"a TLS ClientHello's first bytes", std::string("\x16\x03\x01\x02\x00\x01", 6), false,
           "invalid"},
      Case{"a v2 header with version 1", bad_version + kRequest, false, "invalid"},
      Case{"a v1 header with a bad port",
           "PROXY TCP4 198.51.100.1 203.0.113.1 99999 443\r\n" + kRequest, false, "invalid"},
      Case{"half a v1 header, then EOF", "PROXY TCP4 198.51", true, "closed"},
      Case{"half a v1 header, then nothing", "PROXY TCP4 198.51", false, "timeout"});
  INFO(c.name);
  const std::string failure = c.failure;
  Nginx nginx;
  Tunnel tunnel(nginx.port(),
                {"--accept-proxy", "--send-proxy", "v1", "--handshake-timeout", "500ms"});
  Socket socket = connect_tcp(tunnel.server.port_a());
  const auto connected = Clock::now();
  send_all(socket, c.bytes);
  if (c.close_write) shutdown_write(socket);
  const auto reply = read_to_end(socket, Millis(10000));
  const auto waited = Clock::now() - connected;
  INFO(reply.describe());
  CHECK(reply.data.empty());
  CHECK(reply.end == End::reset);
  if (failure == "timeout") CHECK(waited >= std::chrono::milliseconds(450));
  // The parser's reason when the bytes were wrong; nothing to say when they stopped coming.
  const std::string detail = failure == "invalid" ? "detail=\"[^\"]+\"" : "detail=\"\"";
  tunnel.server.wait_for_line(
      Match::regex("level=warn event=conn-failed reason=bad-proxy-header service=default failure=" +
                   failure + " " + detail + " suppressed=0$"),
      Millis(5000));
  CHECK(tunnel.value(failed("bad-proxy-header")) == 1);
  CHECK(tunnel.value(service_failed("default", "bad-proxy-header")) == 1);
  CHECK(tunnel.value("tunnel_connections_accepted_total") == 1);
  // A good visitor right after is served: one bad header costs nothing else. nginx logs its
  // request as the first and only one: the bad connection never reached it.
  const std::string header =
      pp::header(pp::Version::v1, address("198.51.100.9", 999), address("203.0.113.1", 443));
  check_served(tunnel.visit(header), nginx);
  CHECK(nginx.wait_for_request(0).proxy_address == "198.51.100.9");
  CHECK(nginx.requests() == 1);
  CHECK(tunnel.value("tunnel_connections_paired_total") == 1);
  CHECK(tunnel.value(failed("bad-proxy-header")) == 1);
}

TEST_CASE("accept-proxy: v1 UNKNOWN and v2 LOCAL pass on the connection's own addresses") {
  const auto version = GENERATE(pp::Version::v1, pp::Version::v2);
  // Mixed families make the "unknown" form: the receiver uses the connection's own addresses.
  const std::string header =
      pp::header(version, address("198.51.100.77", 4242), address("2001:db8::1", 443));
  INFO("the header: " << header.size() << " bytes");
  REQUIRE(header.size() == (version == pp::Version::v1 ? 15 : 16));
  Nginx nginx;
  Tunnel tunnel(nginx.port(), {"--accept-proxy", "--send-proxy", "v2"});
  Socket visitor;
  check_served(tunnel.visit(header, &visitor), nginx);
  const auto request = nginx.wait_for_request(0);
  INFO(request.line);
  CHECK(request.proxy_address == "127.0.0.1");
  CHECK(request.proxy_port == std::to_string(local_port(visitor)));
  CHECK(tunnel.value(failed("bad-proxy-header")) == 0);
}

TEST_CASE("accept-proxy: a flood of bad headers is counted one by one and logged once a second") {
  Nginx nginx;
  Tunnel tunnel(nginx.port(), {"--accept-proxy", "--send-proxy", "v1"});
  const Match logged = Match::regex("event=conn-failed reason=bad-proxy-header service=default ");
  // Bad visitors one after another until the server's log says it held lines back (at most one
  // line a second), with a bound on time.
  const auto start = Clock::now();
  size_t sent = 0;
  auto held_back_said = [&] {
    return tunnel.server.log().count(Match::regex("reason=bad-proxy-header .*suppressed=[1-9]")) >
           0;
  };
  while (!held_back_said() && Clock::now() - start < std::chrono::seconds(20)) {
    Socket socket = connect_tcp(tunnel.server.port_a());
    send_all(socket, "NOT A PROXY HEADER\r\n");
    const auto reply = read_to_end(socket, Millis(10000));
    INFO(reply.describe());
    REQUIRE(closed_without_data(reply));
    ++sent;
  }
  const auto elapsed = Clock::now() - start;
  INFO(sent << " bad visitors in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count() << " ms");
  REQUIRE(held_back_said());
  CHECK(tunnel.value(failed("bad-proxy-header")) == static_cast<double>(sent));
  CHECK(tunnel.value(service_failed("default", "bad-proxy-header")) == static_cast<double>(sent));
  // Each line stands for itself and the ones held back before it: never more than were sent, and
  // no more lines than one a second.
  size_t lines = 0;
  double represented = 0;
  for (const auto& line : tunnel.server.log().lines()) {
    if (!logged(line.text)) continue;
    ++lines;
    represented += 1 + std::stod(field(line.text, "suppressed").value_or("nan"));
  }
  CHECK(lines >= 2);
  CHECK(lines <= 2 + static_cast<size_t>(elapsed / std::chrono::seconds(1)));
  CHECK(represented <= static_cast<double>(sent));
  CHECK(represented > static_cast<double>(lines));
  // And the next good visitor is served.
  const std::string header =
      pp::header(pp::Version::v1, address("198.51.100.9", 999), address("203.0.113.1", 443));
  check_served(tunnel.visit(header), nginx);
  CHECK(nginx.wait_for_request(0).proxy_address == "198.51.100.9");
  CHECK(nginx.requests() == 1);
}

TEST_CASE("accept-proxy: connections still sending their header count toward --max-pending") {
  Nginx nginx;
  Tunnel tunnel(nginx.port(), {"--accept-proxy", "--send-proxy", "v1", "--max-pending", "2",
                               "--handshake-timeout", "30s"});
  // Two visitors start a header and stall: they hold both places.
  std::vector<Socket> stalled;
  for (int i = 0; i < 2; ++i) {
    stalled.push_back(connect_tcp(tunnel.server.port_a()));
    send_all(stalled.back(), "PROXY TCP4 ");
  }
  REQUIRE(poll_until([&] { return tunnel.value("tunnel_connections_accepted_total") == 2; },
                     Millis(5000)));
  // A third is shed at once, before it says anything (reset, which connect_tcp may already have
  // taken for the connection's error: then reads see EOF).
  Socket third = connect_tcp(tunnel.server.port_a());
  const auto reply = read_to_end(third, Millis(10000));
  INFO(reply.describe());
  CHECK(closed_without_data(reply));
  CHECK(tunnel.value(failed("max-pending")) == 1);
  CHECK(tunnel.value(service_failed("default", "max-pending")) == 1);
  // Logged like any connection shed at max-pending (rate-limited).
  tunnel.server.wait_for_line(
      Match::regex("level=warn event=conn-failed reason=max-pending service=default "),
      Millis(5000));
  // The stalled ones give up (their EOF): their places are free again for a good visitor.
  const size_t mark = tunnel.server.mark();
  stalled.clear();
  REQUIRE(poll_until([&] { return tunnel.value(failed("bad-proxy-header")) == 2; }, Millis(5000)));
  tunnel.server.wait_for_line("failure=closed", Millis(5000), mark);
  const std::string header =
      pp::header(pp::Version::v1, address("198.51.100.9", 999), address("203.0.113.1", 443));
  check_served(tunnel.visit(header), nginx);
  CHECK(nginx.wait_for_request(0).proxy_address == "198.51.100.9");
  CHECK(nginx.requests() == 1);
}
