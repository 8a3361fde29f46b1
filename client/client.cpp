// How the client's pieces meet: NEW <id> starts a link, a ready link becomes a relay, a failed one
// becomes FAIL <id> <reason>.
#include "client.hpp"

#include "tunnel/log.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/systemd_notify.hpp"

namespace tunnel::client {

Client::Client(EventLoop& loop, const ClientConfig& config, const SocketAddress& server,
               const SocketAddress& target)
    : loop_(loop),
      config_(config),
      server_(server),
      target_(target),
      pipe_trimmer_(loop, pipes_),
      control_(loop, server, config.dial_timeout, config.reconnect_max, config.heartbeat,
               ControlConnection::Events{[this] { on_online(); },
                                         [this](const ConnId& id) { on_new(id); },
                                         [this](const ConnId& id) { on_close(id); }}) {}

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
  auto relay = std::make_unique<Relay>(
      loop_, pipes_, std::move(data), std::move(target), [this, id](const RelayOutcome& outcome) {
        TLOG_DEBUG("event=conn-closed conn={} bytes_to_target={} bytes_from_target={} reason=\"{}\"",
                   id.short_hex(), outcome.bytes_a_to_b, outcome.bytes_b_to_a, outcome.reason);
        relays_.erase(id);
        check_drained();
      });
  relays_.emplace(id, std::move(relay));
  TLOG_DEBUG("event=relaying conn={}", id.short_hex());
}

void Client::on_link_failed(const ConnId& id, std::string_view reason, bool to_target) {
  // Tell the server first, so the external connection is closed at once with the right reason.
  control_.send_line(protocol::fail(id, reason));
  uint64_t suppressed = 0;
  if (failure_log_.allow(suppressed))
    TLOG_WARN("event={} conn={} reason={} suppressed={}",
              to_target ? "target-failed" : "data-connect-failed", id.short_hex(), reason,
              suppressed);
  links_.erase(id);
}

}  // namespace tunnel::client
