// What a reload takes back (review of issue 8): a client whose token changed is never locked out;
// a client dropped from a service gives back what it was told and nothing more reaches it; a
// reload that turns auth on ends the sessions without a proof; a reload during the drain is
// ignored; a client without the services extension is told plainly when there is no `default`.
// The client side is played by the test (raw control connections), so that an announced
// connection can be left unclaimed on purpose.
#include <catch2/catch.hpp>
#include <csignal>
#include <optional>
#include <vector>

#include "support/auth_peer.hpp"
#include "support/service_daemons.hpp"
#include "support/services_control.hpp"
#include "support/socket_io.hpp"

using namespace tunnel::test;
using namespace std::chrono_literals;

namespace {

// The next line the server sends on `control` that starts with `prefix` (PINGs answered).
std::string next_line(ServicesControl& control, const std::string& prefix,
                      Millis timeout = 5000ms) {
  for (;;) {
    ReadResult line = read_line(control.socket, timeout, 512);
    INFO("waiting for '" << prefix << "': " << line.describe());
    REQUIRE(line.end == End::complete);
    if (line.data.starts_with("PING ")) {
      send_all(control.socket, "PONG " + line.data.substr(5) + "\n");
      continue;
    }
    if (line.data.starts_with(prefix)) return line.data;
  }
}

// Whether `control` receives a line starting with `prefix` within `wait` (PINGs answered).
bool receives(ServicesControl& control, const std::string& prefix, Millis wait) {
  for (;;) {
    ReadResult line = read_line(control.socket, wait, 512);
    if (line.end != End::complete) return false;
    if (line.data.starts_with("PING ")) {
      send_all(control.socket, "PONG " + line.data.substr(5) + "\n");
      continue;
    }
    if (line.data.starts_with(prefix)) return true;
  }
}

ServicesControl serving_login(uint16_t port_b, const std::string& token, const std::string& name,
                              const std::string& service) {
  ServicesControl control = login_with_services(port_b, token, name);
  INFO(name << "'s login: " << control.answer);
  REQUIRE(control.answer == "OK auth services");
  send_all(control.socket, "SERVE " + service + "\n");
  CHECK(next_line(control, "SERVING ") == "SERVING " + service);
  return control;
}

}  // namespace

TEST_CASE(
    "a client whose token a reload replaced, with a connection still unclaimed, logs in again") {
  TokenDir dir;
  const std::string old_token = new_token();
  const std::string lan1_file = dir.write("lan1.token", old_token);
  const std::string config = dir.path() + "/tunnel-server.conf";
  write_text(config, client_table("lan1", lan1_file) + service_table("web", {"lan1"}));
  ServicesServer server(config);
  ServicesControl lan1 = serving_login(server.port_b(), old_token, "lan1", "web");
  Socket visitor = connect_tcp(server.port("web"));
  next_line(lan1, "NEW ");  // left unclaimed

  const std::string fresh_token = new_token();
  dir.write("lan1.token", fresh_token);
  const size_t from = server.reload();
  server.wait_for_line("event=reloaded", 5s, from);
  // The old session is over; the new token logs in at once (it was `ERR busy` for good).
  CHECK(read_to_end(lan1.socket, 5s).end != End::timeout);
  ServicesControl again = login_with_services(server.port_b(), fresh_token, "lan1");
  CHECK(again.answer == "OK auth services");
  // And the waiting visitor is announced to it.
  send_all(again.socket, "SERVE web\n");
  CHECK(next_line(again, "SERVING ") == "SERVING web");
  CHECK(next_line(again, "NEW ").ends_with(" web"));
}

TEST_CASE("a client a reload drops from a service gives back what it was told; it goes elsewhere") {
  TokenDir dir;
  const std::string lan1_token = new_token(), lan2_token = new_token();
  const std::string lan1_file = dir.write("lan1.token", lan1_token);
  const std::string lan2_file = dir.write("lan2.token", lan2_token);
  const std::string config = dir.path() + "/tunnel-server.conf";
  const std::string clients = client_table("lan1", lan1_file) + client_table("lan2", lan2_file);
  write_text(config, clients + service_table("web", {"lan1"}));
  ServicesServer server(config);
  ServicesControl lan1 = serving_login(server.port_b(), lan1_token, "lan1", "web");
  ServicesControl lan2 = login_with_services(server.port_b(), lan2_token, "lan2");
  REQUIRE(lan2.answer == "OK auth services");
  send_all(lan2.socket, "SERVE web\n");
  CHECK(next_line(lan2, "REFUSED ") == "REFUSED web not-allowed");
  Socket visitor = connect_tcp(server.port("web"));
  send_all(visitor, "for lan2 only\n");
  const std::string told = next_line(lan1, "NEW ");
  const std::string old_id = told.substr(4, 32);

  write_text(config, clients + service_table("web", {"lan2"}));
  const size_t from = server.reload();
  server.wait_for_line("event=reloaded", 5s, from);
  // lan1 is told no, and the id back; lan2 is told yes, then the connection under a new id.
  CHECK(next_line(lan1, "REFUSED ") == "REFUSED web not-allowed");
  CHECK(next_line(lan1, "CLOSE ") == "CLOSE " + old_id);
  CHECK(next_line(lan2, "SERVING ") == "SERVING web");
  const std::string moved = next_line(lan2, "NEW ");
  CHECK(moved.substr(4, 32) != old_id);
  // lan1's line for the old id gets nothing.
  Socket late = connect_tcp(server.port_b());
  send_all(late, "TUNNEL/1 DATA " + old_id + " " + std::string(64, '0') + "\n");
  ReadResult refused = read_to_end(late, 5s);
  CHECK(refused.data.find("for lan2 only") == std::string::npos);
  CHECK_FALSE(receives(lan1, "NEW ", 300ms));
}

TEST_CASE("a reload that turns auth on ends the sessions that logged in without a proof") {
  TokenDir dir;
  const std::string token_file = dir.write("tunnel.token", new_token());
  const std::string config = dir.path() + "/tunnel-server.conf";
  write_text(config, service_table("web", {}));
  ServicesServer server(config);
  Socket control = connect_tcp(server.port_b());
  send_all(control, "TUNNEL/1 CONTROL services\n");
  ReadResult ok = read_line(control, 5s, 256);
  REQUIRE(ok.data == "OK services");
  server.wait_for_line("event=client-online", 5s);

  write_text(config, "token-file = \"" + token_file + "\"\n" + service_table("web", {}));
  const size_t from = server.reload();
  server.wait_for_line("event=reloaded", 5s, from);
  server.wait_for_line(Match::regex("event=client-offline .*reason=\"reload\""), 5s, from);
  ReadResult rest = read_to_end(control, 5s);
  CHECK(rest.end != End::timeout);
}

TEST_CASE("a SIGHUP while the server drains opens no listener") {
  TokenDir dir;
  const std::string config = dir.path() + "/tunnel-server.conf";
  write_text(config, service_table("web", {}));
  ServicesServer server(config, {"--drain-timeout", "10s"});
  // A relay in flight keeps the drain going: a connection through a raw session.
  Socket control = connect_tcp(server.port_b());
  send_all(control, "TUNNEL/1 CONTROL services\nSERVE web\n");
  REQUIRE(read_line(control, 5s, 256).data == "OK services");
  REQUIRE(read_line(control, 5s, 256).data == "SERVING web");
  Socket visitor = connect_tcp(server.port("web"));
  ReadResult told = read_line(control, 5s, 256);
  REQUIRE(told.data.starts_with("NEW "));
  Socket data = connect_tcp(server.port_b());
  send_all(data, "TUNNEL/1 DATA " + told.data.substr(4, 32) + "\n");
  send_all(visitor, "x");
  REQUIRE(read_exact(data, 1, 5s) == "x");

  size_t from = server.mark();
  server.process().signal(SIGTERM);
  server.wait_for_line("event=draining", 5s, from);
  write_text(config, service_table("web", {}) + service_table("added", {}));
  from = server.reload();
  server.wait_for_line("event=reload-refused", 5s, from);
  CHECK(server.log().count("service=added", from) == 0);
}

TEST_CASE("a client without the services extension is told when there is no service default") {
  TokenDir dir;
  const std::string config = dir.path() + "/tunnel-server.conf";
  write_text(config, service_table("web", {}));
  ServicesServer server(config);
  Socket control = connect_tcp(server.port_b());
  send_all(control, "TUNNEL/1 CONTROL\n");
  ReadResult answer = read_to_end(control, 5s);
  INFO(answer.describe());
  CHECK(answer.data.starts_with("ERR bad-request this server has no service named default"));
  server.wait_for_line("event=control-refused reason=no-service", 5s);
}

TEST_CASE(
    "a flood of one service's connections does not shed another's (max-pending per service)") {
  TokenDir dir;
  const std::string config = dir.path() + "/tunnel-server.conf";
  write_text(config, service_table("dead", {}) + service_table("web", {}));
  ServicesServer server(config, {"--max-pending", "4"});
  Socket control = connect_tcp(server.port_b());
  send_all(control, "TUNNEL/1 CONTROL services\nSERVE web\n");
  REQUIRE(read_line(control, 5s, 256).data == "OK services");
  REQUIRE(read_line(control, 5s, 256).data == "SERVING web");
  // Nobody serves `dead`: its connections wait, and the fifth and sixth are shed.
  std::vector<Socket> flood;
  for (int i = 0; i < 6; ++i) flood.push_back(connect_tcp(server.port("dead")));
  server.wait_for_line(Match::regex("event=conn-failed reason=max-pending service=dead "), 5s);
  // A visitor of `web` is still taken and announced.
  Socket visitor = connect_tcp(server.port("web"));
  ReadResult told = read_line(control, 5s, 256);
  INFO(told.describe());
  CHECK(told.data.starts_with("NEW "));
  CHECK(server.log().count(Match::regex("reason=max-pending service=web ")) == 0);
}
