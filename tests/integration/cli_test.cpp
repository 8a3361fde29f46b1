// Failure behaviour (docs/ARCHITECTURE.md), row "cannot bind A/B, bad flag, bad config" and README
// "Config file" (flags win): the exit code and the one clear line of the contract, for both
// daemons.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <regex>

#include "support/daemons.hpp"
#include "support/process.hpp"
#include "support/socket_io.hpp"

using namespace tunnel::test;
using namespace std::chrono_literals;

namespace {

struct Run {
  ExitStatus status;
  std::vector<std::string> lines;  // stdout and stderr, in order
  std::string all() const {
    std::string out;
    for (const auto& l : lines) out += "  | " + l + "\n";
    return out;
  }
  // What the operator is told about the failure: every non-empty line but info/debug progress.
  std::vector<std::string> complaint() const {
    std::vector<std::string> out;
    for (const auto& l : lines) {
      if (l.empty() || l.find("level=info ") != std::string::npos ||
          l.find("level=debug ") != std::string::npos) {
        continue;
      }
      out.push_back(l);
    }
    return out;
  }
};

Run run(const std::string& binary, std::vector<std::string> args) {
  args.insert(args.begin(), binary);
  Process p(binary.substr(binary.rfind('/') + 1), args);
  Run r;
  r.status = p.wait_exit(10s);
  for (auto& l : p.log().lines()) r.lines.push_back(l.text);
  return r;
}

// Exit code `code` and exactly one line, mentioning every one of `mentions`.
void require_one_line(const Run& r, int code, const std::vector<std::string>& mentions) {
  INFO("status: " << r.status.describe() << "\noutput:\n" << r.all());
  CHECK(r.status.exited);
  CHECK(r.status.code == code);
  const auto lines = r.complaint();
  REQUIRE(lines.size() == 1);
  for (const auto& m : mentions) {
    INFO("the line should mention \"" << m << "\"");
    CHECK(lines[0].find(m) != std::string::npos);
  }
}

// A config file in the temporary directory, removed at the end of the test.
struct ConfigFile {
  std::filesystem::path path;
  explicit ConfigFile(const std::string& text) {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("tunnel-it-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".conf");
    std::ofstream(path) << text;
  }
  ~ConfigFile() { std::filesystem::remove(path); }
};

const std::vector<std::string> kEphemeral = {"--listen-a", "127.0.0.1:0", "--listen-b",
                                             "127.0.0.1:0"};

std::vector<std::string> ephemeral_and(std::vector<std::string> more) {
  std::vector<std::string> args = kEphemeral;
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

}  // namespace

TEST_CASE("bad flag: exit code 2 and one line naming the option") {
  require_one_line(run(server_binary(), ephemeral_and({"--no-such-flag"})), 2, {"--no-such-flag"});
  require_one_line(run(client_binary(),
                       {"--server", "127.0.0.1:1", "--target", "127.0.0.1:2", "--no-such-flag"}),
                   2, {"--no-such-flag"});
  // The client's required flags.
  require_one_line(run(client_binary(), {"--target", "127.0.0.1:2"}), 2, {"--server"});
  require_one_line(run(client_binary(), {"--server", "127.0.0.1:1"}), 2, {"--target"});
}

TEST_CASE("bad duration: exit code 2 and one line naming the option") {
  require_one_line(run(server_binary(), ephemeral_and({"--pair-timeout", "10parsecs"})), 2,
                   {"--pair-timeout", "10parsecs"});
  require_one_line(run(server_binary(), ephemeral_and({"--handshake-timeout", "-1s"})), 2,
                   {"--handshake-timeout"});
  require_one_line(run(client_binary(), {"--server", "127.0.0.1:1", "--target", "127.0.0.1:2",
                                         "--dial-timeout", "soon"}),
                   2, {"--dial-timeout", "soon"});
}

TEST_CASE(
    "zero duration: refused where 0 makes no sense, exit code 2 and one line naming the option") {
  for (const std::string option : {"--pair-timeout", "--handshake-timeout", "--probe-timeout"}) {
    for (const std::string zero : {"0s", "0ms"}) {
      require_one_line(run(server_binary(), ephemeral_and({option, zero})), 2,
                       {option, "must be longer than 0"});
    }
  }
  for (const std::string option : {"--dial-timeout", "--reconnect-max", "--heartbeat-interval"}) {
    require_one_line(
        run(client_binary(), {"--server", "127.0.0.1:1", "--target", "127.0.0.1:2", option, "0s"}),
        2, {option, "must be longer than 0"});
  }
}

TEST_CASE("zero duration in the config file: exit code 2 and one line naming the key") {
  for (const std::string key : {"pair-timeout", "handshake-timeout", "probe-timeout"}) {
    ConfigFile config(key + " = \"0s\"\n");
    require_one_line(run(server_binary(), ephemeral_and({"--config", config.path.string()})), 2,
                     {key, "must be longer than 0"});
  }
  for (const std::string key : {"dial-timeout", "reconnect-max"}) {
    ConfigFile config("server = \"127.0.0.1:1\"\ntarget = \"127.0.0.1:2\"\n" + key +
                      " = \"0ms\"\n");
    require_one_line(run(client_binary(), {"--config", config.path.string()}), 2,
                     {key, "must be longer than 0"});
  }
}

TEST_CASE("zero drain timeout: accepted, it means do not wait") {
  Server server({"--drain-timeout", "0s"});
  CHECK(server.process().running());
}

TEST_CASE("bad address: exit code 2 and one line naming the option") {
  require_one_line(
      run(server_binary(), {"--listen-a", "127.0.0.1:99999", "--listen-b", "127.0.0.1:0"}), 2,
      {"--listen-a", "99999"});
  require_one_line(run(server_binary(), {"--listen-a", "127.0.0.1:0", "--listen-b", "no-port"}), 2,
                   {"--listen-b", "no-port"});
  require_one_line(run(client_binary(), {"--server", "127.0.0.1:1", "--target", "localhost"}), 2,
                   {"--target", "localhost"});
}

TEST_CASE("unknown config key: exit code 2 and one line naming the key") {
  ConfigFile config("pair-timeout = \"2s\"\nno-such-key = 1\n");
  require_one_line(run(server_binary(), ephemeral_and({"--config", config.path.string()})), 2,
                   {"--config", "no-such-key"});
}

TEST_CASE("bad value in the config file: exit code 2 and one line naming the key and the value") {
  ConfigFile config("pair-timeout = \"soon\"\n");
  require_one_line(run(server_binary(), ephemeral_and({"--config", config.path.string()})), 2,
                   {"pair-timeout", "soon"});
  ConfigFile client_config("server = \"127.0.0.1:1\"\ntarget = \"no-port\"\n");
  require_one_line(run(client_binary(), {"--config", client_config.path.string()}), 2,
                   {"target", "no-port"});
}

TEST_CASE("missing config file: exit code 2 and one line naming --config and the file") {
  const std::string missing = "/nonexistent-dir/tunnel-it-missing.conf";
  require_one_line(run(server_binary(), ephemeral_and({"--config", missing})), 2,
                   {"--config", missing});
  require_one_line(run(client_binary(),
                       {"--server", "127.0.0.1:1", "--target", "127.0.0.1:2", "--config", missing}),
                   2, {"--config", missing});
}

TEST_CASE("cannot bind A: exit code 1 and one line naming --listen-a, the address and the error") {
  Socket taken = listen_tcp(0);
  const std::string addr = loopback(local_port(taken));
  require_one_line(run(server_binary(), {"--listen-a", addr, "--listen-b", "127.0.0.1:0"}), 1,
                   {"--listen-a", addr, "Address already in use"});
}

TEST_CASE("cannot bind B: exit code 1 and one line naming --listen-b, the address and the error") {
  Socket taken = listen_tcp(0);
  const std::string addr = loopback(local_port(taken));
  require_one_line(run(server_binary(), {"--listen-a", "127.0.0.1:0", "--listen-b", addr}), 1,
                   {"--listen-b", addr, "Address already in use"});
}

TEST_CASE("help and version: --help and --version exit 0") {
  for (const auto& binary : {server_binary(), client_binary()}) {
    Run help = run(binary, {"--help"});
    INFO(binary << " --help: " << help.status.describe() << "\n" << help.all());
    CHECK(help.status.exited);
    CHECK(help.status.code == 0);
    CHECK(help.all().find("--log-level") != std::string::npos);
    CHECK(help.all().find("--config") != std::string::npos);

    Run version = run(binary, {"--version"});
    INFO(binary << " --version: " << version.status.describe() << "\n" << version.all());
    CHECK(version.status.exited);
    CHECK(version.status.code == 0);
    CHECK(std::regex_search(version.all(), std::regex("[0-9]+\\.[0-9]+\\.[0-9]+")));
  }
  CHECK(run(server_binary(), {"--help"}).all().find("--listen-a") != std::string::npos);
  CHECK(run(client_binary(), {"--help"}).all().find("--target") != std::string::npos);
}

TEST_CASE("a config file sets options") {
  ConfigFile config("max-pending = 1\npair-timeout = \"300ms\"\n");
  Server server({"--config", config.path.string()});
  const auto start = Clock::now();
  Socket first = connect_tcp(server.port_a());
  server.wait_for_line("event=accepted", 5s);
  // max-pending = 1: the second is shed at once.
  Socket second = connect_tcp(server.port_a());
  ReadResult r2 = read_to_end(second, 3s);
  INFO("second: " << r2.describe());
  CHECK(closed_without_data(r2));
  server.wait_for_line("reason=max-pending", 2s);
  // pair-timeout = 300ms (default 10s): the first gives up waiting for a client soon.
  ReadResult r1 = read_to_end(first, 5s);
  const auto ms = ms_since(start);
  INFO("first: " << r1.describe() << " after " << ms << " ms");
  CHECK(closed_without_data(r1));
  CHECK(ms >= 250);
  CHECK(ms <= 1500);
  server.wait_for_line("reason=no-client", 2s);
}

TEST_CASE("a command-line flag overrides the config file") {
  ConfigFile config("max-pending = 1\npair-timeout = \"300ms\"\n");
  Server server({"--config", config.path.string(), "--max-pending", "2", "--pair-timeout", "10s"});
  Socket first = connect_tcp(server.port_a());
  Socket second = connect_tcp(server.port_a());
  wait_until([&] { return server.log().count("event=accepted") >= 2; }, 5s,
             "two event=accepted lines");
  Socket third = connect_tcp(server.port_a());
  ReadResult r3 = read_to_end(third, 3s);
  INFO("third: " << r3.describe());
  CHECK(closed_without_data(r3));
  server.wait_for_line("reason=max-pending", 2s);
  // --max-pending 2 won over 1, and --pair-timeout 10s over 300ms: both still wait well past 300ms.
  CHECK_FALSE(wait_readable(first, 800ms));
  CHECK_FALSE(wait_readable(second, 0ms));
  CHECK(server.log().count("reason=max-pending") == 1);
}

TEST_CASE("check-config: reads every file, says how many services and clients, exit code 0") {
  ConfigFile token(std::string(64, 'a') + "\n");
  std::filesystem::permissions(
      token.path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  ConfigFile config("listen-b = \"127.0.0.1:0\"\n[client.lan1]\ntoken-file = \"" +
                    token.path.string() +
                    "\"\n[service.ssh]\nlisten = \"127.0.0.1:0\"\nclients = [\"lan1\"]\n"
                    "[service.web]\nlisten = \"127.0.0.1:0\"\nsend-proxy = \"v1\"\n");
  Run r = run(server_binary(), {"--check-config", "--config", config.path.string()});
  INFO(r.status.describe() << "\n" << r.all());
  CHECK(r.status.exited);
  CHECK(r.status.code == 0);
  REQUIRE(r.lines.size() == 1);
  CHECK(r.lines[0] == "tunnel-server: config OK: 2 services, 1 clients");
  // The seed's flags alone: the service named default.
  Run seed = run(server_binary(), ephemeral_and({"--check-config"}));
  CHECK(seed.status.code == 0);
  CHECK(seed.all().find("config OK: 1 services, 0 clients") != std::string::npos);
}

TEST_CASE("check-config: a bad table is exit code 2 and one line naming file, line and key") {
  ConfigFile config(
      "listen-b = \"127.0.0.1:0\"\n[service.web]\nlisten = \"127.0.0.1:0\"\n"
      "clients = [\"lan9\"]\n");
  require_one_line(run(server_binary(), {"--check-config", "--config", config.path.string()}), 2,
                   {"tunnel-server: --config " + config.path.string() + ":4: ",
                    "[service.web] clients", "lan9"});
}

TEST_CASE("config file tables: a bad one stops the daemon before it listens, naming the line") {
  ConfigFile config("[service.web]\nlisten = \"127.0.0.1:0\"\nsend-proxy = \"v9\"\n");
  require_one_line(
      run(server_binary(), {"--listen-b", "127.0.0.1:0", "--config", config.path.string()}), 2,
      {config.path.string() + ":3: ", "[service.web] send-proxy", "v9"});
}

TEST_CASE("config file: an old unquoted string gets a hint, with the line") {
  ConfigFile config("pair-timeout = \"2s\"\nlisten-b = 127.0.0.1:0\n");
  require_one_line(run(server_binary(), {"--config", config.path.string()}), 2,
                   {config.path.string() + ":2: ", "double quotes"});
}
