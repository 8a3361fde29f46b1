// The ready-made echo tunnel and its byte-exact round trip.
#include "support/echo_tunnel.hpp"

#include <stdexcept>

namespace tunnel::test {

EchoTunnel::EchoTunnel(std::vector<std::string> server_extra, std::vector<std::string> client_extra)
    : server(std::move(server_extra)),
      client(server.port_b(), echo.address(), std::move(client_extra)) {
  wait_session(server, client);
}

void wait_session(const Server& server, const Client& client, size_t server_from,
                  size_t client_from) {
  server.wait_for_line("event=client-online", kStartTimeout, server_from);
  client.wait_online(kStartTimeout, client_from);
}

void echo_round_trip(uint16_t port_a, std::string_view payload, Millis timeout) {
  Socket s = connect_tcp(port_a, timeout);
  send_all(s, payload, timeout);
  shutdown_write(s);
  ReadResult r = read_to_end(s, timeout, payload.size() + 1);
  if (r.end != End::eof || r.data != payload) {
    size_t same = 0;
    while (same < r.data.size() && same < payload.size() && r.data[same] == payload[same]) ++same;
    throw std::runtime_error("echo round trip through A: sent " + std::to_string(payload.size()) +
                             " bytes, got back " + r.describe() + "; first difference at byte " +
                             std::to_string(same));
  }
}

}  // namespace tunnel::test
