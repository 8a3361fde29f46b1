// How the client's pieces meet: NEW <id> starts a link, a ready link becomes a relay, a failed one
// becomes FAIL <id> <reason>.
#include "client.hpp"

#include <ctime>

#include "tunnel/log.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/socket.hpp"
#include "tunnel/systemd_notify.hpp"

namespace tunnel::client {

Client::Client(EventLoop& loop, const ClientConfig& config, SocketAddresses server,
               SocketAddresses target)
    : loop_(loop),
      config_(config),
      server_(std::move(server)),
      target_(std::move(target)),
      pipe_trimmer_(loop, PipePool::kTrimInterval, [this] { pipes_.trim_idle(); }),
      control_(loop, server_, config.dial_timeout, config.reconnect_max, config.daemon.heartbeat,
               ControlConnection::Events{[this] { on_online(); },
                                         [this](const ConnId& id) { on_new(id); },
                                         [this](const ConnId& id) { on_close(id); }}),
      start_time_(static_cast<double>(std::time(nullptr))),
      summary_timer_(loop, kSummaryInterval, [this] { summary_.log(counters_, gauges()); }) {
  metrics_ = MetricsEndpoint::start_if_asked(
      loop_, config_.daemon.metrics_listen, [this] { return render_metrics(counters_, gauges()); });
  summary_timer_.start();
  pipe_trimmer_.start();
}

ClientGauges Client::gauges() const {
  ClientGauges g{control_.online(), control_.reconnects(), relays_.size(), 0, 0, start_time_};
  for (const auto& [id, relay] : relays_) {
    g.live_bytes_to_target += relay->bytes_a_to_b();
    g.live_bytes_from_target += relay->bytes_b_to_a();
  }
  return g;
}

void Client::drain(std::function<void()> drained) {
  control_.stop();
  links_.clear();
  TLOG_INFO("event=draining active={}", relays_.size());
  drained_ = std::move(drained);
  check_drained();
}

void Client::abort_relays() {
  for (auto& [id, relay] : relays_) relay->abort("client stopping");
}

void Client::check_drained() {
  if (!drained_ || !relays_.empty()) return;
  auto drained = std::move(drained_);
  drained_ = nullptr;
  drained();
}

void Client::on_online() {
  // Ready for systemd once the tunnel can serve, i.e. at the first successful registration.
  if (!ready_sent_) systemd::notify("READY=1");
  ready_sent_ = true;
}

void Client::on_new(const ConnId& id) {
  if (links_.contains(id) || relays_.contains(id)) return;  // ids are never reused; ignore a repeat
  ++counters_.requested;
  links_.emplace(id, std::make_unique<DataLink>(
                         loop_, id, server_, target_, config_.dial_timeout,
                         [this, id](Fd data, Fd target) {
                           on_link_ready(id, std::move(data), std::move(target));
                         },
                         [this, id](std::string_view reason, bool to_target) {
                           on_link_failed(id, reason, to_target);
                         }));
}

void Client::on_close(const ConnId& id) {
  // The external side left before pairing: stop dialing for it.
  if (links_.erase(id) > 0) TLOG_DEBUG("event=link-cancelled conn={}", id.short_hex());
}

void Client::on_link_ready(const ConnId& id, Fd data, Fd target) {
  links_.erase(id);
  ++counters_.relayed;
  set_keepalive(data.get());
  auto relay = std::make_unique<Relay>(
      loop_, pipes_, std::move(data), std::move(target), [this, id](const RelayOutcome& outcome) {
        TLOG_DEBUG(
            "event=conn-closed conn={} bytes_to_target={} bytes_from_target={} reason=\"{}\"",
            id.short_hex(), outcome.bytes_a_to_b, outcome.bytes_b_to_a, outcome.reason);
        counters_.bytes_to_target += outcome.bytes_a_to_b;
        counters_.bytes_from_target += outcome.bytes_b_to_a;
        relays_.erase(id);
        check_drained();
      });
  relays_.emplace(id, std::move(relay));
  TLOG_DEBUG("event=relaying conn={}", id.short_hex());
}

void Client::on_link_failed(const ConnId& id, std::string_view reason, bool to_target) {
  // Tell the server first, so the external connection is closed at once with the right reason.
  control_.send_line(protocol::fail(id, reason));
  counters_.count_failure(reason);
  uint64_t suppressed = 0;
  if (failure_log_.allow(suppressed))
    TLOG_WARN("event={} conn={} reason={} suppressed={}",
              to_target ? "target-failed" : "data-connect-failed", id.short_hex(), reason,
              suppressed);
  links_.erase(id);
}

}  // namespace tunnel::client
