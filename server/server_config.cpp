// tunnel-server's command line and config file: flags, [service.<name>] and [client.<name>].
#include "server_config.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "tunnel/auth.hpp"
#include "tunnel/cli_common.hpp"
#include "tunnel/config_file.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/token_file.hpp"

namespace tunnel::server {
namespace {

constexpr std::string_view kNameRule = "1-64 of A-Z a-z 0-9 . _ -";

bool same_address(const HostPort& a, const HostPort& b) {
  return a.host == b.host && a.port == b.port;
}

std::optional<proxy_protocol::Version> parse_send_proxy(std::string_view text) {
  if (text == "v1") return proxy_protocol::Version::v1;
  if (text == "v2") return proxy_protocol::Version::v2;
  if (text == "off") return std::nullopt;
  throw std::invalid_argument(fmt::format("'{}' is not v1, v2 or off", text));
}

// The [client.<name>] tables: each a name and a token file, checked like --token-file.
std::vector<NamedClient> read_clients(const config::Tables& tables) {
  std::vector<NamedClient> clients;
  for (const config::Table* table : tables.of_kind("client")) {
    config::TableReader r(*table);
    if (!auth::is_name(table->name)) r.fail_table(fmt::format("a client name is {}", kNameRule));
    if (clients.size() == kMaxClients)
      r.fail_table(fmt::format("more than {} clients", kMaxClients));
    NamedClient client{table->name, {}, r.required_string("token-file")};
    try {
      client.token = cli::read_token_option(client.token_file);
    } catch (const std::exception& e) {
      r.fail_key("token-file", e.what());
    }
    r.finish();
    clients.push_back(std::move(client));
  }
  return clients;
}

// Who may log in under a name: the rule a service's `clients` list is checked against.
struct Logins {
  bool any_name;  // a top-level token-file: every name has a token
  bool no_auth;   // no token anywhere: every client is `default`
  const std::vector<NamedClient>& named;

  // Why `name` can never serve a service, or "" when it can.
  std::string refusal(const std::string& name) const {
    if (no_auth) {
      return name == kDefaultService
                 ? ""
                 : fmt::format(
                       "'{}' can never log in: without tokens every client is named "
                       "'default' (add [client.{}] with its token-file, or list only "
                       "\"default\")",
                       name, name);
    }
    if (any_name) return "";
    bool known = std::any_of(named.begin(), named.end(),
                             [&](const NamedClient& c) { return c.name == name; });
    return known ? ""
                 : fmt::format(
                       "'{}' has no token (no [client.{}] table and no top-level "
                       "token-file), so it can never log in",
                       name, name);
  }
};

ServiceConfig read_service(config::TableReader& r, const Logins& logins) {
  const config::Table& table = r.table();
  if (!protocol::is_service_name(table.name))
    r.fail_table(fmt::format("a service name is {}", kNameRule));
  ServiceConfig service;
  service.name = table.name;
  try {
    service.listen = parse_host_port(r.required_string("listen"), true);
  } catch (const config::Error&) {
    throw;
  } catch (const std::exception& e) {
    r.fail_key("listen", e.what());
  }
  if (auto clients = r.string_list("clients")) {
    if (clients->empty())
      r.fail_key("clients", "empty: no client could serve it (leave the key out for any client)");
    for (size_t i = 0; i < clients->size(); ++i) {
      const std::string& name = (*clients)[i];
      if (!auth::is_name(name))
        r.fail_key("clients", fmt::format("'{}': a client name is {}", name, kNameRule));
      if (std::find(clients->begin(), clients->begin() + static_cast<long>(i), name) !=
          clients->begin() + static_cast<long>(i))
        r.fail_key("clients", fmt::format("'{}' is listed twice", name));
      if (auto why = logins.refusal(name); !why.empty()) r.fail_key("clients", why);
    }
    service.clients = std::move(*clients);
  }
  if (auto send = r.optional_string("send-proxy")) {
    try {
      service.send_proxy = parse_send_proxy(*send);
    } catch (const std::invalid_argument& e) {
      r.fail_key("send-proxy", e.what());
    }
  }
  service.accept_proxy = r.optional_bool("accept-proxy").value_or(false);
  r.finish();
  return service;
}

// What the command line holds besides ServerConfig's own fields, and the checks across them.
struct Parser {
  CLI::App app{
      "tunnel-server: the public end of a reverse TCP tunnel. Connections accepted on port A are\n"
      "carried to the service behind the tunnel-client that is connected on port B.",
      "tunnel-server"};
  config::Tables tables;
  std::string send_proxy;
  bool accept_proxy = false;
  bool check_config = false;
  CLI::Option* listen_a = nullptr;
  CLI::Option* send_proxy_option = nullptr;
  CLI::Option* accept_proxy_option = nullptr;

  explicit Parser(ServerConfig& config);
  // Parses and checks everything: the error line, or nullopt. --help and --version are thrown
  // (CLI::ParseError with exit code 0).
  std::optional<std::string> run(const std::vector<std::string>& args, ServerConfig& config);
  void build_services(ServerConfig& config) const;
};

Parser::Parser(ServerConfig& config) {
  app.get_formatter()->column_width(36);
  listen_a = cli::add_address(
      app, "--listen-a", config.listen_a, true,
      "Address for external traffic (A) of the service named default: :port, host:port or "
      "[v6]:port (by default, unless the config file has [service.<name>] tables)");
  cli::add_address(app, "--listen-b", config.listen_b, true,
                   "Address the tunnel-client connects to (B); keep it private, see README");
  send_proxy_option =
      app.add_option("--send-proxy", send_proxy,
                     "Send a PROXY protocol header (v1 or v2) to the default service's target, "
                     "so it sees the visitor's address (off: none)")
          ->check(CLI::IsMember({"v1", "v2", "off"}))
          ->type_name("VERSION");
  accept_proxy_option = app.add_flag("--accept-proxy", accept_proxy,
                                     "Connections to the default service's port A start with a "
                                     "PROXY protocol header (a load balancer in front)");
  cli::add_duration(app, "--pair-timeout", config.pair_timeout,
                    "How long an A connection may wait for the client to pick it up",
                    cli::Zero::refused);
  cli::add_duration(app, "--probe-timeout", config.probe_timeout,
                    "How long the current client has to answer a liveness probe when another "
                    "client connects",
                    cli::Zero::refused);
  cli::add_duration(app, "--handshake-timeout", config.handshake_timeout,
                    "How long a B connection may take to send its first line", cli::Zero::refused);
  app.add_option("--max-pending", config.max_pending,
                 "A connections waiting for pairing at once, per service; more are closed at once")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 20))
      ->type_name("N");
  app.add_option("--pool-max", config.pool_max,
                 "Pooled data connections one client may keep open in advance (tunnel-client "
                 "--pool asks for its number up to this); 0 turns the pool off")
      ->capture_default_str()
      ->check(CLI::Range(size_t{0}, protocol::kMaxPoolRequest))
      ->type_name("N");
  cli::add_token_file(app, config.token,
                      "Require clients to prove they hold the token in FILE (mode 600; a name "
                      "relative to $CREDENTIALS_DIRECTORY works with systemd's LoadCredential=); "
                      "[client.<name>] tables give names their own token");
  app.add_option("--tls-cert", config.tls_cert_file,
                 "Speak TLS 1.3 on port B with this certificate (PEM; with --tls-key)")
      ->type_name("FILE");
  app.add_option("--tls-key", config.tls_key_file, "The private key of --tls-cert (PEM)")
      ->type_name("FILE");
  app.add_option("--tls-client-ca", config.tls_client_ca_file,
                 "Require client certificates that chain to this CA (PEM): mutual TLS")
      ->type_name("FILE");
  app.add_flag("--check-config", check_config,
               "Read and check the flags and every file (config, tokens, TLS), say how many "
               "services and clients, and exit (0: good, 2: the error)")
      ->configurable(false);
  cli::add_daemon_options(app, config.daemon, &tables, {"service", "client"});
}

std::optional<std::string> Parser::run(const std::vector<std::string>& args, ServerConfig& config) {
  config.args = args;
  if (auto error = cli::parse_quietly(app, args)) return error;
  if (auto error = load_tls(config)) return error;
  try {
    config.clients = read_clients(tables);
    build_services(config);
  } catch (const config::Error& e) {
    return e.what();
  }
  return std::nullopt;
}

void Parser::build_services(ServerConfig& config) const {
  const bool listen_a_given = listen_a->count() > 0;
  const auto service_tables = tables.of_kind("service");
  config.services.clear();
  if (listen_a_given || service_tables.empty()) {
    ServiceConfig service;
    service.name = kDefaultService;
    service.listen = config.listen_a;
    service.send_proxy = send_proxy.empty() ? std::nullopt : parse_send_proxy(send_proxy);
    service.accept_proxy = accept_proxy;
    config.services.push_back(std::move(service));
  } else {
    for (const CLI::Option* option : {send_proxy_option, accept_proxy_option}) {
      if (option->count() > 0)
        throw config::Error(fmt::format(
            "{}: applies to the service named default (--listen-a), and there is none: set "
            "{} in the [service.<name>] tables",
            option->get_name(), option->get_name().substr(2)));
    }
  }
  const Logins logins{!config.token.empty(), config.token.empty() && config.clients.empty(),
                      config.clients};
  for (const config::Table* table : service_tables) {
    config::TableReader r(*table);
    if (table->name == kDefaultService && listen_a_given)
      r.fail_table("the service named default is already --listen-a's (listen-a); drop one");
    if (config.services.size() == protocol::kMaxServices)
      r.fail_table(fmt::format("more than {} services", protocol::kMaxServices));
    ServiceConfig service = read_service(r, logins);
    if (service.listen.port != 0) {
      for (const ServiceConfig& other : config.services) {
        if (same_address(other.listen, service.listen))
          r.fail_key("listen",
                     fmt::format("{} is already the address of {}", service.listen.to_string(),
                                 other.name == kDefaultService && listen_a_given
                                     ? std::string("--listen-a")
                                     : "[service." + other.name + "]"));
      }
      if (same_address(service.listen, config.listen_b))
        r.fail_key("listen", fmt::format("{} is already --listen-b", service.listen.to_string()));
    }
    config.services.push_back(std::move(service));
  }
}

}  // namespace

int parse_arguments(int argc, char** argv, ServerConfig& config) {
  Parser parser(config);
  std::optional<std::string> error;
  try {
    error = parser.run(std::vector<std::string>(argv + 1, argv + argc), config);
  } catch (const CLI::ParseError& e) {
    return parser.app.exit(e);  // --help, --version
  }
  if (error) {
    fmt::print(stderr, "tunnel-server: {}\n", *error);
    return 2;
  }
  if (parser.check_config) {
    fmt::print("tunnel-server: config OK: {} services, {} clients\n", config.services.size(),
               config.clients.size());
    return 0;
  }
  return -1;
}

std::optional<ServerConfig> reparse_arguments(const std::vector<std::string>& args,
                                              std::string& error) {
  ServerConfig config;
  Parser parser(config);
  try {
    if (auto e = parser.run(args, config)) {
      error = *e;
      return std::nullopt;
    }
  } catch (const CLI::ParseError&) {
    error = "--help or --version: nothing to reload";
    return std::nullopt;
  }
  return config;
}

std::optional<std::string> load_tls(ServerConfig& config) {
  auto refuse = [](std::string_view option, std::string_view what) {
    return fmt::format("{}: {}", option, what);
  };
  if (config.tls_cert_file.empty() != config.tls_key_file.empty())
    return refuse(config.tls_cert_file.empty() ? "--tls-key" : "--tls-cert",
                  "--tls-cert and --tls-key go together");
  if (config.tls_cert_file.empty()) {
    if (!config.tls_client_ca_file.empty())
      return refuse("--tls-client-ca", "needs --tls-cert and --tls-key (TLS on port B)");
    return std::nullopt;
  }
  try {
    // Relative names are looked up in $CREDENTIALS_DIRECTORY first, like --token-file.
    config.tls = std::make_shared<tls::ServerContext>(tls::ServerContext::load(
        resolve_token_path(config.tls_cert_file), resolve_token_path(config.tls_key_file),
        config.tls_client_ca_file.empty() ? "" : resolve_token_path(config.tls_client_ca_file)));
  } catch (const std::exception& e) {
    return refuse("--tls-cert", e.what());
  }
  return std::nullopt;
}

}  // namespace tunnel::server
