// A whole working tunnel for tests that need one: echo target, server, client online, and a
// round trip through port A that checks every byte came back.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "support/daemons.hpp"
#include "support/scripted_target.hpp"
#include "support/socket_io.hpp"

namespace tunnel::test {

struct EchoTunnel {
  explicit EchoTunnel(std::vector<std::string> server_extra = {},
                      std::vector<std::string> client_extra = {});

  EchoTarget echo;
  Server server;
  Client client;
};

// Waits until the server has a session (`event=client-online`, at index >= from) and the client
// says it is online.
void wait_session(const Server& server, const Client& client, size_t server_from = 0,
                  size_t client_from = 0);

// Connects to A, sends `payload`, half-closes, and reads until EOF; throws unless exactly
// `payload` came back followed by an orderly EOF.
void echo_round_trip(uint16_t port_a, std::string_view payload, Millis timeout = Millis(10000));

}  // namespace tunnel::test
