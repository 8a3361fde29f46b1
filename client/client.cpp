// How the client's pieces meet: the control connection passes NEW/CLOSE to the link table, and
// the link table sends FAIL back through it.
#include "client.hpp"

#include <ctime>

#include "tunnel/log.hpp"
#include "tunnel/systemd_notify.hpp"

namespace tunnel::client {

Client::Client(EventLoop& loop, const ClientConfig& config, SocketAddresses server,
               SocketAddresses target)
    : loop_(loop),
      config_(config),
      server_(std::move(server)),
      target_(std::move(target)),
      control_(loop, server_, config.dial_timeout, config.reconnect_max, config.daemon.heartbeat,
               ClientAuth{config.token, config.name}, config.tls,
               ControlConnection::Events{[this] { on_online(); },
                                         [this](const ConnId& id) {
                                           ++counters_.requested;
                                           links_.on_new(id);
                                         },
                                         [this](const ConnId& id) { links_.on_close(id); }}),
      links_(loop, control_, server_, target_, config.dial_timeout, config.tls, config.tls_resume,
             LinkTable::Events{
                 [this](FailReason reason) { ++counters_.failed[static_cast<size_t>(reason)]; },
                 [this] { ++counters_.relayed; },
                 [this](const RelayOutcome& outcome) {
                   counters_.bytes_to_target += outcome.bytes_to_service;
                   counters_.bytes_from_target += outcome.bytes_to_visitor;
                 }}),
      start_time_(static_cast<double>(std::time(nullptr))),
      summary_timer_(loop, kSummaryInterval, [this] { summary_.log(counters_, gauges()); }) {
  metrics_ = MetricsEndpoint::start_if_asked(
      loop_, config_.daemon.metrics_listen, [this] { return render_metrics(counters_, gauges()); });
  summary_timer_.start();
}

ClientGauges Client::gauges() const {
  const RelaySet& relays = links_.relays();
  ClientGauges gauges;
  gauges.online = control_.online();
  gauges.reconnects = control_.reconnects();
  gauges.active = links_.count(LinkState::relaying);
  gauges.live_bytes_to_target = relays.live_bytes_to_service();
  gauges.live_bytes_from_target = relays.live_bytes_to_visitor();
  gauges.start_time_seconds = start_time_;
  gauges.tls_on = config_.tls != nullptr;
  if (config_.tls) gauges.tls_handshakes = config_.tls->counts();
  return gauges;
}

void Client::drain(std::function<void()> drained) {
  control_.stop();
  TLOG_INFO("event=draining active={}", links_.count(LinkState::relaying));
  links_.drain(std::move(drained));
}

void Client::abort_relays() {
  links_.abort_relays();
}

void Client::on_online() {
  // Ready for systemd once the tunnel can serve, i.e. at the first successful registration.
  if (!ready_sent_) systemd::notify("READY=1");
  ready_sent_ = true;
}

}  // namespace tunnel::client
