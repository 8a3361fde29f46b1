// High availability without a load balancer (DESIGN.md §7): a service served by two clients,
// lan1 and lan2, under a continuous load of short connections. lan1 killed with SIGKILL: once the
// server has noticed, no new connection fails, and a long transfer through lan2 that spans the
// kill completes byte for byte. lan1's target refusing: every connection is still served, the
// FAIL retried on lan2.
#include <catch2/catch.hpp>
#include <csignal>
#include <memory>

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

// web, served by lan1 (target `lan1_target`) and lan2 (a BannerEcho "web@lan2"). The daemons log
// at info: hundreds of connections a second at debug would make them drop lines.
struct TwoClientsOneService {
  explicit TwoClientsOneService(const std::string& lan1_target,
                                std::vector<std::string> server_extra = {})
      : lan1_file(dir.write("lan1.token", new_token())),
        lan2_file(dir.write("lan2.token", new_token())),
        config(dir.path() + "/tunnel-server.conf") {
    write_text(config, client_table("lan1", lan1_file) + client_table("lan2", lan2_file) +
                           service_table("web", {"lan1", "lan2"}));
    server_extra.insert(server_extra.end(), {"--log-level", "info"});
    server = std::make_unique<ServicesServer>(config, server_extra);
    lan1 = std::make_unique<ServicesClient>(server->port_b(), "lan1", lan1_file,
                                            ServiceTargets{{"web", lan1_target}}, info);
    lan2 = std::make_unique<ServicesClient>(server->port_b(), "lan2", lan2_file,
                                            ServiceTargets{{"web", web_lan2.address()}}, info);
    server->wait_for_line(serving("lan1", "web"), kStartTimeout);
    server->wait_for_line(serving("lan2", "web"), kStartTimeout);
    port = server->port("web");
  }

  const std::vector<std::string> info{"--log-level", "info"};
  TokenDir dir;
  std::string lan1_file, lan2_file;
  std::string config;
  BannerEcho web_lan2{"web@lan2"};
  std::unique_ptr<ServicesServer> server;
  std::unique_ptr<ServicesClient> lan1;
  std::unique_ptr<ServicesClient> lan2;
  uint16_t port = 0;
};

}  // namespace

TEST_CASE("a client killed under load: once the server noticed, no new connection fails") {
  BannerEcho web_lan1("web@lan1");
  TwoClientsOneService t(web_lan1.address());
  LongTransfer transfer(t.port, "web@lan2", 42);
  transfer.exchange(1 << 20);

  RequestLoad load(t.port, 3);
  load.wait_for_more(60, 30s);
  const size_t from = t.server->mark();
  const auto killed = Clock::now();
  t.lan1->process().signal(SIGKILL);
  const ExitStatus status = t.lan1->process().wait_exit(5s);
  REQUIRE(status.signal == SIGKILL);
  // From here every socket of lan1 is closed: a connection told to it, before or after the server
  // noticed, is announced again to lan2.
  const auto dead = Clock::now();
  const LogLine offline = t.server->log().wait_for(
      Match::regex("event=client-offline session=[0-9]+ .*client=lan1"), 10s, from);
  const auto noticed = offline.arrived;
  load.wait_for_more(150, 30s);
  transfer.exchange(1 << 20);
  load.wait_for_more(50, 30s);
  load.stop();
  transfer.finish();

  const auto all = load.attempts();
  const LoadSummary before = summarize(started_since(all, {}));
  const LoadSummary between = summarize(started_since(all, killed));
  const LoadSummary after_death = summarize(started_since(all, dead));
  const LoadSummary after = summarize(started_since(all, noticed));
  WARN("kill -9 lan1: noticed after "
       << std::chrono::duration_cast<Millis>(noticed - killed).count() << " ms (" << offline.text
       << ")\n  whole run: " << before.describe() << "\n  started after the kill: "
       << between.describe() << "\n  started after lan1 was reaped: " << after_death.describe()
       << "\n  started after the notice: " << after.describe()
       << "\n  long transfer: " << transfer.checked() << " bytes echoed exactly");
  INFO(after.describe());
  CHECK(after.total >= 150);
  CHECK(after.failed == 0);
  CHECK(after_death.failed == 0);
  CHECK(after.by_banner.size() == 1);
  CHECK(after.by_banner.count("web@lan2") == 1);
  CHECK(before.by_banner.count("web@lan1") == 1);  // lan1 did serve before the kill
  CHECK(transfer.checked() == 2u << 20);
  CHECK(metric(t.server->metrics_port(), "tunnel_client_online{client=\"lan1\"}") == 0);
  CHECK(metric(t.server->metrics_port(), "tunnel_service_clients_serving{service=\"web\"}") == 1);
}

TEST_CASE("a client frozen under load: what it was told is re-announced at the heartbeat timeout") {
  BannerEcho web_lan1("web@lan1");
  TwoClientsOneService t(web_lan1.address(),
                         {"--heartbeat-interval", "200ms", "--heartbeat-timeout", "1s"});
  RequestLoad load(t.port, 3);
  load.wait_for_more(60, 30s);
  const size_t from = t.server->mark();
  const auto stopped = Clock::now();
  t.lan1->process().signal(SIGSTOP);  // silent: no FIN, no PONG
  const LogLine offline = t.server->log().wait_for(
      Match::regex("event=client-offline session=[0-9]+ .*client=lan1"), 10s, from);
  load.wait_for_more(150, 30s);
  // Relays that were in flight through lan1 when it froze end with it.
  t.lan1->process().signal(SIGKILL);
  load.stop();

  const auto all = load.attempts();
  const LoadSummary whole = summarize(all);
  const LoadSummary after_stop = summarize(started_since(all, stopped));
  // Connections told to the frozen lan1 (round robin goes on until it is declared dead) wait,
  // then are announced to lan2 and served: they started during the freeze and ended after.
  size_t held = 0;
  for (const auto& a : started_since(all, stopped))
    if (a.ok && a.start < offline.arrived && a.end > offline.arrived) ++held;
  WARN("SIGSTOP lan1: declared dead after "
       << std::chrono::duration_cast<Millis>(offline.arrived - stopped).count() << " ms ("
       << offline.text << ")\n  whole run: " << whole.describe() << "\n  started after the freeze: "
       << after_stop.describe() << "\n  held through the freeze, then served by lan2: " << held);
  INFO(after_stop.describe());
  CHECK(after_stop.total >= 150);
  CHECK(after_stop.failed == 0);
  CHECK(offline.text.find("heartbeat") != std::string::npos);
  CHECK(held >= 1);
}

TEST_CASE("a client whose target refuses: every connection is retried on the other and served") {
  TwoClientsOneService t(loopback(refused_port()));
  RequestLoad load(t.port, 2);
  // lan1 is passed over for 5 s after a failure, then tried again: see it fail twice.
  const Match retried = Match::regex(
      "event=conn-retried conn=[0-9a-f]{8} service=web failed_client=lan1 client=lan2 ");
  wait_until([&] { return t.server->log().count(retried) >= 2; }, 20s,
             "two conn-retried lines (lan1's target refusing, retried on lan2)");
  load.wait_for_more(20, 30s);
  load.stop();
  const LoadSummary summary = summarize(load.attempts());
  WARN("lan1's target refusing: " << summary.describe() << "; "
                                  << t.server->log().count("event=conn-retried")
                                  << " conn-retried lines");
  INFO(summary.describe());
  CHECK(summary.failed == 0);
  CHECK(summary.by_banner.size() == 1);
  CHECK(summary.by_banner.count("web@lan2") == 1);
  t.lan1->wait_for_line(
      Match::regex("service=web .*connection-refused|connection-refused.* service=web"), 1s);
  const std::string exposition = scrape_metrics(t.server->metrics_port());
  CHECK_FALSE(sample(exposition,
                     "tunnel_service_connections_paired_total{service=\"web\",client=\"lan1\"}"));
  CHECK(sample(exposition,
               "tunnel_service_connections_paired_total{service=\"web\",client=\"lan2\"}") ==
        static_cast<double>(summary.total));
  CHECK_FALSE(sample(
      exposition,
      "tunnel_service_connections_failed_total{service=\"web\",reason=\"target-unreachable\"}"));
}
