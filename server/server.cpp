// How the server's pieces meet: A connections go to the connection table, B connections to a
// handshake, then to the session arbiter (control) or to the table's claim (data).
#include "server.hpp"

#include <netinet/in.h>

#include <ctime>
#include <stdexcept>

#include "tunnel/socket.hpp"

namespace tunnel::server {
namespace {

std::unique_ptr<Listener> bind_listener(EventLoop& loop, const char* option, const HostPort& where,
                                        Listener::OnAccept on_accept) {
  try {
    auto listener = std::make_unique<Listener>(loop, option + 9 /* "--listen-" */,
                                               resolve(where, true), std::move(on_accept));
    TLOG_INFO("event=listening side={} addr={}", option + 9, listener->address().to_string());
    return listener;
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("{}: {}", option, e.what()));
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

}  // namespace

Server::Server(EventLoop& loop, const ServerConfig& config)
    : loop_(loop),
      config_(config),
      arbiter_(loop, config.daemon.heartbeat, config.probe_timeout,
               SessionArbiter::Events{
                   [this] { table_.client_online(); }, [this] { table_.client_lost(); },
                   [this](const ConnId& id, std::string_view reason) { table_.fail(id, reason); }}),
      table_(loop, arbiter_, config.pair_timeout, config.max_pending,
             ConnectionTable::Events{
                 [this](FailureReason reason) { ++counters_.failed[static_cast<size_t>(reason)]; },
                 [this](const RelayOutcome& outcome) {
                   counters_.bytes_to_client += outcome.bytes_to_service;
                   counters_.bytes_to_external += outcome.bytes_to_visitor;
                 }}),
      gate_(loop, config.handshake_timeout, config.token, config.tls, arbiter_, table_, counters_),
      start_time_(static_cast<double>(std::time(nullptr))),
      summary_timer_(loop, kSummaryInterval, [this] { summary_.log(counters(), gauges()); }) {
  listen_a_ = bind_listener(loop_, "--listen-a", config_.listen_a, [this](Fd fd) {
    ++counters_.accepted;
    table_.admit(std::move(fd));
  });
  listen_b_ = bind_listener(loop_, "--listen-b", config_.listen_b,
                            [this](Fd fd) { gate_.admit(std::move(fd)); });
  if (config_.tls)
    for (const auto& warning : config_.tls->warnings())
      TLOG_WARN("event=tls-certificate detail=\"{}\"", log::escaped(warning));
  const bool clients_proven =
      !config_.token.empty() || (config_.tls && config_.tls->requires_client_certificate());
  if (!is_loopback(listen_b_->address()) && (!clients_proven || !config_.tls))
    TLOG_WARN(
        "event=insecure-listen side=b addr={} detail=\"{}\"", listen_b_->address().to_string(),
        !clients_proven ? "port B has no authentication: anyone who reaches it can act as the "
                          "client; set --token-file, or keep it on a private network"
                        : "port B authenticates clients but carries the traffic in clear; "
                          "set --tls-cert and --tls-key");
  metrics_ = MetricsEndpoint::start_if_asked(loop_, config_.daemon.metrics_listen, [this] {
    return render_metrics(counters(), gauges());
  });
  summary_timer_.start();
  TLOG_INFO("event=ready pair_timeout={} max_pending={} auth={} tls={}",
            format_duration(config_.pair_timeout), config_.max_pending,
            config_.token.empty() ? "none" : "token",
            !config_.tls                                 ? "off"
            : config_.tls->requires_client_certificate() ? "mtls"
                                                         : "on");
}

Server::~Server() = default;

ServerCounters Server::counters() const {
  ServerCounters c = counters_;
  c.sessions = arbiter_.sessions_opened();
  c.control_refused = arbiter_.refused_busy();
  c.tls_on = config_.tls != nullptr;
  if (config_.tls) c.tls_handshakes = config_.tls->counts();
  return c;
}

ServerGauges Server::gauges() const {
  const RelaySet& relays = table_.relays();
  return ServerGauges{arbiter_.online(),
                      table_.relaying(),
                      table_.pending(),
                      relays.live_bytes_to_service(),
                      relays.live_bytes_to_visitor(),
                      start_time_};
}

void Server::drain(std::function<void()> drained) {
  listen_a_->close();
  listen_b_->close();
  gate_.close();
  arbiter_.close();
  TLOG_INFO("event=draining active={}", table_.relaying());
  table_.drain(std::move(drained));
}

void Server::abort_relays() {
  table_.abort_relays();
}

}  // namespace tunnel::server
