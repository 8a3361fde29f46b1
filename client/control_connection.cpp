// Control connection life: backing_off -> connecting -> [awaiting_challenge -> awaiting_auth_ok ->]
// awaiting_answer -> online -> (lost) -> backing_off ... The bracketed states only with a token.
// The hello always offers `services`; an OK that lists it is followed by one SERVE per service.
#include "control_connection.hpp"

#include <algorithm>
#include <vector>

#include "tunnel/log.hpp"
#include "tunnel/protocol.hpp"

namespace tunnel::client {
namespace {

constexpr Duration kFirstRetry = std::chrono::milliseconds(100);
constexpr Duration kStableAfter = std::chrono::minutes(1);

}  // namespace

ControlConnection::ControlConnection(EventLoop& loop, std::span<const SocketAddress> server,
                                     const ServiceCatalog& services, Duration dial_timeout,
                                     Duration reconnect_max, HeartbeatSettings heartbeat,
                                     ClientAuth auth, std::shared_ptr<tls::ClientContext> tls,
                                     size_t pool_size, Events events)
    : loop_(loop),
      server_(server),
      server_name_(server.front().to_string()),
      dial_timeout_(dial_timeout),
      auth_(std::move(auth)),
      pool_size_(pool_size),
      events_(std::move(events)),
      services_(services),
      tls_(std::move(tls)),
      backoff_(kFirstRetry, reconnect_max),
      heartbeat_(
          loop, heartbeat,
          [this] {
            if (connection_) connection_->send(protocol::ping(fmt::format("hb-{}", ++pings_sent_)));
          },
          [this] { lost("control-lost", "reason=heartbeat-timeout"); }),
      retry_(loop,
             [this] {
               ++reconnects_;
               connect();
             }),
      stable_(loop, [this] { backoff_.reset(); }) {}

void ControlConnection::start() {
  TLOG_INFO("event=connecting server={}", server_name_);
  connect();
}

void ControlConnection::move_to(ControlState next) {
  state_ = next;
}

void ControlConnection::connect() {
  move_to(ControlState::connecting);
  TLOG_DEBUG("event=connecting server={}", server_name_);
  connector_ = std::make_unique<Connector>(
      loop_, server_, dial_timeout_,
      [this](Fd fd, std::error_code error) { on_connected(std::move(fd), error); });
}

void ControlConnection::on_connected(Fd fd, std::error_code error) {
  if (state_ == ControlState::stopped) return;  // stop() cancels the connector; never reconnect
  // Inside the connector's own callback (event_loop.hpp, the lifetime rule).
  loop_.destroy_later(std::move(connector_));
  if (error) return lost("control-lost", fmt::format("reason=\"{}\"", error.message()));
  if (!tls_) return start_session(StreamSocket{std::move(fd), nullptr, {}});
  auto stream = tls_->new_stream(fd.get());
  handshake_ = std::make_unique<tls::Handshake>(
      loop_, std::move(fd), std::move(stream), dial_timeout_,
      [this](Fd connection, std::unique_ptr<tls::Stream> established) {
        // Inside the handshake's own callback (event_loop.hpp, the lifetime rule).
        loop_.destroy_later(std::move(handshake_));
        start_session(StreamSocket{std::move(connection), std::move(established), {}});
      },
      [this](Fd, tls::Failure failure, std::string_view detail) {
        loop_.destroy_later(std::move(handshake_));
        lost("tls-failed",
             fmt::format("reason={} detail=\"{}\"", tls::to_string(failure), log::escaped(detail)));
      });
}

void ControlConnection::start_session(StreamSocket socket) {
  binding_.clear();
  if (socket.tls) {
    if (auto exporter = socket.tls->exporter()) binding_ = crypto::to_hex(*exporter);
    TLOG_DEBUG("event=tls-established server={} {} resumed={}", server_name_,
               socket.tls->description(), socket.tls->resumed() ? 1 : 0);
  }
  connection_ = std::make_unique<LineConnection>(
      loop_, std::move(socket), [this](std::string_view line) { on_line(line); },
      [this](std::string_view reason) {
        lost("control-lost", fmt::format("reason=\"{}\"", reason));
      });
  // The heartbeat also bounds the wait for the server's answers.
  heartbeat_.start();
  std::vector<std::string> features;
  if (!auth_.token.empty()) features.emplace_back(auth::kFeature);
  features.emplace_back(protocol::kServicesFeature);
  if (pool_size_ > 0) features.emplace_back(protocol::kPoolFeature);
  move_to(auth_.token.empty() ? ControlState::awaiting_answer : ControlState::awaiting_challenge);
  connection_->send(protocol::control_hello(features));
}

void ControlConnection::on_line(std::string_view line) {
  heartbeat_.heard();
  auto parsed = protocol::parse_message(line);
  if (auto* bad = std::get_if<protocol::Malformed>(&parsed))
    return lost("control-lost", fmt::format("reason=\"malformed line: {}\"", bad->reason));
  const auto& message = std::get<protocol::Message>(parsed);

  switch (state_) {
    case ControlState::awaiting_challenge:
      return on_challenge(message);
    case ControlState::awaiting_auth_ok:
      return on_auth_ok(message);
    case ControlState::awaiting_answer:
      return on_answer(message);
    default:
      break;
  }

  switch (message.verb) {
    case protocol::Verb::new_conn:
      events_.on_new(message.id, message.service);
      break;
    case protocol::Verb::serving:
      services_.on_serving(message.service);
      break;
    case protocol::Verb::refused:
      services_.on_refused(message.service, message.word);
      break;
    case protocol::Verb::close_conn:
      events_.on_close(message.id);
      break;
    case protocol::Verb::park:
      events_.on_park(message.id);
      break;
    case protocol::Verb::ping:
      connection_->send(protocol::pong(message.word));
      break;
    case protocol::Verb::pong:
      break;
    case protocol::Verb::unknown:
      TLOG_DEBUG("event=control-ignored verb={}", message.word);
      break;
    default:
      lost("control-lost", fmt::format("reason=\"unexpected line: {}\"", log::escaped(line)));
  }
}

void ControlConnection::on_challenge(const protocol::Message& message) {
  if (message.verb == protocol::Verb::err)
    return lost("control-refused",
                fmt::format("code={} text=\"{}\"", message.word, log::escaped(message.text)));
  // A server without a token skips the challenge: it could be anyone, so nothing goes through it.
  if (message.verb == protocol::Verb::ok)
    return lost("auth-failed",
                "reason=server-without-auth detail=\"the server does not ask for a token; check "
                "that it runs with --token-file\"");
  if (message.verb != protocol::Verb::auth_challenge)
    return lost("control-lost", "reason=\"server did not answer the hello\"");
  auth::Transcript transcript{message.nonce, auth::new_nonce(), auth_.name, binding_};
  auto proof = auth::client_proof(auth_.token, transcript);
  expected_server_proof_ = auth::server_proof(auth_.token, transcript);
  pending_key_ = auth::session_key(auth_.token, transcript);
  move_to(ControlState::awaiting_auth_ok);
  connection_->send(
      protocol::auth_proof(auth_.name, transcript.client_nonce, crypto::to_hex(proof)));
}

void ControlConnection::on_auth_ok(const protocol::Message& message) {
  if (message.verb == protocol::Verb::err)
    return lost("control-refused",
                fmt::format("code={} text=\"{}\"", message.word, log::escaped(message.text)));
  if (message.verb != protocol::Verb::auth_ok)
    return lost("control-lost", "reason=\"server did not answer the proof\"");
  // A server that cannot prove it holds the token is not ours, whatever else it says.
  if (!auth::proof_matches(expected_server_proof_, message.proof))
    return lost("auth-failed",
                "reason=server-proof-mismatch detail=\"the server does not hold our token: a "
                "different token, or not our server\"");
  // Data lines prove themselves with the new key from now on; until now, lines for the last
  // session's ids still carried its key, which the server recognises as late rather than forged.
  session_key_ = pending_key_;
  move_to(ControlState::awaiting_answer);
}

void ControlConnection::on_answer(const protocol::Message& message) {
  if (message.verb == protocol::Verb::ok) {
    move_to(ControlState::online);
    stable_.arm(kStableAfter);
    TLOG_INFO("event=online server={} client={} auth={}", server_name_, auth_.name,
              auth_.token.empty() ? "none" : "token");
    if (auto serve = services_.on_ok(message.features, server_name_); !serve.empty())
      connection_->send(serve);
    const bool pooled =
        pool_size_ > 0 && std::find(message.features.begin(), message.features.end(),
                                    protocol::kPoolFeature) != message.features.end();
    if (pooled) connection_->send(protocol::pool(pool_size_));
    return events_.on_online();
  }
  if (message.verb == protocol::Verb::err)
    return lost("control-refused",
                fmt::format("code={} text=\"{}\"", message.word, log::escaped(message.text)));
  lost("control-lost", "reason=\"server did not answer the hello\"");
}

std::string ControlConnection::data_hello(const ConnId& id) const {
  if (!session_key_) return protocol::data_hello(id);
  return protocol::data_hello(id, crypto::to_hex(auth::data_proof(*session_key_, id)));
}

void ControlConnection::send_line(std::string_view line) {
  if (state_ == ControlState::online) connection_->send(line);
}

void ControlConnection::lost(std::string_view event, std::string_view fields) {
  if (connection_) {
    connection_->close();
    // Possibly inside the connection's own callback (event_loop.hpp, the lifetime rule).
    loop_.destroy_later(std::move(connection_));
  }
  stable_.cancel();
  heartbeat_.stop();
  services_.on_lost();
  if (events_.on_offline) events_.on_offline();
  if (state_ == ControlState::stopped) return;
  move_to(ControlState::backing_off);
  auto delay = backoff_.next();
  // One line per failed attempt, carrying the next delay: never a flood, always the reason.
  TLOG_WARN("event={} server={} {} retry_in_ms={}", event, server_name_, fields, delay.count());
  retry_.arm(delay);
}

void ControlConnection::stop() {
  move_to(ControlState::stopped);
  services_.on_lost();
  if (events_.on_offline) events_.on_offline();
  retry_.cancel();
  stable_.cancel();
  heartbeat_.stop();
  // Retired objects stay alive until the batch ends: quiet them now so that nothing they had
  // pending (a connect completing in this batch) can bring the session back.
  if (connector_) connector_->cancel();
  loop_.destroy_later(std::move(connector_));
  if (handshake_) handshake_->cancel();
  loop_.destroy_later(std::move(handshake_));
  if (connection_) connection_->close();
}

}  // namespace tunnel::client
