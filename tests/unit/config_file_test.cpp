// The TOML --config file (config_file.hpp): flags reach CLI11 as before (flags on the command line
// win), tables are kept as data, and every refusal is one line with the file, the line and the key.
#include "tunnel/config_file.hpp"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "tunnel/cli_common.hpp"

using namespace tunnel;

namespace {

// A config file in the temporary directory, removed at the end of the test.
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& text) {
    static int counter = 0;
    path = (std::filesystem::temp_directory_path() /
            ("tunnel-config-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) +
             ".conf"))
               .string();
    std::ofstream(path) << text;
  }
  ~TempFile() { std::filesystem::remove(path); }
};

// A daemon-like command line: the shared options plus a few of each kind.
struct Daemon {
  CLI::App app{"test daemon", "testd"};
  DaemonOptions options;
  std::string name = "unset";
  int count = 0;
  bool flag = false;
  std::vector<std::string> many;
  config::Tables tables;

  explicit Daemon(std::vector<std::string> kinds = {"service", "client"}) {
    app.add_option("--name", name);
    app.add_option("--count", count);
    app.add_flag("--flag", flag);
    app.add_option("--many", many);
    cli::add_daemon_options(app, options, &tables, std::move(kinds));
  }

  // The error line, or "" when the parse went through.
  std::string parse(std::vector<std::string> args) {
    return cli::parse_quietly(app, args).value_or("");
  }
  std::string parse_file(const TempFile& file, std::vector<std::string> more = {}) {
    more.insert(more.begin(), {"--config", file.path});
    return parse(more);
  }
};

// The error of parsing `text` names the file and `line`, and says each of `mentions`.
void require_refused(const std::string& text, int line, const std::vector<std::string>& mentions,
                     std::vector<std::string> kinds = {"service", "client"}) {
  TempFile file(text);
  Daemon d(std::move(kinds));
  const std::string error = d.parse_file(file);
  INFO("file:\n" << text << "\nerror: " << error);
  CHECK(error.find('\n') == std::string::npos);
  CHECK(error.starts_with("--config " + file.path + ":" + std::to_string(line) + ": "));
  for (const auto& m : mentions) {
    INFO("should mention: " << m);
    CHECK(error.find(m) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("config file: top-level keys set flags of every type") {
  TempFile file(
      "name = \"from-file\"\ncount = 7\nflag = true\nmany = [\"a\", \"b\", \"c\"]\n"
      "drain-timeout = \"3s\"\n");
  Daemon d;
  REQUIRE(d.parse_file(file).empty());
  CHECK(d.name == "from-file");
  CHECK(d.count == 7);
  CHECK(d.flag);
  CHECK(d.many == std::vector<std::string>{"a", "b", "c"});
  CHECK(d.options.drain_timeout == std::chrono::seconds(3));
  CHECK(d.tables.file == file.path);
  CHECK(d.tables.tables.empty());
}

TEST_CASE("config file: a flag on the command line wins over the file") {
  TempFile file("name = \"from-file\"\ncount = 7\nflag = false\n");
  Daemon d;
  REQUIRE(d.parse_file(file, {"--name", "from-flag", "--flag"}).empty());
  CHECK(d.name == "from-flag");
  CHECK(d.count == 7);
  CHECK(d.flag);
}

TEST_CASE("config file: tables of accepted kinds are kept with their lines, in file order") {
  TempFile file(
      "count = 1\n"
      "\n"
      "[service.web]\n"
      "listen = \":8080\"\n"
      "clients = [\"lan1\", \"lan2\"]\n"
      "accept-proxy = true\n"
      "\n"
      "[client.lan1]\n"
      "token-file = \"lan1.token\"\n"
      "[service.db]\n"
      "port = 5432\n");
  Daemon d;
  REQUIRE(d.parse_file(file).empty());
  CHECK(d.count == 1);
  REQUIRE(d.tables.tables.size() == 3);
  const config::Table& web = d.tables.tables[0];
  CHECK(web.file == file.path);
  CHECK(web.header() == "[service.web]");
  CHECK(web.line == 3);
  REQUIRE(web.keys.size() == 3);
  CHECK(web.keys[0].first == "listen");
  CHECK(std::get<std::string>(web.keys[0].second.data) == ":8080");
  CHECK(web.keys[0].second.line == 4);
  CHECK(std::get<std::vector<std::string>>(web.keys[1].second.data) ==
        std::vector<std::string>{"lan1", "lan2"});
  CHECK(std::get<bool>(web.keys[2].second.data));
  CHECK(web.keys[2].second.line == 6);
  CHECK(d.tables.tables[1].header() == "[client.lan1]");
  CHECK(d.tables.tables[1].line == 8);
  CHECK(d.tables.tables[2].name == "db");
  CHECK(std::get<std::int64_t>(d.tables.tables[2].keys[0].second.data) == 5432);

  auto services = d.tables.of_kind("service");
  REQUIRE(services.size() == 2);
  CHECK(services[0]->name == "web");
  CHECK(services[1]->name == "db");
  CHECK(d.tables.of_kind("client").size() == 1);
}

TEST_CASE("config file: unknown keys, other tables and bad syntax are refused with file and line") {
  SECTION("an unknown top-level key") {
    require_refused("count = 1\nno-such-key = 1\n", 2, {"unknown key 'no-such-key'"});
  }
  SECTION("a table of a kind the daemon does not take") {
    require_refused("count = 1\n[server.x]\nlisten = \":1\"\n", 2,
                    {"[server]", "unknown table", "[service.<name>]", "[client.<name>]"});
    require_refused("[client.lan1]\ntoken-file = \"t\"\n", 1, {"[client]", "unknown table"},
                    {"service"});
    require_refused("[service.web]\n", 1, {"[service]", "no table is accepted"}, {});
  }
  SECTION("a plain value where a named table should be") {
    require_refused("[service]\nweb = 1\n", 2, {"service", "expected a table [service.web]"});
  }
  SECTION("a nested table") {
    require_refused("[service.web]\nlisten = \":1\"\n[service.web.more]\nx = 1\n", 3,
                    {"[service.web] more", "nested tables"});
  }
  SECTION("an array of tables") {
    require_refused("count = 1\n[[service]]\nlisten = \":1\"\n", 2, {"[[service]]"});
  }
  SECTION("a value of a type tables do not hold") {
    require_refused("[service.web]\nweight = 1.5\n", 2, {"[service.web] weight", "expected"});
    require_refused("[service.web]\nclients = [1, 2]\n", 2, {"[service.web] clients"});
  }
  SECTION("a top-level value that is no flag text") {
    require_refused("count = 1\nname = 1.5\n", 2, {"name", "expected"});
    require_refused("many = [[\"a\"]]\n", 1, {"many", "expected"});
  }
  SECTION("bad TOML") {
    require_refused("count = 1\n[service.web\n", 2, {"table header"});
    require_refused("count = 1\ncount = 2\n", 2, {"count"});
  }
  SECTION("an unquoted string, which the old format took, gets a hint") {
    require_refused("count = 1\nname = some-name\n", 2, {"double quotes"});
  }
}

TEST_CASE("config file: a value's own check names the key, and its line when the file gave it") {
  TempFile file("count = 1\ndrain-timeout = \"soon\"\n");
  Daemon d;
  const std::string error = d.parse_file(file);
  CHECK(error.starts_with("--config " + file.path + ":2: --drain-timeout: "));
  CHECK(error.find("soon") != std::string::npos);
  // The command line's bad value is the command line's: no file, no line.
  Daemon again;
  const std::string flag_error = again.parse_file(file, {"--drain-timeout", "later"});
  CHECK(flag_error.starts_with("--drain-timeout: "));
  CHECK(flag_error.find("later") != std::string::npos);
}

TEST_CASE("config file: a flag is true or false, not a count") {
  require_refused("count = 1\nflag = 3\n", 2, {"flag", "expected true or false"});
  TempFile file("flag = false\n");
  Daemon d;
  REQUIRE(d.parse_file(file).empty());
  CHECK_FALSE(d.flag);
}

TEST_CASE("config file: a missing file names --config and the file") {
  Daemon d;
  const std::string error = d.parse({"--config", "/nonexistent-dir/x.conf"});
  CHECK(error.find("--config") != std::string::npos);
  CHECK(error.find("/nonexistent-dir/x.conf") != std::string::npos);
}

TEST_CASE("config file: without --config there are no tables") {
  Daemon d;
  REQUIRE(d.parse({"--name", "x"}).empty());
  CHECK(d.tables.file.empty());
  CHECK(d.tables.tables.empty());
}

TEST_CASE("TableReader: typed keys, and each refusal names file, line, table and key") {
  TempFile file(
      "[service.web]\n"
      "listen = \":8080\"\n"
      "clients = [\"a\"]\n"
      "accept-proxy = true\n"
      "weight = 3\n"
      "typo = \"x\"\n");
  Daemon d;
  REQUIRE(d.parse_file(file).empty());
  REQUIRE(d.tables.tables.size() == 1);
  const config::Table& web = d.tables.tables[0];
  const std::string at = "--config " + file.path + ":";

  SECTION("values of the right type") {
    config::TableReader r(web);
    CHECK(r.required_string("listen") == ":8080");
    CHECK(r.string_list("clients") == std::vector<std::string>{"a"});
    CHECK(r.optional_bool("accept-proxy") == true);
    CHECK(r.optional_integer("weight") == 3);
    CHECK(r.optional_string("absent") == std::nullopt);
    CHECK(r.string_list("absent") == std::nullopt);
    CHECK(r.optional_bool("absent") == std::nullopt);
    CHECK(r.line_of("weight") == 5);
    CHECK_THROWS_WITH(r.finish(), at + "6: unknown key 'typo' in [service.web]");
    CHECK(r.optional_string("typo") == "x");
    CHECK_NOTHROW(r.finish());
  }
  SECTION("a missing required key names the table's line") {
    config::TableReader r(web);
    CHECK_THROWS_WITH(r.required_string("target"), at + "1: [service.web]: missing key 'target'");
  }
  SECTION("a wrong type names the key's line") {
    config::TableReader r(web);
    CHECK_THROWS_WITH(r.required_string("weight"),
                      at + "5: [service.web] weight: expected a string in double quotes");
    CHECK_THROWS_WITH(r.optional_bool("listen"),
                      at + "2: [service.web] listen: expected true or false");
    CHECK_THROWS_WITH(r.optional_integer("listen"),
                      at + "2: [service.web] listen: expected an integer");
    CHECK_THROWS_WITH(r.string_list("listen"),
                      Catch::Contains(at + "2: [service.web] listen: "
                                           "expected an array of strings"));
  }
  SECTION("the daemon's own refusals") {
    config::TableReader r(web);
    CHECK_THROWS_AS(r.fail_key("listen", "port 99999"), config::Error);
    CHECK_THROWS_WITH(r.fail_key("listen", "bad port"), at + "2: [service.web] listen: bad port");
    CHECK_THROWS_WITH(r.fail_table("too many"), at + "1: [service.web]: too many");
  }
}

TEST_CASE("config file: the example files in systemd/ are valid TOML of known keys") {
  // The keys each daemon takes besides the shared ones (a typo in an example fails here; the
  // values themselves are checked by the daemons' --check-config tests).
  const std::vector<std::pair<std::string, std::vector<std::string>>> examples = {
      {"tunnel-server.conf",
       {"listen-a", "listen-b", "pair-timeout", "probe-timeout", "handshake-timeout", "max-pending",
        "token-file", "tls-cert", "tls-key", "tls-client-ca", "send-proxy", "accept-proxy"}},
      {"tunnel-server-multi.conf",
       {"listen-a", "listen-b", "pair-timeout", "probe-timeout", "handshake-timeout", "max-pending",
        "token-file", "tls-cert", "tls-key", "tls-client-ca", "send-proxy", "accept-proxy"}},
      {"tunnel-client.conf",
       {"server", "target", "token-file", "name", "tls", "tls-pin", "tls-ca", "tls-cert", "tls-key",
        "dial-timeout", "reconnect-max"}},
  };
  for (const auto& [example, keys] : examples) {
    CLI::App app{"example", "example"};
    std::vector<std::string> sink(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) app.add_option("--" + keys[i], sink[i]);
    DaemonOptions options;
    config::Tables tables;
    cli::add_daemon_options(app, options, &tables, {"service", "client"});
    const std::string path = std::string(TUNNEL_SOURCE_DIR) + "/systemd/" + example;
    INFO(path);
    REQUIRE(std::filesystem::exists(path));
    CHECK(cli::parse_quietly(app, {"--config", path}).value_or("") == "");
  }
}
