// SIGHUP reloads the server's services and clients with traffic running (DESIGN.md §7): a long
// transfer and a stream of short connections on a service the reloads leave alone are never
// disturbed; an added service listens and is served; a removed one refuses new connections while
// its relay in flight finishes byte for byte and its waiting connections end; a service whose
// clients change is refused to one session and served by the other; a file with an unknown key,
// or a listen address already in use, is refused whole and changes nothing.
#include <catch2/catch.hpp>
#include <csignal>
#include <memory>
#include <set>

#include "support/auth_peer.hpp"
#include "support/banner_echo.hpp"
#include "support/long_transfer.hpp"
#include "support/payload.hpp"
#include "support/request_load.hpp"
#include "support/service_daemons.hpp"
#include "support/socket_io.hpp"

using namespace tunnel::test;
using namespace std::chrono_literals;

namespace {

// One short connection: the banner of whoever answered, after a 100-byte echo checked exactly.
std::string banner_of(uint16_t port) {
  Socket s = connect_tcp(port);
  const std::string request = make_payload(7, 100);
  send_all(s, request);
  shutdown_write(s);
  const ReadResult r = read_to_end(s, 10s, 4096);
  INFO("a short connection to port " << port << ": " << r.describe());
  REQUIRE(r.end == End::eof);
  const size_t newline = r.data.find('\n');
  REQUIRE(newline != std::string::npos);
  REQUIRE(r.data.substr(newline + 1) == request);
  return r.data.substr(0, newline);
}

}  // namespace

TEST_CASE("SIGHUP adds, removes and changes services under traffic, and refuses bad files whole") {
  TokenDir dir;
  const std::string lan1_file = dir.write("lan1.token", new_token());
  const std::string lan2_file = dir.write("lan2.token", new_token());
  const std::string config = dir.path() + "/tunnel-server.conf";
  const std::string clients = client_table("lan1", lan1_file) + client_table("lan2", lan2_file);
  // steady: left alone by every reload; gone: removed; shift: lan1's, then lan2's; idle: served
  // by no one (lan2 may, but does not announce it), removed while a connection waits; fresh: added
  // (lan1 announces it from the start); moved: lan2's, its listen address changed.
  write_text(config, clients + service_table("steady", {"lan1"}) + service_table("gone", {"lan1"}) +
                         service_table("shift", {"lan1"}) + service_table("idle", {"lan2"}) +
                         service_table("moved", {"lan2"}));
  BannerEcho steady_lan1("steady@lan1"), gone_lan1("gone@lan1"), shift_lan1("shift@lan1"),
      shift_lan2("shift@lan2"), fresh_lan1("fresh@lan1"), moved_lan2("moved@lan2");
  // At info: the load's connections at debug would make the daemons drop lines.
  const std::vector<std::string> info{"--log-level", "info"};
  ServicesServer server(config, info);
  ServicesClient lan1(server.port_b(), "lan1", lan1_file,
                      {{"steady", steady_lan1.address()},
                       {"gone", gone_lan1.address()},
                       {"shift", shift_lan1.address()},
                       {"fresh", fresh_lan1.address()}},
                      info);
  ServicesClient lan2(server.port_b(), "lan2", lan2_file,
                      {{"shift", shift_lan2.address()}, {"moved", moved_lan2.address()}}, info);
  for (const auto& service : {"steady", "gone", "shift"})
    server.wait_for_line(serving("lan1", service), kStartTimeout);
  server.wait_for_line(serving("lan2", "moved"), kStartTimeout);
  server.wait_for_line(refused("lan1", "fresh", "unknown"), kStartTimeout);
  server.wait_for_line(refused("lan2", "shift", "not-allowed"), kStartTimeout);
  const uint16_t steady = server.port("steady"), gone = server.port("gone"),
                 shift = server.port("shift"), idle = server.port("idle"),
                 moved = server.port("moved");
  CHECK(banner_of(shift) == "shift@lan1");

  // Traffic: a long transfer and a stream of short connections on steady, which no reload
  // touches; relays in flight on gone and moved; a connection waiting on idle.
  LongTransfer long_steady(steady, "steady@lan1", 1);
  long_steady.exchange(512 * 1024);
  LongTransfer in_flight_gone(gone, "gone@lan1", 2);
  in_flight_gone.exchange(256 * 1024);
  LongTransfer in_flight_moved(moved, "moved@lan2", 3);
  in_flight_moved.exchange(256 * 1024);
  Socket waiting_idle = connect_tcp(idle);
  wait_until(
      [&] {
        return metric(server.metrics_port(),
                      "tunnel_service_connections_accepted_total{service=\"idle\"}") == 1;
      },
      5s, "the connection to idle accepted");
  RequestLoad load(steady, 2);
  load.wait_for_more(30, 30s);

  // The good reload: fresh added, gone and idle removed, shift given to lan2, moved elsewhere.
  const uint16_t moved_to = refused_port();
  const std::string kept =
      service_table("steady", {"lan1"}) + service_table("moved", {"lan2"}, loopback(moved_to));
  write_text(config,
             clients + kept + service_table("shift", {"lan2"}) + service_table("fresh", {"lan1"}));
  const size_t from = server.reload();
  server.wait_for_line("event=reloaded services=4 added=1 removed=2 changed=2 clients=2 ended=0",
                       10s, from);
  server.wait_for_line(Match::regex("event=service-removed service=gone "), 1s, from);
  server.wait_for_line(Match::regex("event=service-removed service=idle "), 1s, from);
  server.wait_for_line("event=service-changed service=moved addr=" + loopback(moved_to), 1s, from);
  server.wait_for_line(serving("lan1", "fresh"), 5s, from);
  server.wait_for_line(serving("lan2", "shift"), 5s, from);
  server.wait_for_line(refused("lan1", "shift", "not-allowed"), 5s, from);
  lan1.wait_for_line("event=service-serving service=fresh", 5s);
  lan1.wait_for_line("event=service-refused service=shift reason=not-allowed", 5s);
  lan1.wait_for_line("event=service-refused service=gone reason=removed", 5s);
  lan2.wait_for_line("event=service-serving service=shift", 5s);

  // Added: listening and served. Given to lan2: lan2's now. Moved: the new port only. Removed:
  // refused at connect.
  const uint16_t fresh = server.port("fresh", from);
  CHECK(banner_of(fresh) == "fresh@lan1");
  for (int i = 0; i < 3; ++i) CHECK(banner_of(shift) == "shift@lan2");
  CHECK(server.port("moved", from) == moved_to);
  CHECK(banner_of(moved_to) == "moved@lan2");
  CHECK(probe_connect("127.0.0.1", moved, 2s) == Reach::failed);
  CHECK(probe_connect("127.0.0.1", gone, 2s) == Reach::failed);
  CHECK(probe_connect("127.0.0.1", idle, 2s) == Reach::failed);
  // The connection waiting on idle ended at once rather than at the pair timeout.
  server.wait_for_line(
      Match::regex("event=conn-failed conn=[0-9a-f]{8} service=idle .*reason=service-removed"), 5s,
      from);
  const ReadResult idle_end = read_to_end(waiting_idle, 5s);
  INFO("the connection waiting on idle: " << idle_end.describe());
  CHECK(closed_without_data(idle_end));
  // The relays in flight on gone and on moved's old port go on to their end.
  in_flight_gone.exchange(256 * 1024);
  in_flight_gone.finish();
  CHECK(gone_lan1.accepted() == 1);
  in_flight_moved.exchange(256 * 1024);
  in_flight_moved.finish();

  // An unknown key (in [service.shift]): refused whole with its line, the config in force kept.
  write_text(config, clients + kept + service_table("shift", {"lan1"}) + "colour = \"blue\"\n");
  const size_t bad = server.reload();
  const std::string refusal = server.wait_for_line("event=reload-refused", 10s, bad);
  CHECK(refusal.find("tunnel-server.conf:") != std::string::npos);
  CHECK(refusal.find("colour") != std::string::npos);
  CHECK(server.log().count("event=reloaded", bad) == 0);
  CHECK(banner_of(fresh) == "fresh@lan1");
  CHECK(banner_of(shift) == "shift@lan2");

  // A listen address in use: refused whole, the parts that could have been done included (steady
  // and moved would have gone).
  Socket taken = listen_tcp(0);
  write_text(config, clients + service_table("shift", {"lan1"}) + service_table("fresh", {"lan1"}) +
                         service_table("clash", {"lan1"}, loopback(local_port(taken))));
  const size_t in_use = server.reload();
  const std::string in_use_refusal = server.wait_for_line("event=reload-refused", 10s, in_use);
  CHECK(in_use_refusal.find(std::to_string(local_port(taken))) != std::string::npos);
  CHECK(server.log().count("event=reloaded", in_use) == 0);
  CHECK(server.log().count("event=listening side=a", in_use) == 0);
  CHECK(banner_of(shift) == "shift@lan2");
  CHECK(banner_of(fresh) == "fresh@lan1");
  CHECK(banner_of(moved_to) == "moved@lan2");
  CHECK(server.log().count(Match::regex("event=client-offline")) == 0);

  // The traffic on steady saw nothing.
  load.wait_for_more(30, 30s);
  load.stop();
  long_steady.exchange(512 * 1024);
  long_steady.finish();
  const LoadSummary summary = summarize(load.attempts());
  WARN("during the reloads: " << summary.describe() << "; long transfer " << long_steady.checked()
                              << " bytes echoed exactly");
  INFO(summary.describe());
  CHECK(summary.failed == 0);
  CHECK(summary.by_banner.size() == 1);
  CHECK(banner_of(steady) == "steady@lan1");
}

TEST_CASE("SIGHUP ends the session of a client removed or whose token changed, and no other") {
  TokenDir dir;
  const std::string lan1_file = dir.write("lan1.token", new_token());
  const std::string lan2_file = dir.write("lan2.token", new_token());
  const std::string lan3_file = dir.write("lan3.token", new_token());
  const std::string lan2_new_file = dir.write("lan2-new.token", new_token());
  const std::string config = dir.path() + "/tunnel-server.conf";
  write_text(config, client_table("lan1", lan1_file) + client_table("lan2", lan2_file) +
                         client_table("lan3", lan3_file) + service_table("web", {}));
  BannerEcho web_lan1("web@lan1"), web_lan2("web@lan2"), web_lan3("web@lan3");
  ServicesServer server(config);
  ServicesClient lan1(server.port_b(), "lan1", lan1_file, {{"web", web_lan1.address()}});
  ServicesClient lan2(server.port_b(), "lan2", lan2_file, {{"web", web_lan2.address()}});
  ServicesClient lan3(server.port_b(), "lan3", lan3_file, {{"web", web_lan3.address()}});
  for (const auto& client : {"lan1", "lan2", "lan3"})
    server.wait_for_line(serving(client, "web"), kStartTimeout);
  const uint16_t web = server.port("web");
  LongTransfer through_lan1(web, "web@lan1", 1);
  through_lan1.exchange(256 * 1024);

  // lan3 gone from the file, lan2's token replaced.
  write_text(config, client_table("lan1", lan1_file) + client_table("lan2", lan2_new_file) +
                         service_table("web", {}));
  const size_t from = server.reload();
  server.wait_for_line("event=reloaded services=1 added=0 removed=0 changed=0 clients=2 ended=2",
                       10s, from);
  server.wait_for_line(
      Match::regex("event=client-offline session=[0-9]+ reason=\"reload\" client=lan2"), 1s, from);
  server.wait_for_line(
      Match::regex("event=client-offline session=[0-9]+ reason=\"reload\" client=lan3"), 1s, from);
  // Their next logins are refused: lan2's old token no longer matches, lan3 is unknown.
  server.wait_for_line(
      Match::regex("event=auth-refused stage=control reason=[^ ]+ peer=[^ ]+ client=lan2 "), 10s,
      from);
  server.wait_for_line(
      Match::regex("event=auth-refused stage=control reason=[^ ]+ peer=[^ ]+ client=lan3 "), 10s,
      from);
  CHECK(metric(server.metrics_port(), "tunnel_clients_online") == 1);
  CHECK(metric(server.metrics_port(), "tunnel_client_online{client=\"lan2\"}") == 0);
  CHECK_FALSE(
      sample(scrape_metrics(server.metrics_port()), "tunnel_client_online{client=\"lan3\"}"));
  CHECK(server.log().count(Match::regex("event=client-offline .*client=lan1"), from) == 0);
  for (int i = 0; i < 4; ++i) CHECK(banner_of(web) == "web@lan1");
  through_lan1.exchange(256 * 1024);
  through_lan1.finish();

  // lan2 with its new token is back.
  const size_t back = server.mark();
  ServicesClient lan2_again(server.port_b(), "lan2", lan2_new_file, {{"web", web_lan2.address()}});
  server.wait_for_line(serving("lan2", "web"), kStartTimeout, back);
  std::set<std::string> banners;
  for (int i = 0; i < 4; ++i) banners.insert(banner_of(web));
  CHECK(banners == std::set<std::string>{"web@lan1", "web@lan2"});
}
