// README "Logs": under systemd (JOURNAL_STREAM set) `<N>` priority prefixes and no timestamp,
// otherwise an ISO-8601 UTC timestamp and level=; --log-level filters what is written.
#include <signal.h>

#include <catch2/catch.hpp>
#include <regex>
#include <tuple>

#include "ops_support.hpp"
#include "support/daemons.hpp"
#include "support/fake_control.hpp"
#include "support/report.hpp"
#include "support/socket_io.hpp"

using namespace tunnel::test;
using namespace tunnel::test::ops;
using namespace std::chrono_literals;

namespace {

const std::regex kTimestamp("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}");
const std::regex kJournalLine("<[0-7]>event=[a-z-]+( .*)?");
const std::regex kPlainLine(
    "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
    "level=(trace|debug|info|warn|error) event=[a-z-]+( .*)?");

// Requires every captured line of a finished process to match `shape` (and lists those that do
// not).
void check_every_line(const Process& process, const std::regex& shape, bool timestamps) {
  const auto lines = process.log().lines();
  REQUIRE_FALSE(lines.empty());
  std::string wrong;
  for (const auto& line : lines) {
    const bool stamped = std::regex_search(line.text, kTimestamp);
    if (!std::regex_match(line.text, shape) || stamped != timestamps) wrong += line.text + "\n";
  }
  INFO(process.name() << ": lines not of the expected shape:\n" << wrong);
  CHECK(wrong.empty());
}

void stop(Process& process) {
  process.signal(SIGTERM);
  const ExitStatus status = process.wait_exit(10s);
  INFO(process.name() << " " << status.describe());
  CHECK((status.exited && status.code == 0));
}

}  // namespace

TEST_CASE("journald mode: with JOURNAL_STREAM set, lines carry a <N> priority and no timestamp") {
  auto server =
      start_process("tunnel-server", {"/usr/bin/env", "JOURNAL_STREAM=1:2"}, server_binary(),
                    {"--listen-a", "127.0.0.1:0", "--listen-b", "127.0.0.1:0", "--log-level",
                     "debug", "--pair-timeout", "300ms"});
  server->wait_for_line("<6>event=ready", kStartTimeout);
  {
    Socket a = connect_tcp(bound_port(*server, "a"));
    server->wait_for_line("<7>event=accepted", 5s);
    read_to_end(a, 5s);
  }
  // A client with nowhere to go logs its failures at warn: <4>.
  auto client =
      start_process("tunnel-client", {"/usr/bin/env", "JOURNAL_STREAM=1:2"}, client_binary(),
                    {"--server", loopback(refused_port()), "--target", loopback(refused_port())});
  client->wait_for_line("<4>event=control-lost", kStartTimeout);
  client->wait_for_line("<6>event=started", 2s);
  stop(*server);
  stop(*client);
  check_every_line(*server, kJournalLine, false);
  check_every_line(*client, kJournalLine, false);
}

TEST_CASE("without JOURNAL_STREAM, lines start with an ISO-8601 UTC timestamp and level=") {
  // The support library removes JOURNAL_STREAM from the daemons' environment.
  Server server;
  const auto now = std::chrono::system_clock::now();
  Socket a = connect_tcp(server.port_a());
  server.wait_for_line("level=debug event=accepted", 5s);
  stop(server.process());
  check_every_line(server.process(), kPlainLine, true);
  const std::string ready = server.log().find("event=ready")->text;
  const auto stamped = stamped_time(ready);
  REQUIRE(stamped);
  const long long skew = std::chrono::duration_cast<std::chrono::seconds>(*stamped - now).count();
  INFO(ready << "\nstamped " << skew << " s from the test's UTC clock");
  // A local-time stamp would be off by the zone's offset, in hours.
  CHECK(std::abs(skew) < 60);
}

TEST_CASE("log level warn (--log-level warn): info lines suppressed, warnings kept") {
  // At warn the server announces nothing, not even its ports: it gets free ports chosen here, and
  // is up once A and B both take connections (A is bound first, so A alone proves nothing). A port
  // can be taken in between by someone else's connection; then the server exits and we retry.
  uint16_t port_a = 0, port_b = 0;
  std::unique_ptr<Process> server;
  for (int attempt = 0; attempt < 5 && !server; ++attempt) {
    std::tie(port_a, port_b) = two_free_ports();
    server = start_process("tunnel-server", {}, server_binary(),
                           {"--listen-a", loopback(port_a), "--listen-b", loopback(port_b),
                            "--log-level", "warn", "--pair-timeout", "300ms"});
    wait_until(
        [&] {
          return !server->running() ||
                 (probe_connect("127.0.0.1", port_a, 200ms) == Reach::connected &&
                  probe_connect("127.0.0.1", port_b, 200ms) == Reach::connected);
        },
        kStartTimeout, "the server to accept on A and B, or to exit");
    if (!server->running()) server.reset();
  }
  REQUIRE(server);
  {
    // Info-level events: a client session, and an A connection nobody pairs.
    FakeControl control(port_b);
    REQUIRE(control.online());
    Socket a = connect_tcp(port_a);
    control.wait_new(5s);
    read_to_end(a, 5s);
    // A warning: a client sending the server's own words is refused.
    control.send_line("NEW " + random_id());
    server->wait_for_line("level=warn event=control-unexpected", 5s);
  }
  stop(*server);
  const auto lines = server->log().lines();
  std::string not_warn;
  for (const auto& line : lines) {
    if (line.text.find("level=warn") == std::string::npos &&
        line.text.find("level=error") == std::string::npos) {
      not_warn += line.text + "\n";
    }
  }
  INFO("lines below warn:\n" << not_warn);
  CHECK(not_warn.empty());
}

TEST_CASE("log level debug (--log-level debug) shows event=accepted, the default info does not") {
  {
    Server debug({"--log-level", "debug"});
    Socket a = connect_tcp(debug.port_a());
    debug.wait_for_line("level=debug event=accepted", 5s);
  }
  Server info({"--log-level", "info", "--pair-timeout", "300ms"});
  Socket a = connect_tcp(info.port_a());
  ReadResult r = read_to_end(a, 5s);
  CHECK(closed_without_data(r));
  info.wait_for_line("level=info event=conn-failed", 5s);
  CHECK_FALSE(info.log().find("event=accepted").has_value());
  CHECK_FALSE(info.log().find("level=debug").has_value());
}
