// tunnel-server's config (server_config.hpp): the seed's flags as the service named default, the
// [service.<name>] and [client.<name>] tables, and each refusal as one line naming the file, the
// line and the key. Parsed the way a reload does (reparse_arguments), which prints nothing.
#include "server_config.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>

using namespace tunnel;
using namespace tunnel::server;

namespace {

// A directory of files for one test, removed at the end.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("tunnel-server-config-test-" + std::to_string(::getpid()) + "-" +
            std::to_string(counter++));
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }

  std::string write(const std::string& name, const std::string& text, mode_t mode = 0644) const {
    const auto file = path / name;
    std::ofstream(file) << text;
    ::chmod(file.c_str(), mode);
    return file.string();
  }
  // A good token file (mode 600, 256 bits of hex).
  std::string token(const std::string& name) const {
    return write(name, std::string(64, 'a') + "\n", 0600);
  }
};

struct Parsed {
  std::optional<ServerConfig> config;
  std::string error;
};

Parsed parse(std::vector<std::string> args) {
  Parsed p;
  p.config = reparse_arguments(args, p.error);
  INFO("error: " << p.error);
  CHECK((p.config.has_value() == p.error.empty()));
  return p;
}

Parsed parse_file(const std::string& path, std::vector<std::string> more = {}) {
  more.insert(more.begin(), {"--config", path});
  return parse(more);
}

// Parsing `text` as the config file fails at `line` with each of `mentions`.
void require_refused(const TempDir& dir, const std::string& text, int line,
                     const std::vector<std::string>& mentions, std::vector<std::string> more = {}) {
  const std::string file = dir.write("server.conf", text);
  Parsed p = parse_file(file, std::move(more));
  INFO("config:\n" << text << "error: " << p.error);
  REQUIRE_FALSE(p.config);
  CHECK(p.error.find('\n') == std::string::npos);
  CHECK(p.error.starts_with("--config " + file + ":" + std::to_string(line) + ": "));
  for (const auto& m : mentions) {
    INFO("should mention: " << m);
    CHECK(p.error.find(m) != std::string::npos);
  }
}

const ServiceConfig* find(const ServerConfig& config, std::string_view name) {
  for (const auto& s : config.services)
    if (s.name == name) return &s;
  return nullptr;
}

}  // namespace

TEST_CASE("server config: without a config file, the service named default on :18080") {
  Parsed p = parse({});
  REQUIRE(p.config);
  REQUIRE(p.config->services.size() == 1);
  const ServiceConfig& s = p.config->services[0];
  CHECK(s.name == kDefaultService);
  CHECK(s.listen.host.empty());
  CHECK(s.listen.port == 18080);
  CHECK(s.clients.empty());
  CHECK_FALSE(s.send_proxy);
  CHECK_FALSE(s.accept_proxy);
  CHECK(p.config->clients.empty());
  CHECK(p.config->args.empty());
}

TEST_CASE("server config: --listen-a, --send-proxy and --accept-proxy make the default service") {
  const std::vector<std::string> args = {"--listen-a", "127.0.0.1:0", "--send-proxy", "v2",
                                         "--accept-proxy"};
  Parsed p = parse(args);
  REQUIRE(p.config);
  CHECK(p.config->args == args);
  REQUIRE(p.config->services.size() == 1);
  const ServiceConfig& s = p.config->services[0];
  CHECK(s.listen.to_string() == "127.0.0.1:0");
  CHECK(s.send_proxy == proxy_protocol::Version::v2);
  CHECK(s.accept_proxy);
  CHECK(parse({"--send-proxy", "v1"}).config->services[0].send_proxy ==
        proxy_protocol::Version::v1);
  CHECK_FALSE(parse({"--send-proxy", "off"}).config->services[0].send_proxy);
  Parsed bad = parse({"--send-proxy", "v3"});
  CHECK(bad.error.find("--send-proxy") != std::string::npos);
}

TEST_CASE("server config: [service.*] tables, with and without the default service") {
  TempDir dir;
  const std::string tables =
      "[service.ssh]\nlisten = \":2222\"\n"
      "[service.web]\nlisten = \"127.0.0.1:8080\"\nsend-proxy = \"v1\"\naccept-proxy = true\n";
  SECTION("tables only: no default service") {
    Parsed p = parse_file(dir.write("a.conf", tables));
    REQUIRE(p.config);
    REQUIRE(p.config->services.size() == 2);
    CHECK(p.config->services[0].name == "ssh");
    CHECK(p.config->services[0].listen.port == 2222);
    const ServiceConfig* web = find(*p.config, "web");
    REQUIRE(web);
    CHECK(web->listen.to_string() == "127.0.0.1:8080");
    CHECK(web->send_proxy == proxy_protocol::Version::v1);
    CHECK(web->accept_proxy);
    CHECK(web->clients.empty());
  }
  SECTION("--listen-a on the command line adds the default service") {
    Parsed p = parse_file(dir.write("a.conf", tables), {"--listen-a", ":9000"});
    REQUIRE(p.config);
    REQUIRE(p.config->services.size() == 3);
    CHECK(p.config->services[0].name == kDefaultService);
    CHECK(p.config->services[0].listen.port == 9000);
  }
  SECTION("listen-a in the file adds it too") {
    Parsed p = parse_file(dir.write("a.conf", "listen-a = \":9000\"\n" + tables));
    REQUIRE(p.config);
    REQUIRE(find(*p.config, kDefaultService));
    CHECK(find(*p.config, kDefaultService)->listen.port == 9000);
  }
  SECTION("[service.default] is a service like the others") {
    Parsed p = parse_file(dir.write("a.conf", "[service.default]\nlisten = \":9001\"\n"));
    REQUIRE(p.config);
    REQUIRE(p.config->services.size() == 1);
    CHECK(p.config->services[0].listen.port == 9001);
  }
  SECTION("[service.default] together with --listen-a is refused") {
    require_refused(dir, "[service.default]\nlisten = \":9001\"\n", 1,
                    {"[service.default]", "--listen-a"}, {"--listen-a", ":9000"});
  }
  SECTION("--send-proxy and --accept-proxy need the default service") {
    for (const std::vector<std::string>& flag :
         {std::vector<std::string>{"--send-proxy", "v1"}, {"--accept-proxy"}}) {
      Parsed p = parse_file(dir.write("a.conf", tables), flag);
      REQUIRE_FALSE(p.config);
      CHECK(p.error.starts_with(flag[0] + ": "));
      CHECK(p.error.find("default") != std::string::npos);
    }
  }
}

TEST_CASE("server config: each bad service is refused with its line and key") {
  TempDir dir;
  SECTION("missing listen") {
    require_refused(dir, "[service.web]\nclients = [\"default\"]\n", 1,
                    {"[service.web]", "missing key 'listen'"});
  }
  SECTION("bad listen address") {
    require_refused(dir, "[service.web]\nlisten = \":99999\"\n", 2,
                    {"[service.web] listen", "99999"});
  }
  SECTION("wrong types") {
    require_refused(dir, "[service.web]\nlisten = 80\n", 2, {"[service.web] listen", "string"});
    require_refused(dir, "[service.web]\nlisten = \":80\"\naccept-proxy = \"yes\"\n", 3,
                    {"[service.web] accept-proxy", "true or false"});
    require_refused(dir, "[service.web]\nlisten = \":80\"\nclients = \"default\"\n", 3,
                    {"[service.web] clients", "array of strings"});
  }
  SECTION("bad send-proxy") {
    require_refused(dir, "[service.web]\nlisten = \":80\"\nsend-proxy = \"v3\"\n", 3,
                    {"[service.web] send-proxy", "'v3'", "v1, v2 or off"});
  }
  SECTION("unknown key") {
    require_refused(dir, "[service.web]\nlisten = \":80\"\nlisen = \":81\"\n", 3,
                    {"unknown key 'lisen' in [service.web]"});
  }
  SECTION("bad service name") {
    require_refused(dir, "[service.\"bad name\"]\nlisten = \":80\"\n", 1,
                    {"[service.bad name]", "1-64 of"});
    require_refused(dir, "[service." + std::string(65, 'x') + "]\nlisten = \":80\"\n", 1,
                    {"1-64 of"});
  }
  SECTION("two services on one address; port 0 may repeat") {
    require_refused(dir, "[service.a]\nlisten = \":80\"\n[service.b]\nlisten = \":80\"\n", 4,
                    {"[service.b] listen", ":80 is already the address of [service.a]"});
    require_refused(dir, "[service.b]\nlisten = \":80\"\n", 2, {"--listen-a"},
                    {"--listen-a", ":80"});
    require_refused(dir, "[service.b]\nlisten = \"127.0.0.1:19090\"\n", 2, {"--listen-b"},
                    {"--listen-b", "127.0.0.1:19090"});
    Parsed p = parse_file(dir.write("a.conf",
                                    "[service.a]\nlisten = \"127.0.0.1:0\"\n"
                                    "[service.b]\nlisten = \"127.0.0.1:0\"\n"),
                          {"--listen-a", "127.0.0.1:0"});
    REQUIRE(p.config);
    CHECK(p.config->services.size() == 3);
  }
}

TEST_CASE("server config: a service's clients must be able to log in") {
  TempDir dir;
  const std::string lan1 = dir.token("lan1.token");
  const std::string clients = "[client.lan1]\ntoken-file = \"" + lan1 + "\"\n";
  SECTION("a named client is accepted, an unknown one has no token") {
    Parsed p = parse_file(dir.write("a.conf", clients + "[service.web]\nlisten = \":80\"\n"
                                                        "clients = [\"lan1\"]\n"));
    REQUIRE(p.config);
    REQUIRE(p.config->clients.size() == 1);
    CHECK(p.config->clients[0].name == "lan1");
    CHECK(p.config->clients[0].token == std::string(64, 'a'));
    CHECK(p.config->clients[0].token_file == lan1);
    CHECK(find(*p.config, "web")->clients == std::vector<std::string>{"lan1"});
    require_refused(dir,
                    clients + "[service.web]\nlisten = \":80\"\nclients = [\"lan1\", \"lan2\"]\n",
                    5, {"[service.web] clients", "'lan2' has no token", "never log in"});
  }
  SECTION("a top-level token-file covers every name") {
    const std::string shared = dir.token("shared.token");
    Parsed p = parse_file(
        dir.write("a.conf", clients + "[service.web]\nlisten = \":80\"\nclients = [\"lan2\"]\n"),
        {"--token-file", shared});
    REQUIRE(p.config);
    CHECK(find(*p.config, "web")->clients == std::vector<std::string>{"lan2"});
  }
  SECTION("without any token, every client is default") {
    Parsed p = parse_file(
        dir.write("a.conf", "[service.web]\nlisten = \":80\"\nclients = [\"default\"]\n"));
    REQUIRE(p.config);
    require_refused(dir, "[service.web]\nlisten = \":80\"\nclients = [\"lan1\"]\n", 3,
                    {"[service.web] clients", "'lan1'", "without tokens every client is named"});
  }
  SECTION("a list naming a client twice, an empty list, a bad name") {
    require_refused(dir,
                    clients + "[service.web]\nlisten = \":80\"\nclients = [\"lan1\", \"lan1\"]\n",
                    5, {"[service.web] clients", "'lan1' is listed twice"});
    require_refused(dir, clients + "[service.web]\nlisten = \":80\"\nclients = []\n", 5,
                    {"[service.web] clients", "empty"});
    require_refused(dir, clients + "[service.web]\nlisten = \":80\"\nclients = [\"a b\"]\n", 5,
                    {"[service.web] clients", "'a b'", "1-64 of"});
  }
}

TEST_CASE("server config: named clients' token files are checked like --token-file") {
  TempDir dir;
  SECTION("missing key") {
    require_refused(dir, "[client.lan1]\n", 1, {"[client.lan1]", "missing key 'token-file'"});
  }
  SECTION("missing file") {
    const std::string missing = (dir.path / "none.token").string();
    require_refused(dir, "[client.lan1]\ntoken-file = \"" + missing + "\"\n", 2,
                    {"[client.lan1] token-file", missing});
  }
  SECTION("readable by others") {
    const std::string open = dir.write("open.token", std::string(64, 'a'), 0644);
    require_refused(dir, "[client.lan1]\ntoken-file = \"" + open + "\"\n", 2,
                    {"[client.lan1] token-file", "600"});
  }
  SECTION("a relative name gets the $CREDENTIALS_DIRECTORY hint") {
    require_refused(dir, "[client.lan1]\ntoken-file = \"no-such.token\"\n", 2,
                    {"[client.lan1] token-file", "CREDENTIALS_DIRECTORY"});
  }
  SECTION("bad client name, unknown key") {
    const std::string t = dir.token("t.token");
    require_refused(dir, "[client.\"a/b\"]\ntoken-file = \"" + t + "\"\n", 1,
                    {"[client.a/b]", "1-64 of"});
    require_refused(dir, "[client.lan1]\ntoken-file = \"" + t + "\"\ntoken = \"x\"\n", 3,
                    {"unknown key 'token' in [client.lan1]"});
  }
}

TEST_CASE("server config: at most 2048 services and 1024 clients") {
  TempDir dir;
  auto services = [](int n) {
    std::string text;
    for (int i = 0; i < n; ++i)
      text += "[service.s" + std::to_string(i) +
              "]\nlisten = \"127.0.0.1:" + std::to_string(20000 + i) + "\"\n";
    return text;
  };
  SECTION("2048 services are accepted, quickly") {
    const std::string file = dir.write("a.conf", services(2048));
    const auto start = std::chrono::steady_clock::now();
    Parsed p = parse_file(file);
    const auto took = std::chrono::steady_clock::now() - start;
    REQUIRE(p.config);
    CHECK(p.config->services.size() == 2048);
    CHECK(took < std::chrono::seconds(3));
  }
  SECTION("the 2049th is refused, naming the bound") {
    require_refused(dir, services(2049), 2 * 2048 + 1, {"[service.s2048]", "more than 2048"});
    require_refused(dir, services(2048), 2 * 2047 + 1, {"[service.s2047]", "more than 2048"},
                    {"--listen-a", ":1"});
  }
  SECTION("the 1025th client is refused, naming the bound") {
    const std::string t = dir.token("t.token");
    std::string text;
    for (int i = 0; i < 1025; ++i)
      text += "[client.c" + std::to_string(i) + "]\ntoken-file = \"" + t + "\"\n";
    require_refused(dir, text, 2 * 1024 + 1, {"[client.c1024]", "more than 1024 clients"});
  }
}

TEST_CASE("server config: TLS and token errors come back as the line, not printed") {
  Parsed p = parse({"--tls-cert", "/nonexistent/server.crt"});
  CHECK(p.error == "--tls-cert: --tls-cert and --tls-key go together");
  Parsed t = parse({"--token-file", "/nonexistent/t.token"});
  CHECK(t.error.starts_with("--token-file"));
  Parsed c = parse({"--config", "/nonexistent/x.conf"});
  CHECK(c.error.find("/nonexistent/x.conf") != std::string::npos);
}

TEST_CASE(
    "server config: the examples in systemd/ parse, token files from $CREDENTIALS_DIRECTORY") {
  TempDir credentials;
  for (const char* name : {"tunnel.token", "lan1.token", "lan2.token"}) credentials.token(name);
  ::setenv("CREDENTIALS_DIRECTORY", credentials.path.c_str(), 1);
  const std::string systemd = std::string(TUNNEL_SOURCE_DIR) + "/systemd/";
  Parsed single = parse_file(systemd + "tunnel-server.conf");
  Parsed multi = parse_file(systemd + "tunnel-server-multi.conf");
  ::unsetenv("CREDENTIALS_DIRECTORY");

  REQUIRE(single.config);
  REQUIRE(single.config->services.size() == 1);
  CHECK(single.config->services[0].name == kDefaultService);
  CHECK(single.config->services[0].listen.port == 18080);
  CHECK_FALSE(single.config->token.empty());

  REQUIRE(multi.config);
  REQUIRE(multi.config->services.size() == 3);
  REQUIRE(multi.config->clients.size() == 2);
  CHECK(find(*multi.config, "ssh")->clients == std::vector<std::string>{"lan1"});
  const ServiceConfig* web = find(*multi.config, "web");
  CHECK(web->clients == std::vector<std::string>{"lan1", "lan2"});
  CHECK(web->send_proxy == proxy_protocol::Version::v1);
  CHECK(find(*multi.config, "db")->clients == std::vector<std::string>{"lan2"});
}
