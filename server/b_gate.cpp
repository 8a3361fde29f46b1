// The B side before a connection is a session or a relay: first line, auth handshake, data proofs.
#include "b_gate.hpp"

#include <sys/socket.h>

#include <algorithm>

#include "tunnel/address.hpp"
#include "tunnel/auth.hpp"
#include "tunnel/line_reader.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/socket.hpp"

namespace tunnel::server {
BGate::BGate(EventLoop& loop, Duration handshake_timeout, const Tokens& tokens,
             std::shared_ptr<tls::ServerContext> tls, Sessions& sessions, ConnectionTable& table,
             ServerCounters& counters, size_t pool_max)
    : loop_(loop),
      handshake_timeout_(handshake_timeout),
      tokens_(tokens),
      tls_(std::move(tls)),
      sessions_(sessions),
      table_(table),
      counters_(counters),
      pool_max_(pool_max),
      unknown_token_(auth::new_nonce()) {
  crypto::random_bytes(unknown_key_);
}

BGate::~BGate() = default;

void BGate::admit(Fd fd) {
  if (in_progress() >= kMaxInProgress)
    return refuse(FailureReason::bad_handshake, "too-many-handshakes", "?");
  if (!tls_) return read_line(StreamSocket{std::move(fd), nullptr, {}}, first_line_reader());
  uint64_t key = ++handshakes_started_;
  auto stream = tls_->new_stream(fd.get());
  tls_peers_.emplace(key, peer_address(fd.get()).to_string());
  tls_handshakes_.emplace(
      key, std::make_unique<tls::Handshake>(
               loop_, std::move(fd), std::move(stream), handshake_timeout_,
               [this, key](Fd connection, std::unique_ptr<tls::Stream> established) {
                 on_tls_done(key, std::move(connection), std::move(established));
               },
               [this, key](Fd connection, tls::Failure failure, std::string_view detail) {
                 on_tls_failed(key, std::move(connection), failure, detail);
               }));
}

BGate::OnLine BGate::first_line_reader() {
  return [this](StreamSocket socket, std::string_view line, std::string peer) {
    on_first_line(std::move(socket), line, std::move(peer));
  };
}

void BGate::on_tls_done(uint64_t handshake, Fd fd, std::unique_ptr<tls::Stream> stream) {
  auto it = tls_handshakes_.find(handshake);
  if (it == tls_handshakes_.end()) return;
  // Called from the handshake's own handler (event_loop.hpp, the lifetime rule).
  loop_.destroy_later(std::move(it->second));
  tls_handshakes_.erase(it);
  tls_peers_.erase(handshake);
  read_line(StreamSocket{std::move(fd), std::move(stream), {}}, first_line_reader());
}

void BGate::on_tls_failed(uint64_t handshake, Fd fd, tls::Failure failure,
                          std::string_view detail) {
  auto it = tls_handshakes_.find(handshake);
  if (it != tls_handshakes_.end()) {
    loop_.destroy_later(std::move(it->second));
    tls_handshakes_.erase(it);
  }
  std::string peer = std::move(tls_peers_[handshake]);
  tls_peers_.erase(handshake);
  // What the client sent is read before the close: closing a socket with unread bytes sends a
  // reset, which can overtake what we said last (an alert, or the plain answer below) and leave
  // the client with a bare reset instead of the reason.
  char discarded[kMaxLineLength];
  for (int reads = 0; reads < 16; ++reads)  // bounded: a hello, a certificate, a few records
    if (::recv(fd.get(), discarded, sizeof discarded, MSG_DONTWAIT) <= 0) break;
  // A client speaking plain text gets a plain answer it can show its operator.
  if (failure == tls::Failure::plaintext_hello) {
    auto line =
        protocol::err(protocol::kErrBadRequest,
                      "this port speaks TLS (tunnel-client --tls with --tls-ca or --tls-pin)");
    send_nosignal(fd.get(), line.data(), line.size());
  }
  ::shutdown(fd.get(), SHUT_WR);
  ++counters_.tls_failures[static_cast<size_t>(failure)];
  // A connection that closes before it has said anything is not worth a warning (as without TLS):
  // the client gave up on it, e.g. because its target refused.
  if (failure == tls::Failure::closed) return;
  ++counters_.failed[static_cast<size_t>(failure == tls::Failure::timeout
                                             ? FailureReason::handshake_timeout
                                             : FailureReason::tls_refused)];
  uint64_t suppressed = 0;
  if (tls_log_.allow(suppressed))
    TLOG_WARN("event=tls-refused reason={} peer={} detail=\"{}\" suppressed={}",
              tls::to_string(failure), peer, log::escaped(detail), suppressed);
}

void BGate::close() {
  for (auto& [key, handshake] : handshakes_) {
    handshake->cancel();
    loop_.destroy_later(std::move(handshake));
  }
  handshakes_.clear();
  for (auto& [key, handshake] : tls_handshakes_) {
    handshake->cancel();
    loop_.destroy_later(std::move(handshake));
  }
  tls_handshakes_.clear();
  tls_peers_.clear();
}

void BGate::read_line(StreamSocket socket, OnLine next) {
  uint64_t key = ++handshakes_started_;
  handshakes_.emplace(
      key, std::make_unique<BHandshake>(
               loop_, std::move(socket), handshake_timeout_,
               [this, key, next = std::move(next)](StreamSocket connection, std::string_view line) {
                 auto it = handshakes_.find(key);
                 if (it == handshakes_.end()) return;  // closed: `connection` closes with us
                 std::string peer(it->second->peer());
                 finish_handshake(key);
                 next(std::move(connection), line, std::move(peer));
               },
               [this, key](HandshakeFailure failure, std::string_view peer) {
                 on_handshake_failed(key, failure, peer);
               }));
}

void BGate::finish_handshake(uint64_t handshake) {
  auto it = handshakes_.find(handshake);
  if (it == handshakes_.end()) return;
  // Called from the handshake's own handler (event_loop.hpp, the lifetime rule).
  loop_.destroy_later(std::move(it->second));
  handshakes_.erase(it);
}

void BGate::on_handshake_failed(uint64_t handshake, HandshakeFailure failure,
                                std::string_view peer) {
  switch (failure) {
    case HandshakeFailure::timeout:
      refuse(FailureReason::handshake_timeout, to_string(failure), peer);
      break;
    case HandshakeFailure::line_too_long:
    case HandshakeFailure::reset:
      refuse(FailureReason::bad_handshake, to_string(failure), peer);
      break;
    case HandshakeFailure::closed:
      break;  // a connection that closes before speaking is not worth a warning
  }
  finish_handshake(handshake);
}

void BGate::on_first_line(StreamSocket socket, std::string_view line, std::string peer) {
  auto hello = protocol::parse_hello(line);
  if (auto* control = std::get_if<protocol::ControlHello>(&hello))
    return on_control_hello(std::move(socket), control->features, std::move(peer));
  if (auto* data = std::get_if<protocol::DataHello>(&hello))
    return on_data_hello(std::move(socket), data->id, data->proof, peer);
  const auto& bad = std::get<protocol::Malformed>(hello);
  // A garbled data line is closed silently like any refused id; a wrong control line is told why.
  if (bad.claimed != protocol::HelloKind::data)
    send_at_once(socket, protocol::err(bad.code, bad.reason), true);
  refuse(FailureReason::bad_handshake, bad.code, peer);
}

void BGate::on_control_hello(StreamSocket socket, const std::vector<std::string>& features,
                             std::string peer) {
  auto listed = [&](std::string_view feature) {
    return std::find(features.begin(), features.end(), feature) != features.end();
  };
  HelloFeatures taken_up{listed(protocol::kServicesFeature),
                         listed(protocol::kPoolFeature) ? pool_max_ : 0};
  // Without a token the core protocol, and the extensions listed.
  if (!tokens_.required())
    return sessions_.offer(std::move(socket), std::move(peer), std::nullopt, taken_up);
  if (!listed(auth::kFeature))
    return refuse_auth(socket, "control", "no-auth",
                       "this server requires a token (tunnel-client --token-file)", peer);
  std::string nonce = auth::new_nonce();
  send_at_once(socket, protocol::auth_challenge(nonce));
  read_line(
      std::move(socket), [this, nonce, taken_up](StreamSocket connection, std::string_view line,
                                                 std::string connection_peer) {
        on_auth_proof(std::move(connection), line, std::move(connection_peer), nonce, taken_up);
      });
}

void BGate::on_auth_proof(StreamSocket socket, std::string_view line, std::string peer,
                          const std::string& nonce, HelloFeatures features) {
  auto parsed = protocol::parse_message(line);
  auto* message = std::get_if<protocol::Message>(&parsed);
  if (!message || message->verb != protocol::Verb::auth_proof)
    return refuse_auth(socket, "control", "malformed", "expected AUTH-PROOF <name> <nonce> <proof>",
                       peer);
  // Over TLS the proof covers this very TLS connection (RFC 9266): it is worth nothing on another.
  std::string binding;
  if (socket.tls) {
    auto exporter = socket.tls->exporter();
    if (exporter) binding = crypto::to_hex(*exporter);
  }
  auth::Transcript transcript{nonce, message->nonce, message->word, binding};
  // The name's token; a name nobody has costs the same work with a token nobody knows, so the
  // answer does not tell which names exist.
  const std::string* known = tokens_.of(message->word);
  const std::string& token = known ? *known : unknown_token_;
  // Everything a success needs is computed before the comparison: a wrong proof costs the same.
  auto expected = auth::client_proof(token, transcript);
  auto ours = auth::server_proof(token, transcript);
  ClientIdentity identity{message->word, auth::session_key(token, transcript)};
  if (!auth::proof_matches(expected, message->proof) || !known)
    return refuse_auth(socket, "control", "bad-proof", "authentication failed", peer,
                       identity.name);
  send_at_once(socket, protocol::auth_ok(crypto::to_hex(ours)));
  sessions_.offer(std::move(socket), std::move(peer), std::move(identity), features);
}

void BGate::on_data_hello(StreamSocket socket, const ConnId& id, std::string_view proof,
                          const std::string& peer) {
  // The session the id was told to (NEW, or PARK for a pooled connection): its key is the one the
  // proof must be made with.
  const ClientLink* told = table_.announced_to(id);
  const bool pooled = !told && table_.pools().issued_to(id);
  if (pooled) told = table_.pools().issued_to(id);
  if (!tokens_.required()) {
    if (!proof.empty()) return refuse(FailureReason::bad_handshake, "unexpected-proof", peer);
  } else {
    if (proof.empty())
      return refuse_auth(socket, "data", "no-proof", "this server requires a data proof", peer);
    // An id nobody waits for (never told, already paired, voided with a lost session, expired)
    // has no key to check against: closed without a word, like any refused id. The id is 128
    // random bits: only a party that saw it can name it.
    if (!told) return refuse(FailureReason::unknown_id, "unknown-id", peer);
    const auth::SessionKey* key = told->key();
    if (!auth::proof_matches(auth::data_proof(key ? *key : unknown_key_, id), proof) || !key)
      return refuse_auth(socket, "data", "bad-proof", "authentication failed", peer);
  }
  if (pooled) {
    if (!table_.pools().park(id, std::move(socket)))
      return refuse(FailureReason::unknown_id, "unknown-id", peer);
    return;
  }
  if (!table_.claim(id, std::move(socket)))
    return refuse(FailureReason::unknown_id, "unknown-id", peer);
  ++counters_.paired;
}

void BGate::refuse(FailureReason counted_as, std::string_view detail, std::string_view peer) {
  ++counters_.failed[static_cast<size_t>(counted_as)];
  uint64_t suppressed = 0;
  if (refusal_log_.allow(suppressed))
    TLOG_INFO("event=b-refused reason={} peer={} suppressed={}", detail, peer, suppressed);
}

void BGate::refuse_auth(StreamSocket& socket, std::string_view stage, std::string_view reason,
                        std::string_view text, std::string_view peer, std::string_view name) {
  send_at_once(socket, protocol::err(protocol::kErrAuth, text), true);
  ++counters_.failed[static_cast<size_t>(FailureReason::auth_refused)];
  ++(stage == "control" ? counters_.auth_failures_control : counters_.auth_failures_data);
  uint64_t suppressed = 0;
  // The name is what the peer claimed (the grammar keeps it to a safe alphabet); never a proof.
  if (auth_log_.allow(suppressed))
    TLOG_WARN("event=auth-refused stage={} reason={} peer={} client={} suppressed={}", stage,
              reason, peer, name.empty() ? "-" : name, suppressed);
}

}  // namespace tunnel::server
