// How the server's pieces meet: A connections go to the connection table, B connections to a
// handshake, then to the session arbiter (control) or to the table's claim (data).
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
      start_time_(static_cast<double>(std::time(nullptr))),
      summary_timer_(loop, kSummaryInterval, [this] { summary_.log(counters(), gauges()); }) {
  listen_a_ = bind_listener(loop_, "--listen-a", config_.listen_a, [this](Fd fd) {
    ++counters_.accepted;
    table_.admit(std::move(fd));
  });
  listen_b_ = bind_listener(loop_, "--listen-b", config_.listen_b,
                            [this](Fd fd) { on_b_connection(std::move(fd)); });
  if (!is_loopback(listen_b_->address()))
    TLOG_WARN(
        "event=insecure-listen side=b addr={} detail=\"port B has no authentication in this "
        "version: anyone who reaches it can act as the client; keep it on a private network or "
        "firewall it\"",
        listen_b_->address().to_string());
  metrics_ = MetricsEndpoint::start_if_asked(loop_, config_.daemon.metrics_listen, [this] {
    return render_metrics(counters(), gauges());
  });
  summary_timer_.start();
  TLOG_INFO("event=ready pair_timeout={} max_pending={}", format_duration(config_.pair_timeout),
            config_.max_pending);
}

Server::~Server() = default;

ServerCounters Server::counters() const {
  ServerCounters c = counters_;
  c.sessions = arbiter_.sessions_opened();
  c.control_refused = arbiter_.refused_busy();
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
  for (auto& [key, handshake] : handshakes_) {
    handshake->cancel();
    loop_.destroy_later(std::move(handshake));
  }
  handshakes_.clear();
  arbiter_.close();
  TLOG_INFO("event=draining active={}", table_.relaying());
  table_.drain(std::move(drained));
}

void Server::abort_relays() {
  table_.abort_relays();
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
                               [this, key](HandshakeFailure failure, std::string_view peer) {
                                 on_handshake_failed(key, failure, peer);
                               }));
}

void Server::finish_handshake(uint64_t handshake) {
  auto it = handshakes_.find(handshake);
  if (it == handshakes_.end()) return;
  // Called from the handshake's own handler (event_loop.hpp, the lifetime rule).
  loop_.destroy_later(std::move(it->second));
  handshakes_.erase(it);
}

void Server::on_handshake_failed(uint64_t handshake, HandshakeFailure failure,
                                 std::string_view peer) {
  switch (failure) {
    case HandshakeFailure::timeout:
      refuse_b(FailureReason::handshake_timeout, to_string(failure), peer);
      break;
    case HandshakeFailure::line_too_long:
    case HandshakeFailure::reset:
      refuse_b(FailureReason::bad_handshake, to_string(failure), peer);
      break;
    case HandshakeFailure::closed:
      break;  // a connection that closes before speaking is not worth a warning
  }
  finish_handshake(handshake);
}

void Server::on_first_line(uint64_t handshake, Fd fd, std::string_view line) {
  auto it = handshakes_.find(handshake);
  if (it == handshakes_.end()) return;  // cancelled (shutting down): `fd` closes with us
  std::string peer(it->second->peer());
  finish_handshake(handshake);
  auto hello = protocol::parse_hello(line);
  // No optional features are known yet: a control hello's list is not looked at, and OK lists none.
  if (std::holds_alternative<protocol::ControlHello>(hello)) {
    arbiter_.offer(std::move(fd), std::move(peer));
  } else if (auto* data = std::get_if<protocol::DataHello>(&hello)) {
    if (!table_.claim(data->id, std::move(fd)))
      return refuse_b(FailureReason::unknown_id, "unknown-id", peer);
    ++counters_.paired;
  } else {
    const auto& bad = std::get<protocol::Malformed>(hello);
    // A garbled data line is closed silently like any refused id; a wrong control line is told why.
    if (bad.claimed != protocol::HelloKind::data) {
      auto answer = protocol::err(bad.code, bad.reason);
      send_nosignal(fd.get(), answer.data(), answer.size());
    }
    refuse_b(FailureReason::bad_handshake, bad.code, peer);
  }
}

void Server::refuse_b(FailureReason counted_as, std::string_view detail, std::string_view peer) {
  ++counters_.failed[static_cast<size_t>(counted_as)];
  uint64_t suppressed = 0;
  if (b_refusal_log_.allow(suppressed))
    TLOG_INFO("event=b-refused reason={} peer={} suppressed={}", detail, peer, suppressed);
}

}  // namespace tunnel::server
