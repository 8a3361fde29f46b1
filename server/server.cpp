// How the server's pieces meet: each service's A connections go to the connection table, B
// connections to the gate, then to Sessions (control) or to the table's claim (data).
#include "server.hpp"

#include <fmt/format.h>
#include <netinet/in.h>

#include <ctime>
#include <stdexcept>

#include "tunnel/socket.hpp"

namespace tunnel::server {
namespace {

std::unique_ptr<Listener> bind_listener(EventLoop& loop, const std::string& what,
                                        std::string_view side, const HostPort& where,
                                        Listener::OnAccept on_accept) {
  try {
    return std::make_unique<Listener>(loop, std::string(side), resolve(where, true),
                                      std::move(on_accept));
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("{}: {}", what, e.what()));
  }
}

bool is_loopback(const SocketAddress& address) {
  if (address.family() == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(&address.storage);
    return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
  }
  auto* in6 = reinterpret_cast<const sockaddr_in6*>(&address.storage);
  return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
}

// How an option or a service is named in an error: the seed's flag for its one service.
std::string what_binds(const ServiceConfig& service) {
  if (service.name == kDefaultService) return "--listen-a";
  return fmt::format("service {}: listen", service.name);
}

}  // namespace

Tokens tokens_of(const ServerConfig& config) {
  Tokens tokens;
  tokens.fallback = config.token;
  for (const auto& client : config.clients) tokens.named.emplace(client.name, client.token);
  return tokens;
}

Server::Server(EventLoop& loop, const ServerConfig& config)
    : loop_(loop),
      config_(config),
      tokens_(tokens_of(config)),
      table_(loop, config.pair_timeout, config.max_pending,
             ConnectionTable::Events{
                 [this](FailureReason reason) { ++counters_.failed[static_cast<size_t>(reason)]; },
                 [this](const RelayOutcome& outcome) {
                   counters_.bytes_to_client += outcome.bytes_to_service;
                   counters_.bytes_to_external += outcome.bytes_to_visitor;
                 },
                 [this](uint64_t early_bytes) {
                   ++counters_.paired;
                   counters_.bytes_to_client += early_bytes;
                 }},
             config.probe_timeout),
      sessions_(loop, config.daemon.heartbeat, config.probe_timeout, services_, table_),
      gate_(loop, config.handshake_timeout, tokens_, config.tls, sessions_, table_, counters_,
            config.pool_max),
      start_time_(static_cast<double>(std::time(nullptr))),
      summary_timer_(loop, kSummaryInterval, [this] { summary_.log(counters(), gauges()); }) {
  for (const auto& service_config : config_.services) {
    auto service = std::make_shared<Service>(service_config);
    service->listener = bind_service(service_config);
    services_.emplace(service->name(), std::move(service));
  }
  listen_b_ = bind_listener(loop_, "--listen-b", "b", config_.listen_b,
                            [this](Fd fd) { gate_.admit(std::move(fd)); });
  TLOG_INFO("event=listening side=b addr={}", listen_b_->address().to_string());
  if (config_.tls)
    for (const auto& warning : config_.tls->warnings())
      TLOG_WARN("event=tls-certificate detail=\"{}\"", log::escaped(warning));
  warn_if_insecure();
  metrics_ = MetricsEndpoint::start_if_asked(loop_, config_.daemon.metrics_listen, [this] {
    return render_metrics(counters(), gauges(), services_, sessions_, config_.clients);
  });
  summary_timer_.start();
  TLOG_INFO(
      "event=ready pair_timeout={} max_pending={} services={} clients={} auth={} tls={} "
      "pool_max={}",
      format_duration(config_.pair_timeout), config_.max_pending, services_.size(),
      config_.clients.size(), tokens_.required() ? "token" : "none",
      !config_.tls                                 ? "off"
      : config_.tls->requires_client_certificate() ? "mtls"
                                                   : "on",
      config_.pool_max);
}

Server::~Server() = default;

std::unique_ptr<Listener> Server::bind_service(const ServiceConfig& config) {
  // The listener holds the service by name: a reload may replace the Service's config, never
  // the Service while its listener runs.
  auto listener = bind_listener(loop_, what_binds(config), "a", config.listen,
                                [this, name = config.name](Fd fd) {
                                  auto it = services_.find(name);
                                  if (it != services_.end())
                                    admit_external(it->second, std::move(fd));
                                });
  TLOG_INFO("event=listening side=a addr={} service={}", listener->address().to_string(),
            config.name);
  return listener;
}

void Server::admit_external(const std::shared_ptr<Service>& service, Fd fd) {
  ++counters_.accepted;
  ++service->counters.accepted;
  if (service->config().accept_proxy) return read_proxy_header(service, std::move(fd));
  table_.admit(std::move(fd), service);
}

void Server::read_proxy_header(const std::shared_ptr<Service>& service, Fd fd) {
  // Connections still sending their header count toward the pending bound like waiting ones.
  if (service->reading_header + service->pending >= config_.max_pending) {
    set_linger_reset(fd.get());
    ++counters_.failed[static_cast<size_t>(FailureReason::max_pending)];
    ++service->counters.failed[static_cast<size_t>(FailureReason::max_pending)];
    uint64_t suppressed = 0;
    if (shed_log_.allow(suppressed))
      TLOG_WARN("event=conn-failed reason=max-pending service={} pending={} suppressed={}",
                service->name(), service->reading_header + service->pending, suppressed);
    return;
  }
  ++service->reading_header;
  uint64_t key = ++proxy_readers_started_;
  proxy_readers_.emplace(
      key,
      std::make_unique<ProxyHeaderReader>(
          loop_, std::move(fd), config_.handshake_timeout,
          [this, key, service](Fd connection, const ProxiedAddresses& addresses) {
            on_proxy_header(key, service, std::move(connection), &addresses,
                            ProxyHeaderFailure::invalid, "");
          },
          [this, key, service](Fd connection, ProxyHeaderFailure failure, std::string_view detail) {
            on_proxy_header(key, service, std::move(connection), nullptr, failure, detail);
          }));
}

void Server::on_proxy_header(uint64_t reader, const std::shared_ptr<Service>& service, Fd fd,
                             const ProxiedAddresses* addresses, ProxyHeaderFailure failure,
                             std::string_view detail) {
  auto it = proxy_readers_.find(reader);
  if (it != proxy_readers_.end()) {
    // Called from the reader's own handler (event_loop.hpp, the lifetime rule).
    loop_.destroy_later(std::move(it->second));
    proxy_readers_.erase(it);
  }
  --service->reading_header;
  auto current = services_.find(service->name());
  if (current == services_.end() || current->second != service) return;  // removed meanwhile
  if (addresses)
    return table_.admit(std::move(fd), service,
                        ConnectionTable::Addresses{addresses->source, addresses->destination});
  // A missing or broken header: the connection cannot be passed on with a true address.
  set_linger_reset(fd.get());
  ++counters_.failed[static_cast<size_t>(FailureReason::bad_proxy_header)];
  ++service->counters.failed[static_cast<size_t>(FailureReason::bad_proxy_header)];
  uint64_t suppressed = 0;
  if (proxy_log_.allow(suppressed))
    TLOG_WARN(
        "event=conn-failed reason=bad-proxy-header service={} failure={} detail=\"{}\" "
        "suppressed={}",
        service->name(), to_string(failure), log::escaped(detail), suppressed);
}

void Server::warn_if_insecure() const {
  const bool clients_proven =
      tokens_.required() || (config_.tls && config_.tls->requires_client_certificate());
  if (!is_loopback(listen_b_->address()) && (!clients_proven || !config_.tls))
    TLOG_WARN(
        "event=insecure-listen side=b addr={} detail=\"{}\"", listen_b_->address().to_string(),
        !clients_proven ? "port B has no authentication: anyone who reaches it can act as the "
                          "client; set --token-file, or keep it on a private network"
                        : "port B authenticates clients but carries the traffic in clear; "
                          "set --tls-cert and --tls-key");
}

const SocketAddress& Server::address_a() const {
  auto it = services_.find(std::string(kDefaultService));
  if (it == services_.end()) throw std::logic_error("no service named default");
  return it->second->listener->address();
}

ServerCounters Server::counters() const {
  ServerCounters c = counters_;
  c.sessions = sessions_.sessions_opened();
  c.control_refused = sessions_.refused_busy();
  c.tls_on = config_.tls != nullptr;
  if (config_.tls) c.tls_handshakes = config_.tls->counts();
  return c;
}

ServerGauges Server::gauges() const {
  const RelaySet& relays = table_.relays();
  ServerGauges gauges{sessions_.online(),
                      table_.relaying(),
                      table_.pending(),
                      relays.live_bytes_to_service(),
                      relays.live_bytes_to_visitor(),
                      start_time_};
  gauges.pool_parked = table_.pools().parked();
  for (size_t i = 0; i < gauges.pool_handoffs.size(); ++i)
    gauges.pool_handoffs[i] = table_.handoffs(static_cast<HandoffOutcome>(i));
  gauges.pool_lost = table_.pools().lost_total();
  return gauges;
}

namespace {

// The settings a reload does not change (they shape listeners, sessions and connections in
// flight): named in a warning, so that a restart is not forgotten.
std::vector<std::string_view> needs_restart(const ServerConfig& now, const ServerConfig& next) {
  std::vector<std::string_view> keys;
  auto differs = [&](bool changed, std::string_view key) {
    if (changed) keys.push_back(key);
  };
  differs(!(now.listen_b == next.listen_b), "listen-b");
  differs(now.pair_timeout != next.pair_timeout, "pair-timeout");
  differs(now.probe_timeout != next.probe_timeout, "probe-timeout");
  differs(now.handshake_timeout != next.handshake_timeout, "handshake-timeout");
  differs(now.max_pending != next.max_pending, "max-pending");
  differs(now.pool_max != next.pool_max, "pool-max");
  differs(now.tls_cert_file != next.tls_cert_file || now.tls_key_file != next.tls_key_file ||
              now.tls_client_ca_file != next.tls_client_ca_file,
          "tls-cert/tls-key/tls-client-ca");
  differs(now.daemon.heartbeat.interval != next.daemon.heartbeat.interval ||
              now.daemon.heartbeat.timeout != next.daemon.heartbeat.timeout,
          "heartbeat-interval/heartbeat-timeout");
  differs(now.daemon.drain_timeout != next.daemon.drain_timeout, "drain-timeout");
  differs(!(now.daemon.metrics_listen == next.daemon.metrics_listen), "metrics-listen");
  differs(now.daemon.log_level != next.daemon.log_level, "log-level");
  return keys;
}

}  // namespace

std::string Server::reload(const ServerConfig& next) {
  // SIGTERM stops accepting for good: a reload must not open listeners again.
  if (draining_) return "the server is draining (SIGTERM): the reload is ignored";
  // Every new listener is bound before anything changes: a port in use refuses the whole file.
  std::unordered_map<std::string, std::unique_ptr<Listener>> bound;
  for (const auto& service : next.services) {
    auto it = services_.find(service.name);
    if (it != services_.end() && it->second->config().listen == service.listen) continue;
    try {
      bound.emplace(service.name, bind_service(service));
    } catch (const std::exception& e) {
      return e.what();  // `bound` closes what was opened
    }
  }
  // Removed services first: their connections end before anything is announced anew.
  std::vector<std::shared_ptr<Service>> removed;
  for (auto it = services_.begin(); it != services_.end();) {
    auto next_it = std::next(it);
    bool kept = std::any_of(next.services.begin(), next.services.end(),
                            [&](const ServiceConfig& s) { return s.name == it->first; });
    if (!kept) {
      TLOG_INFO("event=service-removed service={} addr={}", it->first,
                it->second->listener->address().to_string());
      it->second->listener->close();
      removed.push_back(it->second);
      services_.erase(it);
    }
    it = next_it;
  }
  for (const auto& service : removed) table_.service_removed(*service);
  size_t added = 0, changed = 0;
  for (const auto& config : next.services) {
    auto it = services_.find(config.name);
    if (it == services_.end()) {
      auto service = std::make_shared<Service>(config);
      service->listener = std::move(bound.at(config.name));
      services_.emplace(config.name, std::move(service));
      ++added;
      continue;
    }
    Service& service = *it->second;
    if (service.config() == config) continue;
    ++changed;
    if (auto b = bound.find(config.name); b != bound.end()) {
      service.listener->close();
      service.listener = std::move(b->second);
    }
    service.set_config(config);
    TLOG_INFO("event=service-changed service={} addr={}", config.name,
              service.listener->address().to_string());
  }
  // Who may serve what is settled before any session ends: a session's connections are then
  // handed only to sessions the new config allows.
  sessions_.services_changed(removed);
  // Sessions that no longer prove what the new config asks for end: clients removed, a token
  // changed, auth turned on (a session without a proof) or off (one with a proof it no longer
  // needs). They may log in again at once.
  Tokens tokens = tokens_of(next);
  std::vector<std::string> ended;
  sessions_.for_each_session([&](const std::string& name, const Session& session) {
    const std::string* proven = session.identity() ? tokens_.of(name) : nullptr;
    const std::string* wanted = tokens.of(name);
    const bool still_good = proven ? (wanted && *wanted == *proven) : !tokens.required();
    if (!still_good) ended.push_back(name);
  });
  tokens_ = std::move(tokens);
  for (const auto& name : ended) sessions_.end_client(name);
  auto unchanged = needs_restart(config_, next);
  config_.services = next.services;
  config_.clients = next.clients;
  config_.token = next.token;
  TLOG_INFO("event=reloaded services={} added={} removed={} changed={} clients={} ended={}",
            services_.size(), added, removed.size(), changed, config_.clients.size(), ended.size());
  if (!unchanged.empty())
    TLOG_WARN(
        "event=reload-partial restart_needed_for=\"{}\" detail=\"only services and clients are "
        "reloaded; these keep their running values\"",
        fmt::join(unchanged, ","));
  return {};
}

void Server::drain(std::function<void()> drained) {
  draining_ = true;
  for (auto& [name, service] : services_) service->listener->close();
  for (auto& [key, reader] : proxy_readers_) {
    reader->cancel();
    loop_.destroy_later(std::move(reader));
  }
  proxy_readers_.clear();
  listen_b_->close();
  gate_.close();
  sessions_.close();
  TLOG_INFO("event=draining active={}", table_.relaying());
  table_.drain(std::move(drained));
}

void Server::abort_relays() {
  table_.abort_relays();
}

}  // namespace tunnel::server
