// Several services and several clients with the real daemons (DESIGN.md §7, docs/PROTOCOL.md
// "Services"): one tunnel-server with three services, two tunnel-clients (lan1, lan2) with their
// own names and tokens, a distinct target behind each (service, client) that says who it is.
// Bytes reach the right target, byte for byte, and the metrics and logs say which service and
// client; a service a client may not serve, or that does not exist, is refused on both sides and
// never routed to it; an unknown client name is refused at login; a control connection that
// announces 10,000 services is closed beyond the protocol's 2048 while the rest keeps working.
#include <sys/types.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <memory>
#include <thread>

#include "support/auth_peer.hpp"
#include "support/banner_echo.hpp"
#include "support/fd_count.hpp"
#include "support/payload.hpp"
#include "support/service_daemons.hpp"
#include "support/services_control.hpp"
#include "support/socket_io.hpp"

using namespace tunnel::test;
using namespace std::chrono_literals;

namespace {

// The example of systemd/tunnel-server-multi.conf on 127.0.0.1: ssh served by lan1 only, web by
// both, db by lan2 only. `lan2_extra` are services lan2 announces besides web and db.
struct ThreeServices {
  explicit ThreeServices(const ServiceTargets& lan2_extra = {}, const std::string& more_tables = "")
      : lan1_token(new_token()),
        lan2_token(new_token()),
        lan1_file(dir.write("lan1.token", lan1_token)),
        lan2_file(dir.write("lan2.token", lan2_token)),
        config(dir.path() + "/tunnel-server.conf") {
    write_text(config, client_table("lan1", lan1_file) + client_table("lan2", lan2_file) +
                           service_table("ssh", {"lan1"}) + service_table("web", {"lan1", "lan2"}) +
                           service_table("db", {"lan2"}) + more_tables);
    server = std::make_unique<ServicesServer>(config);
    lan1 = std::make_unique<ServicesClient>(
        server->port_b(), "lan1", lan1_file,
        ServiceTargets{{"ssh", ssh_lan1.address()}, {"web", web_lan1.address()}});
    ServiceTargets lan2_services{{"web", web_lan2.address()}, {"db", db_lan2.address()}};
    lan2_services.insert(lan2_services.end(), lan2_extra.begin(), lan2_extra.end());
    lan2 = std::make_unique<ServicesClient>(server->port_b(), "lan2", lan2_file, lan2_services);
    for (const auto& [client, service] : std::vector<std::pair<std::string, std::string>>{
             {"lan1", "ssh"}, {"lan1", "web"}, {"lan2", "web"}, {"lan2", "db"}})
      server->wait_for_line(serving(client, service), kStartTimeout);
  }

  double metric(const std::string& series) const {
    return tunnel::test::metric(server->metrics_port(), series);
  }

  TokenDir dir;
  std::string lan1_token, lan2_token;
  std::string lan1_file, lan2_file;
  std::string config;
  BannerEcho ssh_lan1{"ssh@lan1"};
  BannerEcho web_lan1{"web@lan1"};
  BannerEcho web_lan2{"web@lan2"};
  BannerEcho db_lan2{"db@lan2"};
  std::unique_ptr<ServicesServer> server;
  std::unique_ptr<ServicesClient> lan1;
  std::unique_ptr<ServicesClient> lan2;
};

// One connection to `port`: the target's banner, then `size` bytes of stream `seed` echoed
// exactly (sent and read back in 64 KiB steps), then EOF after our half-close. Returns the banner.
std::string round_trip(uint16_t port, uint64_t seed, size_t size) {
  Socket s = connect_tcp(port);
  const ReadResult banner = read_line(s, 10s, 128);
  INFO("the banner of a connection to port " << port << ": " << banner.describe());
  REQUIRE(banner.end == End::complete);
  PayloadStream stream(seed);
  PayloadChecker checker(seed);
  std::string chunk;
  for (size_t done = 0; done < size;) {
    const size_t n = std::min<size_t>(65536, size - done);
    stream.next(chunk, n);
    send_all(s, chunk);
    const std::string echoed = read_exact(s, n, 10s);
    REQUIRE(checker.check(echoed));
    done += n;
  }
  shutdown_write(s);
  const ReadResult end = read_to_end(s, 10s, 1);
  INFO("after the echo of " << size << " bytes from " << banner.data << ": " << end.describe());
  REQUIRE(closed_without_data(end));
  REQUIRE(end.end == End::eof);
  return banner.data;
}

// Waits until `series` reads `expected` (the relay counters are added when a relay ends, just
// after the visitor saw its EOF).
void require_metric(const ThreeServices& t, const std::string& series, double expected) {
  double seen = -1;
  const bool reached = poll_until(
      [&] {
        seen = sample(scrape_metrics(t.server->metrics_port()), series).value_or(-1);
        return seen == expected;
      },
      5s);
  INFO(series << ": expected " << expected << ", last seen " << seen << " (-1: absent)");
  REQUIRE(reached);
}

long rss_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

}  // namespace

TEST_CASE("each service's bytes reach its own client's target, counted per service and client") {
  ThreeServices t;
  constexpr size_t kSize = 200 * 1024;
  std::map<std::string, size_t> banners;
  for (uint64_t i = 0; i < 3; ++i) ++banners[round_trip(t.server->port("ssh"), 100 + i, kSize)];
  for (uint64_t i = 0; i < 4; ++i) ++banners[round_trip(t.server->port("web"), 200 + i, kSize)];
  for (uint64_t i = 0; i < 3; ++i) ++banners[round_trip(t.server->port("db"), 300 + i, kSize)];
  CHECK(banners["ssh@lan1"] == 3);
  CHECK(banners["db@lan2"] == 3);
  // Round robin over the two clients serving web.
  CHECK(banners["web@lan1"] == 2);
  CHECK(banners["web@lan2"] == 2);
  CHECK(banners.size() == 4);
  CHECK(t.ssh_lan1.accepted() == 3);
  CHECK(t.db_lan2.accepted() == 3);

  CHECK(t.metric("tunnel_clients_online") == 2);
  CHECK(t.metric("tunnel_client_online{client=\"lan1\"}") == 1);
  CHECK(t.metric("tunnel_client_online{client=\"lan2\"}") == 1);
  CHECK(t.metric("tunnel_service_clients_serving{service=\"ssh\"}") == 1);
  CHECK(t.metric("tunnel_service_clients_serving{service=\"web\"}") == 2);
  CHECK(t.metric("tunnel_service_clients_serving{service=\"db\"}") == 1);
  CHECK(t.metric("tunnel_service_connections_accepted_total{service=\"ssh\"}") == 3);
  CHECK(t.metric("tunnel_service_connections_accepted_total{service=\"web\"}") == 4);
  CHECK(t.metric("tunnel_service_connections_accepted_total{service=\"db\"}") == 3);
  CHECK(t.metric("tunnel_service_connections_paired_total{service=\"ssh\",client=\"lan1\"}") == 3);
  CHECK(t.metric("tunnel_service_connections_paired_total{service=\"web\",client=\"lan1\"}") == 2);
  CHECK(t.metric("tunnel_service_connections_paired_total{service=\"web\",client=\"lan2\"}") == 2);
  CHECK(t.metric("tunnel_service_connections_paired_total{service=\"db\",client=\"lan2\"}") == 3);
  const std::string no_such_pair =
      "tunnel_service_connections_paired_total{service=\"ssh\",client=\"lan2\"}";
  CHECK_FALSE(sample(scrape_metrics(t.server->metrics_port()), no_such_pair));
  // Bytes of finished relays: the visitor's to the client, the banner and echo back.
  require_metric(t,
                 "tunnel_service_relayed_bytes_total{service=\"ssh\",client=\"lan1\","
                 "direction=\"to_client\"}",
                 3.0 * kSize);
  require_metric(t,
                 "tunnel_service_relayed_bytes_total{service=\"ssh\",client=\"lan1\","
                 "direction=\"to_external\"}",
                 3.0 * (kSize + 9));
  require_metric(t,
                 "tunnel_service_relayed_bytes_total{service=\"db\",client=\"lan2\","
                 "direction=\"to_external\"}",
                 3.0 * (kSize + 8));
  require_metric(t,
                 "tunnel_service_relayed_bytes_total{service=\"web\",client=\"lan2\","
                 "direction=\"to_client\"}",
                 2.0 * kSize);

  // Logs name the client and the service.
  CHECK(t.server->log().count(
            Match::regex("event=client-online session=[0-9]+ .*client=lan1( |$)")) == 1);
  CHECK(t.server->log().count(
            Match::regex("event=client-online session=[0-9]+ .*client=lan2( |$)")) == 1);
  CHECK(t.server->log().count(
            Match::regex("event=paired conn=[0-9a-f]{8} service=ssh client=lan1 ")) == 3);
  CHECK(t.server->log().count(
            Match::regex("event=paired conn=[0-9a-f]{8} service=db client=lan2 ")) == 3);
  CHECK(t.server->log().count(
            Match::regex("event=paired conn=[0-9a-f]{8} service=web client=lan[12] ")) == 4);
  t.lan1->wait_for_line("event=service-serving service=ssh", 1s);
  t.lan1->wait_for_line("event=service-serving service=web", 1s);
  t.lan2->wait_for_line("event=service-serving service=db", 1s);
  CHECK(t.lan1->log().count("service=db") == 0);
  CHECK(t.lan2->log().count("service=ssh") == 0);
}

TEST_CASE("a service a client may not serve, or that does not exist, is refused and never routed") {
  BannerEcho ssh_lan2("ssh@lan2");
  BannerEcho nosuch_lan2("nosuch@lan2");
  ThreeServices t({{"ssh", ssh_lan2.address()}, {"nosuch", nosuch_lan2.address()}});
  // Refused on the server, said to the client, and logged there too.
  t.server->wait_for_line(refused("lan2", "ssh", "not-allowed"), 5s);
  t.server->wait_for_line(refused("lan2", "nosuch", "unknown"), 5s);
  t.lan2->wait_for_line("event=service-refused service=ssh reason=not-allowed", 5s);
  t.lan2->wait_for_line("event=service-refused service=nosuch reason=unknown", 5s);
  CHECK(t.server->log().count(serving("lan2", "ssh")) == 0);

  for (uint64_t i = 0; i < 6; ++i) CHECK(round_trip(t.server->port("ssh"), i, 1000) == "ssh@lan1");
  CHECK(ssh_lan2.accepted() == 0);
  CHECK(nosuch_lan2.accepted() == 0);
  CHECK(t.metric("tunnel_service_clients_serving{service=\"ssh\"}") == 1);
  CHECK(t.server->log().count(Match::regex("event=announced .*service=ssh client=lan2 ")) == 0);
  // The refusals changed nothing else.
  CHECK(round_trip(t.server->port("web"), 10, 1000).starts_with("web@lan"));
  CHECK(round_trip(t.server->port("db"), 11, 1000) == "db@lan2");
  CHECK(t.metric("tunnel_clients_online") == 2);
}

TEST_CASE("a client name the server does not know is refused at login, the others unaffected") {
  ThreeServices t;
  BannerEcho web_lan9("web@lan9");
  const std::string stranger_file = t.dir.write("lan9.token", new_token());
  const size_t from = t.server->mark();
  ServicesClient lan9(t.server->port_b(), "lan9", stranger_file, {{"web", web_lan9.address()}});
  t.server->wait_for_line(
      Match::regex("event=auth-refused stage=control reason=[^ ]+ peer=[^ ]+ client=lan9 "), 10s,
      from);
  lan9.wait_for_line(Match::regex("event=control-refused .*code=auth "), 10s);
  CHECK(t.metric("tunnel_auth_failures_total{stage=\"control\"}") >= 1);
  CHECK(t.metric("tunnel_clients_online") == 2);
  CHECK_FALSE(
      sample(scrape_metrics(t.server->metrics_port()), "tunnel_client_online{client=\"lan9\"}"));
  // A known name with the wrong token is refused the same way, and lan1 keeps its session.
  const std::string wrong_file = t.dir.write("lan1-wrong.token", new_token());
  ServicesClient impostor(t.server->port_b(), "lan1", wrong_file, {{"web", web_lan9.address()}});
  t.server->wait_for_line(
      Match::regex("event=auth-refused stage=control reason=[^ ]+ peer=[^ ]+ client=lan1 "), 10s,
      from);
  impostor.wait_for_line(Match::regex("event=control-refused .*code=auth "), 10s);
  for (uint64_t i = 0; i < 4; ++i) CHECK(round_trip(t.server->port("web"), i, 1000) != "web@lan9");
  CHECK(web_lan9.accepted() == 0);
  CHECK(t.server->log().count("event=client-offline", from) == 0);
}

TEST_CASE(
    "a control connection announcing 10,000 services is closed beyond 2048, the server bounded") {
  TokenDir lan3_dir;
  const std::string lan3_token = new_token();
  ThreeServices t({}, client_table("lan3", lan3_dir.write("lan3.token", lan3_token)));
  round_trip(t.server->port("web"), 1, 1000);
  const FdCensus baseline = settled_census(t.server->pid());
  const long rss_before = rss_kib(t.server->pid());

  constexpr int kFloods = 3;
  constexpr int kAnnounced = 10000;
  for (int flood = 0; flood < kFloods; ++flood) {
    const size_t from = t.server->mark();
    ServicesControl lan3 = login_with_services(t.server->port_b(), lan3_token, "lan3");
    INFO("lan3's login: " << lan3.answer);
    REQUIRE(lan3.answer == "OK auth services");
    // 64-character names, the longest there are; written on a thread while the answers are read.
    std::thread writer([&] {
      std::string lines;
      for (int i = 0; i < kAnnounced; ++i) {
        std::string name = "f" + std::to_string(flood) + "-" + std::to_string(i);
        lines += "SERVE " + name + std::string(64 - name.size(), 'x') + "\n";
      }
      int error = 0;
      try_send_all(lan3.socket, lines, 10s, error);  // cut short when the server closes
    });
    size_t refusals = 0;
    ReadResult line;
    for (line = read_line(lan3.socket, 10s, 512); line.end == End::complete;
         line = read_line(lan3.socket, 10s, 512))
      if (line.data.starts_with("REFUSED ") && line.data.ends_with(" unknown")) ++refusals;
    writer.join();
    INFO("the flood's control connection ended with " << line.describe() << " after " << refusals
                                                      << " refusals");
    CHECK((line.end == End::eof || line.end == End::reset));
    CHECK(refusals <= 2048);
    wait_until([&] { return t.metric("tunnel_client_online{client=\"lan3\"}") == 0; }, 10s,
               "lan3's session over");
    // The server logs each refusal: 2048 lines at once may be more than the pipe takes, and the
    // daemon drops lines rather than block (event=log-dropped). Checked when none was dropped.
    if (t.server->log().count("event=log-dropped", from) == 0) {
      const std::string closed =
          t.server->wait_for_line("reason=\"more than 2048 services announced\"", 10s, from);
      const std::string session = *field(closed, "session");
      t.server->wait_for_line(
          Match::regex("event=client-offline session=" + session + " .*client=lan3"), 10s, from);
    } else {
      WARN("flood " << flood << ": the server dropped log lines; its close not checked by log");
    }
    WARN("flood " << flood << ": " << refusals << " REFUSED lines read before the close");
  }

  // Refusals are logged, not flooded: each of a session's first 16 SERVE lines, then at most one
  // line a second (DESIGN.md: every refusal is logged, rate-limited).
  const size_t refusal_lines = t.server->log().count("event=service-refused client=lan3");
  WARN(refusal_lines << " service-refused lines for " << kFloods << " floods of " << kAnnounced);
  CHECK(refusal_lines <= kFloods * 16 + 30);

  // lan1 and lan2 never noticed.
  CHECK(t.server->log().count(Match::regex("event=client-offline .*client=lan[12]")) == 0);
  CHECK(t.metric("tunnel_clients_online") == 2);
  CHECK(t.metric("tunnel_control_sessions_total") == 2 + kFloods);
  CHECK(t.metric("tunnel_service_clients_serving{service=\"web\"}") == 2);
  CHECK(round_trip(t.server->port("ssh"), 2, 100000) == "ssh@lan1");
  CHECK(round_trip(t.server->port("db"), 3, 100000) == "db@lan2");
  CHECK(round_trip(t.server->port("web"), 4, 100000).starts_with("web@lan"));
  // Bounded: every descriptor back, and memory that did not grow with the floods' 30,000 names.
  wait_fds_back(t.server->pid(), baseline, 64, 10s, "tunnel-server after the floods");
  const long rss_after = rss_kib(t.server->pid());
  WARN("server RSS " << rss_before << " KiB before, " << rss_after << " KiB after " << kFloods
                     << " floods");
  CHECK(rss_after - rss_before < 32 * 1024);
}
