// README "Running under systemd": each unit, pointed at the built binary, passes `systemd-analyze
// verify`, and carries the readiness, watchdog, limits, sandboxing and restart settings the design
// asks.
#include <catch2/catch.hpp>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "ops_support.hpp"
#include "support/daemons.hpp"

#ifndef TUNNEL_SOURCE_DIR
#error "TUNNEL_SOURCE_DIR must be defined by CMake"
#endif

using namespace tunnel::test;
using namespace tunnel::test::ops;
using namespace std::chrono_literals;

namespace {

std::string analyze_program() {
  const std::string analyze = find_program("systemd-analyze");
  if (analyze.empty()) {
    FAIL(
        "systemd-analyze is not on PATH: install Debian's `systemd` package (apt-get install "
        "systemd), as the README's test set-up does");
  }
  return analyze;
}

// The unit as shipped, with ExecStart's installed path replaced by `binary`.
std::string unit_for(const std::string& unit, const std::string& daemon,
                     const std::string& binary) {
  std::string text = read_file(std::string(TUNNEL_SOURCE_DIR) + "/systemd/" + unit);
  const std::string installed = "ExecStart=/usr/local/bin/" + daemon + " ";
  const size_t at = text.find(installed);
  INFO(unit << " must start " << installed << "...");
  REQUIRE(at != std::string::npos);
  text.replace(at, installed.size(), "ExecStart=" + binary + " ");
  return text;
}

// Every `Key=value` of the [Service] section, in order, repeated keys kept.
std::multimap<std::string, std::string> service_settings(const std::string& text) {
  std::multimap<std::string, std::string> settings;
  std::istringstream in(text);
  std::string section;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line[0] == '[') {
      section = line;
      continue;
    }
    const size_t eq = line.find('=');
    if (section == "[Service]" && eq != std::string::npos) {
      settings.emplace(line.substr(0, eq), line.substr(eq + 1));
    }
  }
  return settings;
}

std::vector<std::string> values(const std::multimap<std::string, std::string>& settings,
                                const std::string& key) {
  std::vector<std::string> out;
  auto [from, to] = settings.equal_range(key);
  for (auto it = from; it != to; ++it) out.push_back(it->second);
  return out;
}

// The last assignment wins in systemd; "" when the key is absent.
std::string last(const std::multimap<std::string, std::string>& settings, const std::string& key) {
  const auto all = values(settings, key);
  return all.empty() ? "" : all.back();
}

void check_unit(const std::string& unit, const std::string& daemon, const std::string& binary) {
  const std::string analyze = analyze_program();
  const std::string text = unit_for(unit, daemon, binary);
  TempDir dir;
  const std::string path = dir.file(unit);
  write_file(path, text);
  const CommandResult r = run_command({analyze, "verify", path});
  INFO("systemd-analyze verify " << path << ": " << r.status.describe() << "\n" << r.output());
  CHECK((r.status.exited && r.status.code == 0));
  for (const auto& line : r.lines) {
    INFO("verify output line: " << line);
    CHECK(line.find(unit) == std::string::npos);
  }

  const auto s = service_settings(text);
  CHECK(last(s, "Type") == "notify");
  CHECK_FALSE(last(s, "WatchdogSec").empty());
  const std::string nofile = last(s, "LimitNOFILE");
  INFO("LimitNOFILE=" << nofile);
  CHECK(std::regex_match(nofile, std::regex("[0-9]+(:[0-9]+)?|infinity")));
  if (std::regex_match(nofile, std::regex("[0-9]+.*"))) CHECK(std::stoll(nofile) > 1024);
  CHECK((last(s, "DynamicUser") == "yes" || !last(s, "User").empty()));
  CHECK(last(s, "NoNewPrivileges") == "yes");
  CHECK(last(s, "ProtectSystem") == "strict");
  const std::string home = last(s, "ProtectHome");
  CHECK((home == "yes" || home == "read-only" || home == "tmpfs"));
  CHECK(last(s, "PrivateTmp") == "yes");
  std::istringstream families(last(s, "RestrictAddressFamilies"));
  std::set<std::string> family_set;
  for (std::string f; families >> f;) family_set.insert(f);
  CHECK(family_set == std::set<std::string>{"AF_INET", "AF_INET6", "AF_UNIX"});
  // An empty CapabilityBoundingSet= drops every capability; no other assignment may add one.
  const auto caps = values(s, "CapabilityBoundingSet");
  REQUIRE_FALSE(caps.empty());
  for (const auto& c : caps) {
    INFO("CapabilityBoundingSet=" << c);
    CHECK(c.empty());
  }
  CHECK(last(s, "Restart") == "on-failure");
  CHECK(last(s, "ExecStart").find("--config /etc/tunnel/" + daemon + ".conf") != std::string::npos);
}

}  // namespace

TEST_CASE("systemd unit tunnel-server.service: verifies cleanly and is hardened") {
  check_unit("tunnel-server.service", "tunnel-server", server_binary());
}

TEST_CASE("systemd unit tunnel-client.service: verifies cleanly and is hardened") {
  check_unit("tunnel-client.service", "tunnel-client", client_binary());
}

TEST_CASE("systemd-analyze verify rejects a unit whose ExecStart binary is missing") {
  // Shows that the verification above can fail: its silence means something.
  const std::string analyze = analyze_program();
  TempDir dir;
  const std::string text =
      unit_for("tunnel-server.service", "tunnel-server", dir.file("no-such-binary"));
  const std::string path = dir.file("tunnel-server.service");
  write_file(path, text);
  const CommandResult r = run_command({analyze, "verify", path});
  INFO("systemd-analyze verify: " << r.status.describe() << "\n" << r.output());
  CHECK_FALSE((r.status.exited && r.status.code == 0));
}
