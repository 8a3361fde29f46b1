// Starting the two daemons the way every integration test needs them.
#include "support/daemons.hpp"

#include <algorithm>
#include <stdexcept>

#ifndef TUNNEL_SERVER_BIN
#error "TUNNEL_SERVER_BIN must be defined by CMake"
#endif
#ifndef TUNNEL_CLIENT_BIN
#error "TUNNEL_CLIENT_BIN must be defined by CMake"
#endif

namespace tunnel::test {

namespace {

std::vector<std::string> with_log_level(std::vector<std::string> args,
                                        const std::vector<std::string>& extra) {
  if (std::find(extra.begin(), extra.end(), "--log-level") == extra.end()) {
    args.insert(args.end(), {"--log-level", "debug"});
  }
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

uint16_t listening_port(const Process& process, char side) {
  const std::string line = process.wait_for_line(
      Match::regex(std::string("event=listening side=") + side + " addr=127\\.0\\.0\\.1:[0-9]+"),
      kStartTimeout);
  const auto addr = field(line, "addr");
  const int port = std::stoi(addr->substr(addr->rfind(':') + 1));
  if (port <= 0 || port > 65535) throw std::runtime_error("bad port in: " + line);
  return static_cast<uint16_t>(port);
}

}  // namespace

const std::string& server_binary() {
  static const std::string path = TUNNEL_SERVER_BIN;
  return path;
}

const std::string& client_binary() {
  static const std::string path = TUNNEL_CLIENT_BIN;
  return path;
}

std::string loopback(uint16_t port) {
  return "127.0.0.1:" + std::to_string(port);
}

Match conn_failed(const std::string& reason) {
  return Match::regex("event=conn-failed conn=[0-9a-f]{8} .*reason=" + reason + "( |$)");
}

Match shed(const std::string& reason) {
  return Match::regex("event=conn-failed .*reason=" + reason + "( |$)");
}

Server::Server(std::vector<std::string> extra)
    : process_("tunnel-server", with_log_level({server_binary(), "--listen-a", "127.0.0.1:0",
                                                "--listen-b", "127.0.0.1:0"},
                                               extra)) {
  process_.wait_for_line("event=ready", kStartTimeout);
  port_a_ = listening_port(process_, 'a');
  port_b_ = listening_port(process_, 'b');
}

Client::Client(uint16_t port_b, const std::string& target, std::vector<std::string> extra,
               const std::string& name)
    : process_(name,
               with_log_level({client_binary(), "--server", loopback(port_b), "--target", target},
                              extra)) {}

void Client::wait_online(Millis timeout, size_t from) const {
  process_.wait_for_line("event=online", timeout, from);
}

}  // namespace tunnel::test
