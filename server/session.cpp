// Control-connection handling on the server side.
#include "session.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "tunnel/address.hpp"
#include "tunnel/log.hpp"
#include "tunnel/protocol.hpp"

namespace tunnel::server {

Session::Session(EventLoop& loop, uint64_t number, StreamSocket socket,
                 std::optional<ClientIdentity> identity, HelloFeatures features,
                 HeartbeatSettings heartbeat, Events events)
    : number_(number),
      peer_(peer_address(socket.fd.get()).to_string()),
      identity_(std::move(identity)),
      features_(features),
      events_(std::move(events)),
      connection_(
          loop, std::move(socket), [this](std::string_view line) { on_line(line); },
          [this](std::string_view reason) { closed(reason); }),
      heartbeat_(
          loop, heartbeat,
          [this] { connection_.send(protocol::ping(fmt::format("hb-{}", ++pings_sent_))); },
          [this] { closed("heartbeat-timeout"); }),
      probe_deadline_(loop, [this] {
        TLOG_INFO("event=probe-unanswered session={} token={}", number_, probe_token_);
        finish_probe(false);
      }) {
  heartbeat_.start();
}

std::string_view Session::name() const {
  return identity_ ? std::string_view(identity_->name) : auth::kDefaultName;
}

void Session::close() {
  connection_.close();
  heartbeat_.stop();
  probe_deadline_.cancel();
}

void Session::closed(std::string_view reason) {
  connection_.close();
  heartbeat_.stop();
  // The owner hears why first; a probe still waiting then learns the session is gone.
  events_.on_closed(reason);
  finish_probe(false);
}

void Session::on_line(std::string_view line) {
  heartbeat_.heard();
  auto parsed = protocol::parse_message(line);
  if (auto* bad = std::get_if<protocol::Malformed>(&parsed)) {
    TLOG_WARN("event=control-malformed session={} reason=\"{}\"", number_, bad->reason);
    return closed("malformed line");
  }
  const auto& message = std::get<protocol::Message>(parsed);
  switch (message.verb) {
    case protocol::Verb::ping:
      connection_.send(protocol::pong(message.word));
      break;
    case protocol::Verb::pong:
      if (!probe_token_.empty() && message.word == probe_token_) finish_probe(true);
      break;
    case protocol::Verb::fail:
      events_.on_fail(*this, message.id, message.word);
      break;
    case protocol::Verb::serve:
      // Without the extension negotiated SERVE is a word this session must not send.
      if (!features_.services) {
        TLOG_WARN("event=control-unexpected session={} line=\"{}\"", number_, log::escaped(line));
        return closed("unexpected message");
      }
      on_serve(message.service);
      break;
    case protocol::Verb::pool:
      // Without the extension negotiated POOL is a word this session must not send.
      if (features_.pool_cap == 0) {
        TLOG_WARN("event=control-unexpected session={} line=\"{}\"", number_, log::escaped(line));
        return closed("unexpected message");
      }
      events_.on_pool(*this, std::min(message.count, features_.pool_cap));
      break;
    case protocol::Verb::unknown:
      TLOG_DEBUG("event=control-ignored session={} verb={}", number_, message.word);
      break;
    default:
      // OK/ERR/NEW/CLOSE are the server's own words; a client sending them is confused.
      TLOG_WARN("event=control-unexpected session={} line=\"{}\"", number_, log::escaped(line));
      return closed("unexpected message");
  }
}

void Session::on_serve(const std::string& service) {
  // Every SERVE line counts toward the bound, repeated names too.
  if (++serve_lines_ > protocol::kMaxServices) {
    TLOG_WARN("event=control-malformed session={} reason=\"more than {} services announced\"",
              number_, protocol::kMaxServices);
    return closed("too many services");
  }
  if (announced_set_.contains(service)) {
    connection_.send(protocol::refused(service, protocol::kRefusedAlreadyServed));
    return;
  }
  announced_.push_back(service);
  announced_set_.insert(service);
  events_.on_serve(*this, service);
}

void Session::probe(Duration timeout, std::function<void(bool)> result) {
  probe_waiters_.push_back(std::move(result));
  if (probe_waiters_.size() > 1) return;
  probe_token_ = fmt::format("probe-{}", ++probes_sent_);
  connection_.send(protocol::ping(probe_token_));
  probe_deadline_.arm(timeout);
}

void Session::finish_probe(bool alive) {
  probe_deadline_.cancel();
  probe_token_.clear();
  auto waiters = std::move(probe_waiters_);
  probe_waiters_.clear();
  for (auto& waiter : waiters) waiter(alive);
}

}  // namespace tunnel::server
