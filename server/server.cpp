// How the server's pieces meet: A connections go to the pending table, B connections to a
// handshake, then to the session (control) or a relay (data).
#include "server.hpp"

#include <netinet/in.h>

#include <ctime>
#include <stdexcept>

#include "tunnel/protocol.hpp"
#include "tunnel/socket.hpp"

namespace tunnel::server {
namespace {

// Handshakes in flight at once; a flood of silent B connections beyond this is shed.
constexpr size_t kMaxHandshakes = 4096;
// Control connections that may wait for one probe together.
constexpr size_t kMaxNewcomers = 8;

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
      pipe_trimmer_(loop, PipePool::kTrimInterval, [this] { pipes_.trim_idle(); }),
      pending_(loop, *this, config.pair_timeout, config.max_pending,
               [this](FailureReason reason) { count_failure(reason); }),
      start_time_(static_cast<double>(std::time(nullptr))),
      summary_timer_(loop, kSummaryInterval, [this] { summary_.log(counters_, gauges()); }) {
  listen_a_ = bind_listener(loop_, "--listen-a", config_.listen_a, [this](Fd fd) {
    ++counters_.accepted;
    pending_.admit(std::move(fd));
  });
  listen_b_ = bind_listener(loop_, "--listen-b", config_.listen_b,
                            [this](Fd fd) { on_b_connection(std::move(fd)); });
  if (!is_loopback(listen_b_->address()))
    TLOG_WARN(
        "event=insecure-listen side=b addr={} detail=\"port B has no authentication in this "
        "version: anyone who reaches it can act as the client; keep it on a private network or "
        "firewall it\"",
        listen_b_->address().to_string());
  metrics_ = MetricsEndpoint::start_if_asked(
      loop_, config_.daemon.metrics_listen, [this] { return render_metrics(counters_, gauges()); });
  summary_timer_.start();
  pipe_trimmer_.start();
  TLOG_INFO("event=ready pair_timeout={} max_pending={}", format_duration(config_.pair_timeout),
            config_.max_pending);
}

ServerGauges Server::gauges() const {
  ServerGauges g{online(), relays_.size(), pending_.size(), 0, 0, start_time_};
  for (const auto& [id, active] : relays_) {
    g.live_bytes_to_client += active.relay->bytes_a_to_b();
    g.live_bytes_to_external += active.relay->bytes_b_to_a();
  }
  return g;
}

void Server::count_failure(FailureReason reason) {
  ++counters_.failed[static_cast<size_t>(reason)];
}

Server::~Server() = default;

void Server::drain(std::function<void()> drained) {
  listen_a_->close();
  listen_b_->close();
  pending_.close_all();
  handshakes_.clear();
  newcomers_.clear();
  if (session_) {
    session_->close();
    loop_.defer([old = std::shared_ptr<Session>(std::move(session_))] {});
  }
  TLOG_INFO("event=draining active={}", relays_.size());
  drained_ = std::move(drained);
  check_drained();
}

void Server::abort_relays() {
  for (auto& [id, active] : relays_) active.relay->abort("server stopping");
}

void Server::check_drained() {
  if (!drained_ || !relays_.empty()) return;
  auto drained = std::move(drained_);
  drained_ = nullptr;
  drained();
}

void Server::send_line(std::string_view line) {
  if (online()) session_->send_line(line);
}

void Server::on_b_connection(Fd fd) {
  if (handshakes_.size() >= kMaxHandshakes) {
    refuse_b(FailureReason::bad_handshake, "too-many-handshakes", "?");
    return;
  }
  uint64_t key = ++handshakes_started_;
  handshakes_.emplace(key, std::make_unique<BHandshake>(
                               loop_, std::move(fd), config_.handshake_timeout,
                               [this, key](Fd connection, std::string_view line) {
                                 on_first_line(key, std::move(connection), line);
                               },
                               [this, key](std::string_view reason, std::string_view peer) {
                                 // A connection that closes before speaking is not worth a warning.
                                 if (reason == "handshake-timeout")
                                   refuse_b(FailureReason::handshake_timeout, reason, peer);
                                 else if (reason != "closed")
                                   refuse_b(FailureReason::bad_handshake, reason, peer);
                                 handshakes_.erase(key);
                               }));
}

void Server::on_first_line(uint64_t handshake, Fd fd, std::string_view line) {
  auto it = handshakes_.find(handshake);
  std::string peer = it->second->peer();
  handshakes_.erase(it);
  auto hello = protocol::parse_hello(line);
  // No optional features are known yet: a control hello's list is not looked at, and OK lists none.
  if (std::holds_alternative<protocol::ControlHello>(hello)) {
    on_control_hello(std::move(fd), peer);
  } else if (auto* data = std::get_if<protocol::DataHello>(&hello)) {
    on_data_hello(std::move(fd), data->id, peer);
  } else {
    const auto& bad = std::get<protocol::Malformed>(hello);
    // A garbled data line is closed silently like any refused id; a wrong control line is told why.
    if (line.find(" DATA") == std::string_view::npos) {
      auto answer = protocol::err(bad.code, bad.reason);
      send_nosignal(fd.get(), answer.data(), answer.size());
    }
    refuse_b(FailureReason::bad_handshake, bad.code, peer);
  }
}

void Server::on_control_hello(Fd fd, const std::string& peer) {
  if (!online()) return open_session(std::move(fd));
  if (newcomers_.size() >= kMaxNewcomers) return refuse_busy(fd);
  // A client restarted after a silent failure must not be locked out by its own stale session:
  // ask the current one whether it is alive, and let the answer decide.
  TLOG_INFO("event=probing session={} newcomer={}", session_->number(), peer);
  newcomers_.push_back(std::move(fd));
  session_->probe(config_.probe_timeout, [this](bool alive) { resolve_newcomers(alive); });
}

void Server::resolve_newcomers(bool incumbent_alive) {
  auto newcomers = std::move(newcomers_);
  newcomers_.clear();
  size_t first_refused = 0;
  if (!incumbent_alive && !newcomers.empty()) {
    if (session_) {
      TLOG_WARN("event=session-replaced session={} reason=probe-timeout", session_->number());
      auto old = std::move(session_);
      old->close();
      pending_.client_lost();
      loop_.defer([old = std::shared_ptr<Session>(std::move(old))] {});
    }
    open_session(std::move(newcomers[0]));
    first_refused = 1;
  }
  for (size_t i = first_refused; i < newcomers.size(); ++i) refuse_busy(newcomers[i]);
}

void Server::refuse_busy(const Fd& fd) {
  auto answer = protocol::err(protocol::kErrBusy, "a client is already connected");
  send_nosignal(fd.get(), answer.data(), answer.size());
  ++counters_.control_refused;
  uint64_t suppressed = 0;
  if (busy_log_.allow(suppressed))
    TLOG_INFO("event=control-refused reason=busy peer={} suppressed={}",
              peer_address(fd.get()).to_string(), suppressed);
}

void Server::open_session(Fd fd) {
  uint64_t number = ++counters_.sessions;
  session_ = std::make_unique<Session>(
      loop_, number, std::move(fd), config_.daemon.heartbeat,
      Session::Events{
          [this](const ConnId& id, std::string_view reason) { pending_.fail(id, reason); },
          [this, number](std::string_view reason) { on_session_closed(number, reason); }});
  session_->send_line(protocol::ok({}));
  TLOG_INFO("event=client-online session={} peer={}", number, session_->peer());
  pending_.client_online();
}

void Server::on_session_closed(uint64_t number, std::string_view reason) {
  if (!session_ || session_->number() != number) return;
  TLOG_INFO("event=client-offline session={} reason=\"{}\"", number, reason);
  // Destroyed after this batch: we are inside one of its callbacks.
  loop_.defer([old = std::shared_ptr<Session>(std::move(session_))] {});
  pending_.client_lost();
  // Anyone who was waiting on the probe can have the place now.
  if (!newcomers_.empty()) resolve_newcomers(false);
}

void Server::on_data_hello(Fd fd, const ConnId& id, const std::string& peer) {
  auto external = pending_.claim(id);
  if (!external) return refuse_b(FailureReason::unknown_id, "unknown-id", peer);
  ++counters_.paired;
  set_keepalive(fd.get());
  start_relay(id, std::move(*external), std::move(fd));
}

void Server::start_relay(const ConnId& id, Fd external, Fd data) {
  auto relay = std::make_unique<Relay>(
      loop_, pipes_, std::move(external), std::move(data), [this, id](const RelayOutcome& outcome) {
        auto it = relays_.find(id);
        if (it == relays_.end()) return;
        auto lasted = std::chrono::duration_cast<Duration>(loop_.now() - it->second.started);
        TLOG_DEBUG(
            "event=conn-closed conn={} bytes_a_to_b={} bytes_b_to_a={} duration_ms={} "
            "reason=\"{}\"",
            id.short_hex(), outcome.bytes_a_to_b, outcome.bytes_b_to_a, lasted.count(),
            outcome.reason);
        counters_.bytes_to_client += outcome.bytes_a_to_b;
        counters_.bytes_to_external += outcome.bytes_b_to_a;
        relays_.erase(it);
        check_drained();
      });
  relays_.emplace(id, ActiveRelay{std::move(relay), loop_.now()});
}

void Server::refuse_b(FailureReason counted_as, std::string_view reason, std::string_view peer) {
  count_failure(counted_as);
  uint64_t suppressed = 0;
  if (b_refusal_log_.allow(suppressed))
    TLOG_INFO("event=b-refused reason={} peer={} suppressed={}", reason, peer, suppressed);
}

}  // namespace tunnel::server
