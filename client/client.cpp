// How the client's pieces meet: the control connection passes NEW/CLOSE to the link table (NEW
// routed to its service's target), and the link table sends FAIL back through it.
#include "client.hpp"

#include <ctime>

#include "tunnel/log.hpp"
#include "tunnel/systemd_notify.hpp"

namespace tunnel::client {

Client::Client(EventLoop& loop, const ClientConfig& config, SocketAddresses server,
               std::vector<ResolvedService> services)
    : loop_(loop),
      config_(config),
      server_(std::move(server)),
      catalog_(std::move(services)),
      control_(loop, server_, catalog_, config.dial_timeout, config.reconnect_max,
               config.daemon.heartbeat, ClientAuth{config.token, config.name}, config.tls,
               config.pool,
               ControlConnection::Events{
                   [this] { on_online(); },
                   [this](const ConnId& id, std::string_view service) { on_new(id, service); },
                   [this](const ConnId& id) { links_.on_close(id); },
                   [this](const ConnId& id) { pool_.on_park(id); },
                   [this] {
                     pool_.clear();
                     links_.on_session_lost();
                   }}),
      links_(loop, control_, server_, catalog_, config.dial_timeout, config.tls,
             LinkTable::Events{[this](FailReason reason, std::optional<size_t> service) {
                                 auto r = static_cast<size_t>(reason);
                                 ++counters_.failed[r];
                                 if (service) ++service_counters_[*service].failed[r];
                               },
                               [this](size_t service) {
                                 ++counters_.relayed;
                                 ++service_counters_[service].relayed;
                               },
                               [this](const RelayOutcome& outcome, std::optional<size_t> service) {
                                 counters_.bytes_to_target += outcome.bytes_to_service;
                                 counters_.bytes_from_target += outcome.bytes_to_visitor;
                                 if (!service) return;
                                 auto& counters = service_counters_[*service];
                                 counters.bytes_to_target += outcome.bytes_to_service;
                                 counters.bytes_from_target += outcome.bytes_to_visitor;
                               }}),
      pool_(loop, control_, server_, config.dial_timeout, config.tls,
            [this](const ConnId& id, std::string_view service, StreamSocket socket) {
              on_pooled(id, service, std::move(socket));
            }),
      service_counters_(catalog_.size()),
      start_time_(static_cast<double>(std::time(nullptr))),
      summary_timer_(loop, kSummaryInterval, [this] { summary_.log(counters_, gauges()); }) {
  metrics_ = MetricsEndpoint::start_if_asked(loop_, config_.daemon.metrics_listen, [this] {
    return render_metrics(counters_, gauges()) +
           render_service_metrics(catalog_, service_counters_, control_.services(), links_);
  });
  summary_timer_.start();
}

void Client::on_new(const ConnId& id, std::string_view service) {
  ++counters_.requested;
  auto index = catalog_.for_new(service);
  if (!index) return links_.refuse_unknown(id, service.empty() ? kDefaultService : service);
  ++service_counters_[*index].requested;
  links_.on_new(id, *index);
}

void Client::on_pooled(const ConnId& id, std::string_view service, StreamSocket socket) {
  ++counters_.requested;
  ++counters_.pooled;
  auto index = catalog_.for_new(service);
  if (!index)
    return links_.refuse_pooled(id, service.empty() ? kDefaultService : service, std::move(socket));
  ++service_counters_[*index].requested;
  links_.on_pooled(id, *index, std::move(socket));
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
  gauges.pool_parked = pool_.parked();
  gauges.pool_opening = pool_.opening();
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
