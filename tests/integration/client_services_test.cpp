// The client side of the services extension (docs/PROTOCOL.md, "Services"), with the real
// tunnel-client against a fake server on port B played by the test and real targets: SERVE after
// an OK that lists services, SERVING/REFUSED logged, NEW routed by service (or to default, or to
// the only service), FAIL unknown-service, an older server's warning, the per-service metrics;
// and the ways a service list is given and refused on the command line and in the config file.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>

#include "support/auth_peer.hpp"
#include "support/daemons.hpp"
#include "support/fake_control.hpp"
#include "support/payload.hpp"
#include "support/process.hpp"
#include "support/scripted_target.hpp"
#include "support/socket_io.hpp"

using namespace tunnel::test;
using namespace std::chrono_literals;

namespace {

// A target that says which service it is ("<name>\n"), then echoes until the peer's EOF.
class NamedTarget : public ScriptedTarget {
 public:
  explicit NamedTarget(std::string name)
      : ScriptedTarget([name](Socket& connection, size_t) {
          send_all(connection, name + "\n");
          for (;;) {
            ReadResult r = read_some(connection, 65536, 10s);
            if (!r.data.empty()) send_all(connection, r.data);
            if (r.end != End::complete) break;
          }
          shutdown_write(connection);
        }) {}
};

// Port B played by the test: the client's control connection, then its data connections.
class FakeServer {
 public:
  uint16_t port() const { return local_port(listener_); }

  // Accepts the control connection and returns its hello line.
  std::string accept_control() {
    control_ = accept_within(listener_, kStartTimeout);
    return read_control_line();
  }
  std::string read_control_line() {
    ReadResult r = read_line(control_, 5s, 512);
    INFO("the client's control line: " << r.describe());
    REQUIRE(r.end == End::complete);
    return r.data;
  }
  void say(const std::string& lines) { send_all(control_, lines); }
  // The next line that is not a heartbeat PING.
  std::string next_line() {
    for (;;) {
      std::string line = read_control_line();
      if (!line.starts_with("PING ")) return line;
    }
  }
  // Sends PING and returns every line the client sent before its PONG.
  std::vector<std::string> lines_until_pong(const std::string& token) {
    say("PING " + token + "\n");
    std::vector<std::string> lines;
    for (std::string line = next_line(); line != "PONG " + token; line = next_line())
      lines.push_back(line);
    return lines;
  }
  // Accepts the client's data connection for `id` (its first line checked).
  Socket accept_data(const std::string& id) {
    Socket data = accept_within(listener_, 5s);
    ReadResult r = read_line(data, 5s, 512);
    INFO("the data connection's first line: " << r.describe());
    REQUIRE(r.end == End::complete);
    REQUIRE(r.data == "TUNNEL/1 DATA " + id);
    return data;
  }

 private:
  Socket listener_ = listen_tcp(0);
  Socket control_;
};

// tunnel-client with `--server` the fake server, debug logs, a metrics endpoint, then `args`.
Process start_client(uint16_t port_b, std::vector<std::string> args) {
  std::vector<std::string> argv = {client_binary(), "--server", loopback(port_b),
                                   "--log-level",   "debug",    "--metrics-listen",
                                   "127.0.0.1:0"};
  argv.insert(argv.end(), args.begin(), args.end());
  return Process("tunnel-client", argv);
}

// Through the data connection of a NEW: the target's name, then `size` bytes echoed exactly.
void require_reaches(Socket& data, const std::string& service, uint64_t seed, size_t size) {
  ReadResult banner = read_line(data, 5s, 128);
  INFO("expected the target of " << service << ": " << banner.describe());
  REQUIRE(banner.end == End::complete);
  REQUIRE(banner.data == service);
  const std::string payload = make_payload(seed, size);
  send_all(data, payload);
  shutdown_write(data);
  ReadResult echoed = read_to_end(data, 10s, size + 1);
  INFO("echo: " << to_string(echoed.end) << " after " << echoed.data.size() << " of " << size
                << " bytes");
  CHECK(echoed.end == End::eof);
  CHECK(echoed.data == payload);
}

// A run of tunnel-client that is expected to exit: its status and every line (stdout and stderr)
// other than its own info/debug progress.
struct Outcome {
  ExitStatus status;
  std::vector<std::string> said;
  std::string describe() const {
    std::string out = status.describe() + ", said:";
    for (const auto& line : said) out += "\n  | " + line;
    return out;
  }
};

Outcome run_client(std::vector<std::string> args) {
  args.insert(args.begin(), client_binary());
  Process client("tunnel-client", args);
  Outcome outcome{client.wait_exit(10s), {}};
  for (const auto& line : client.log().lines())
    if (!line.text.empty() && line.text.find(" level=") == std::string::npos)
      outcome.said.push_back(line.text);
  return outcome;
}

// Exit code `code` and one line that holds each of `parts`.
void require_refused(const Outcome& outcome, int code, const std::vector<std::string>& parts) {
  INFO(outcome.describe());
  REQUIRE(outcome.status.exited);
  CHECK(outcome.status.code == code);
  REQUIRE(outcome.said.size() == 1);
  for (const auto& part : parts) {
    INFO("expected in the line: " << part);
    CHECK(outcome.said[0].find(part) != std::string::npos);
  }
}

// A TOML file for --config, removed when the test ends.
class TomlFile {
 public:
  explicit TomlFile(const std::string& text)
      : path_(std::filesystem::temp_directory_path() /
              ("tunnel-client-services-" + random_id() + ".toml")) {
    std::ofstream(path_) << text;
  }
  ~TomlFile() { std::filesystem::remove(path_); }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace

TEST_CASE("two services with two targets: each NEW reaches its own target, byte for byte") {
  NamedTarget web("web"), ssh("ssh");
  FakeServer server;
  Process client = start_client(
      server.port(), {"--service", "web=" + web.address(), "--service", "ssh=" + ssh.address()});
  CHECK(server.accept_control() == "TUNNEL/1 CONTROL services pool");
  server.say("OK services\n");
  CHECK(server.next_line() == "SERVE web");
  CHECK(server.next_line() == "SERVE ssh");
  server.say("SERVING web\nSERVING ssh\n");
  client.wait_for_line("level=info event=service-serving service=web", 5s);
  client.wait_for_line("level=info event=service-serving service=ssh", 5s);

  // One at a time, so that the data connections arrive in a known order.
  const std::string to_ssh = random_id(), to_web = random_id(), again_ssh = random_id();
  server.say("NEW " + to_ssh + " ssh\n");
  Socket ssh_data = server.accept_data(to_ssh);
  server.say("NEW " + to_web + " web\n");
  Socket web_data = server.accept_data(to_web);
  server.say("NEW " + again_ssh + " ssh\n");
  Socket ssh_again = server.accept_data(again_ssh);
  require_reaches(web_data, "web", 1, 300'000);
  require_reaches(ssh_data, "ssh", 2, 100'000);
  require_reaches(ssh_again, "ssh", 3, 10);
  CHECK(web.accepted() == 1);
  CHECK(ssh.accepted() == 2);

  // Counted per service; the unlabelled series stay the totals.
  uint16_t metrics = listening_port(client, "metrics");
  auto settled = [&] { return metric(metrics, "tunnel_connections_active") == 0; };
  REQUIRE(poll_until(settled, 5s));
  CHECK(metric(metrics, "tunnel_connections_requested_total") == 3);
  CHECK(metric(metrics, "tunnel_connections_relayed_total") == 3);
  CHECK(metric(metrics, "tunnel_service_connections_requested_total{service=\"web\"}") == 1);
  CHECK(metric(metrics, "tunnel_service_connections_requested_total{service=\"ssh\"}") == 2);
  CHECK(metric(metrics, "tunnel_service_connections_relayed_total{service=\"ssh\"}") == 2);
  CHECK(metric(metrics, "tunnel_service_connections_active{service=\"web\"}") == 0);
  CHECK(metric(metrics,
               "tunnel_service_relayed_bytes_total{service=\"web\",direction=\"to_target\"}") ==
        300'000);
  CHECK(metric(metrics,
               "tunnel_service_relayed_bytes_total{service=\"ssh\",direction=\"from_target\"}") ==
        100'000 + 10 + 2 * 4);  // with the banners
  CHECK(metric(metrics, "tunnel_client_service_serving{service=\"web\"}") == 1);
  CHECK(metric(metrics, "tunnel_client_service_serving{service=\"ssh\"}") == 1);
}

TEST_CASE("REFUSED and unprompted changes are logged per service; other services keep serving") {
  NamedTarget web("web"), ssh("ssh");
  FakeServer server;
  Process client = start_client(
      server.port(), {"--service", "web=" + web.address(), "--service", "ssh=" + ssh.address()});
  server.accept_control();
  server.say("OK services\n");
  CHECK(server.next_line() == "SERVE web");
  CHECK(server.next_line() == "SERVE ssh");
  server.say("SERVING web\nREFUSED ssh not-allowed\n");
  client.wait_for_line("level=warn event=service-refused service=ssh reason=not-allowed", 5s);
  uint16_t metrics = listening_port(client, "metrics");
  CHECK(metric(metrics, "tunnel_client_service_serving{service=\"ssh\"}") == 0);
  CHECK(metric(metrics, "tunnel_client_service_serving{service=\"web\"}") == 1);

  // A reload on the server: web removed, ssh allowed; and lines about services never announced.
  server.say("REFUSED web removed\nSERVING ssh\nSERVING mail\nREFUSED imap unknown\n");
  client.wait_for_line("level=warn event=service-refused service=web reason=removed", 5s);
  client.wait_for_line("level=info event=service-serving service=ssh", 5s);
  client.wait_for_line("level=debug event=service-ignored verb=SERVING service=mail", 5s);
  client.wait_for_line("level=debug event=service-ignored verb=REFUSED service=imap", 5s);
  // The control connection stays, and ssh is served.
  CHECK(server.lines_until_pong("still-there").empty());
  const std::string id = random_id();
  server.say("NEW " + id + " ssh\n");
  Socket data = server.accept_data(id);
  require_reaches(data, "ssh", 4, 1000);
  CHECK(metric(metrics, "tunnel_client_service_serving{service=\"ssh\"}") == 1);
  CHECK(metric(metrics, "tunnel_client_service_serving{service=\"web\"}") == 0);
  CHECK_FALSE(client.log().find("event=control-lost").has_value());
}

TEST_CASE("NEW without a service: the service named default, else the only one") {
  NamedTarget default_target("default"), web("web");
  FakeServer server;
  SECTION("--target is the service named default, beside --service web") {
    Process client = start_client(
        server.port(), {"--target", default_target.address(), "--service", "web=" + web.address()});
    server.accept_control();
    server.say("OK services\n");
    CHECK(server.next_line() == "SERVE default");
    CHECK(server.next_line() == "SERVE web");
    const std::string id = random_id();
    server.say("NEW " + id + "\n");
    Socket data = server.accept_data(id);
    require_reaches(data, "default", 5, 1000);
  }
  SECTION("the only service, named web, with an older server") {
    Process client = start_client(server.port(), {"--service", "web=" + web.address()});
    server.accept_control();
    server.say("OK\n");
    CHECK(server.lines_until_pong("no-serve").empty());  // no SERVE to an older server
    const std::string id = random_id();
    server.say("NEW " + id + "\n");
    Socket data = server.accept_data(id);
    require_reaches(data, "web", 6, 1000);
    CHECK_FALSE(client.log().find("event=services-unsupported").has_value());
  }
}

TEST_CASE("NEW for a service the client does not have: FAIL <id> unknown-service, counted") {
  NamedTarget web("web"), ssh("ssh");
  FakeServer server;
  Process client = start_client(
      server.port(), {"--service", "web=" + web.address(), "--service", "ssh=" + ssh.address()});
  server.accept_control();
  server.say("OK services\n");
  CHECK(server.next_line() == "SERVE web");
  CHECK(server.next_line() == "SERVE ssh");
  const std::string named = random_id(), unnamed = random_id();
  // Neither `mail` nor `default` is served here (two services, none named default).
  server.say("NEW " + named + " mail\nNEW " + unnamed + "\n");
  CHECK(server.next_line() == "FAIL " + named + " unknown-service");
  CHECK(server.next_line() == "FAIL " + unnamed + " unknown-service");
  client.wait_for_line(Match::regex("level=warn event=unknown-service conn=[0-9a-f]+ service=mail"),
                       5s);
  CHECK(web.accepted() + ssh.accepted() == 0);
  uint16_t metrics = listening_port(client, "metrics");
  CHECK(metric(metrics, "tunnel_connections_failed_total{reason=\"unknown-service\"}") == 2);
  CHECK(metric(metrics, "tunnel_connections_requested_total") == 2);
  CHECK(metric(metrics, "tunnel_service_connections_requested_total{service=\"web\"}") == 0);
}

TEST_CASE("an older server with several services: one clear warning, only default is served") {
  NamedTarget default_target("default"), web("web");
  FakeServer server;
  Process client = start_client(
      server.port(), {"--target", default_target.address(), "--service", "web=" + web.address()});
  CHECK(server.accept_control() == "TUNNEL/1 CONTROL services pool");
  server.say("OK\n");
  CHECK(server.lines_until_pong("no-serve").empty());
  client.wait_for_line(
      Match::regex("level=warn event=services-unsupported server=[^ ]+ services=2 served=default "
                   "detail=\""),
      5s);
  const std::string id = random_id();
  server.say("NEW " + id + "\n");
  Socket data = server.accept_data(id);
  require_reaches(data, "default", 7, 1000);
  uint16_t metrics = listening_port(client, "metrics");
  CHECK(metric(metrics, "tunnel_client_service_serving{service=\"default\"}") == 1);
  CHECK(metric(metrics, "tunnel_client_service_serving{service=\"web\"}") == 0);
  CHECK(client.log().count("event=services-unsupported") == 1);
}

// --- how services are given, and refused ---

TEST_CASE("check-config: counts the services of --target, --service and [service.NAME] tables") {
  TomlFile config(
      "server = \"127.0.0.1:1\"\n"
      "[service.web]\n"
      "target = \"127.0.0.1:8080\"\n"
      "[service.\"ssh.lan\"]\n"
      "target = \"[::1]:22\"\n");
  Outcome ok = run_client({"--config", config.path(), "--target", "127.0.0.1:2", "--service",
                           "db=127.0.0.1:5432", "--check-config"});
  INFO(ok.describe());
  CHECK(ok.status.exited);
  CHECK(ok.status.code == 0);
  CHECK(ok.said == std::vector<std::string>{"tunnel-client: config OK: 4 services"});
  Outcome one =
      run_client({"--server", "127.0.0.1:1", "--target", "127.0.0.1:2", "--check-config"});
  INFO(one.describe());
  CHECK(one.status.code == 0);
  CHECK(one.said == std::vector<std::string>{"tunnel-client: config OK: 1 services"});
}

TEST_CASE("a bad --service is refused with one line naming it, exit code 2") {
  const std::vector<std::string> server = {"--server", "127.0.0.1:1"};
  auto with = [&](std::vector<std::string> more) {
    more.insert(more.begin(), server.begin(), server.end());
    return more;
  };
  require_refused(run_client(with({"--service", "web"})), 2, {"--service", "NAME=HOST:PORT"});
  require_refused(run_client(with({"--service", "we b=127.0.0.1:1"})), 2,
                  {"--service", "not a service name"});
  require_refused(run_client(with({"--service", "=127.0.0.1:1"})), 2,
                  {"--service", "not a service name"});
  require_refused(run_client(with({"--service", "web=no-port"})), 2, {"--service", "no-port"});
  require_refused(
      run_client(with({"--service", "web=127.0.0.1:1", "--service", "web=127.0.0.1:2"})), 2,
      {"--service web", "already set by --service web"});
  require_refused(run_client(with({"--target", "127.0.0.1:1", "--service", "default=127.0.0.1:2"})),
                  2, {"--service default", "already set by --target"});
  // No service at all: the message still names --target first, as before services existed.
  require_refused(run_client(server), 2, {"--target is required", "--service", "[service.NAME]"});
}

TEST_CASE("a bad [service.NAME] table is refused with one line naming the file, line and key") {
  const std::string head = "server = \"127.0.0.1:1\"\n";
  struct Case {
    std::string body;
    std::vector<std::string> parts;
  };
  for (const auto& c : std::vector<Case>{
           {"[service.web]\ntarget = \"127.0.0.1:80\"\nsend-proxy = \"v1\"\n",
            {":4: ", "unknown key 'send-proxy' in [service.web]"}},
           {"[service.web]\n", {":2: ", "[service.web]", "missing key 'target'"}},
           {"[service.web]\ntarget = \"no-port\"\n", {":3: ", "[service.web] target", "no-port"}},
           {"[service.web]\ntarget = 80\n", {":3: ", "[service.web] target", "string"}},
           {"[service.\"we b\"]\ntarget = \"127.0.0.1:80\"\n",
            {":2: ", "[service.we b]", "not a service name"}},
           {"[service.web]\ntarget = \"127.0.0.1:80\"\n[service.default]\ntarget = "
            "\"127.0.0.1:81\"\n",
            {":5: [service.default] target", "already set by --target"}},
       }) {
    TomlFile config(head + c.body);
    auto parts = c.parts;
    parts.push_back("--config " + config.path());
    INFO("config file:\n" << head << c.body);
    require_refused(run_client({"--config", config.path(), "--target", "127.0.0.1:2"}), 2, parts);
  }
}

TEST_CASE("more services than a session may serve are refused, exit code 2") {
  std::string text = "server = \"127.0.0.1:1\"\n";
  for (size_t i = 0; i <= 2048; ++i)
    text += "[service.s" + std::to_string(i) + "]\ntarget = \"127.0.0.1:80\"\n";
  TomlFile config(text);
  require_refused(run_client({"--config", config.path()}), 2,
                  {"[service.s2048] target", "2049 services, at most 2048"});
  TomlFile fits(text.substr(0, text.rfind("[service.s2048]")));
  Outcome ok = run_client({"--config", fits.path(), "--check-config"});
  INFO(ok.describe());
  CHECK(ok.status.code == 0);
  CHECK(ok.said == std::vector<std::string>{"tunnel-client: config OK: 2048 services"});
}
