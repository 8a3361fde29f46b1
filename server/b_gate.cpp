// The B side before a connection is a session or a relay: first line, auth handshake, data proofs.
#include "b_gate.hpp"

#include <algorithm>

#include "tunnel/auth.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/socket.hpp"

namespace tunnel::server {
namespace {

// Writes a short answer on a connection the gate is about to hand on or drop. The socket is fresh
// and its send buffer empty, so a line always fits; a failure shows up on the next read.
void answer(const Fd& fd, const std::string& line) {
  send_nosignal(fd.get(), line.data(), line.size());
}

}  // namespace

BGate::BGate(EventLoop& loop, Duration handshake_timeout, std::string token,
             SessionArbiter& arbiter, ConnectionTable& table, ServerCounters& counters)
    : loop_(loop),
      handshake_timeout_(handshake_timeout),
      token_(std::move(token)),
      arbiter_(arbiter),
      table_(table),
      counters_(counters) {
  crypto::random_bytes(unknown_key_);
}

BGate::~BGate() = default;

void BGate::admit(Fd fd) {
  if (handshakes_.size() >= kMaxInProgress)
    return refuse(FailureReason::bad_handshake, "too-many-handshakes", "?");
  read_line(std::move(fd), [this](Fd connection, std::string_view line, std::string peer) {
    on_first_line(std::move(connection), line, std::move(peer));
  });
}

void BGate::close() {
  for (auto& [key, handshake] : handshakes_) {
    handshake->cancel();
    loop_.destroy_later(std::move(handshake));
  }
  handshakes_.clear();
}

void BGate::read_line(Fd fd, OnLine next) {
  uint64_t key = ++handshakes_started_;
  handshakes_.emplace(
      key, std::make_unique<BHandshake>(
               loop_, std::move(fd), handshake_timeout_,
               [this, key, next = std::move(next)](Fd connection, std::string_view line) {
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

void BGate::on_first_line(Fd fd, std::string_view line, std::string peer) {
  auto hello = protocol::parse_hello(line);
  if (auto* control = std::get_if<protocol::ControlHello>(&hello))
    return on_control_hello(std::move(fd), control->features, std::move(peer));
  if (auto* data = std::get_if<protocol::DataHello>(&hello))
    return on_data_hello(std::move(fd), data->id, data->proof, peer);
  const auto& bad = std::get<protocol::Malformed>(hello);
  // A garbled data line is closed silently like any refused id; a wrong control line is told why.
  if (bad.claimed != protocol::HelloKind::data) answer(fd, protocol::err(bad.code, bad.reason));
  refuse(FailureReason::bad_handshake, bad.code, peer);
}

void BGate::on_control_hello(Fd fd, const std::vector<std::string>& features, std::string peer) {
  // Without a token the core protocol: the features offered are not looked at, OK lists none.
  if (token_.empty()) return arbiter_.offer(std::move(fd), std::move(peer));
  if (std::find(features.begin(), features.end(), auth::kFeature) == features.end())
    return refuse_auth(fd, "control", "no-auth",
                       "this server requires a token (tunnel-client --token-file)", peer);
  std::string nonce = auth::new_nonce();
  answer(fd, protocol::auth_challenge(nonce));
  read_line(std::move(fd),
            [this, nonce](Fd connection, std::string_view line, std::string connection_peer) {
              on_auth_proof(std::move(connection), line, std::move(connection_peer), nonce);
            });
}

void BGate::on_auth_proof(Fd fd, std::string_view line, std::string peer,
                          const std::string& nonce) {
  auto parsed = protocol::parse_message(line);
  auto* message = std::get_if<protocol::Message>(&parsed);
  if (!message || message->verb != protocol::Verb::auth_proof)
    return refuse_auth(fd, "control", "malformed", "expected AUTH-PROOF <name> <nonce> <proof>",
                       peer);
  auth::Transcript transcript{nonce, message->nonce, message->word, ""};
  // Everything a success needs is computed before the comparison: a wrong proof costs the same.
  auto expected = auth::client_proof(token_, transcript);
  auto ours = auth::server_proof(token_, transcript);
  ClientIdentity identity{message->word, auth::session_key(token_, transcript)};
  if (!auth::proof_matches(expected, message->proof))
    return refuse_auth(fd, "control", "bad-proof", "authentication failed", peer, identity.name);
  answer(fd, protocol::auth_ok(crypto::to_hex(ours)));
  arbiter_.offer(std::move(fd), std::move(peer), std::move(identity));
}

void BGate::on_data_hello(Fd fd, const ConnId& id, std::string_view proof,
                          const std::string& peer) {
  if (token_.empty()) {
    if (!proof.empty()) return refuse(FailureReason::bad_handshake, "unexpected-proof", peer);
  } else {
    if (proof.empty())
      return refuse_auth(fd, "data", "no-proof", "this server requires a data proof", peer);
    // Both keys are always tried, an unknown one standing in for a missing one: the work does not
    // depend on which (if any) matches.
    const auth::SessionKey* current = arbiter_.current_key();
    const auth::SessionKey* previous = arbiter_.previous_key();
    bool by_current =
        auth::proof_matches(auth::data_proof(current ? *current : unknown_key_, id), proof) &&
        current;
    bool by_previous =
        auth::proof_matches(auth::data_proof(previous ? *previous : unknown_key_, id), proof) &&
        previous;
    // A late line of the session before this one: its ids are void, but it is no attack.
    if (!by_current && by_previous)
      return refuse(FailureReason::unknown_id, "earlier-session", peer);
    if (!by_current) return refuse_auth(fd, "data", "bad-proof", "authentication failed", peer);
  }
  if (!table_.claim(id, std::move(fd)))
    return refuse(FailureReason::unknown_id, "unknown-id", peer);
  ++counters_.paired;
}

void BGate::refuse(FailureReason counted_as, std::string_view detail, std::string_view peer) {
  ++counters_.failed[static_cast<size_t>(counted_as)];
  uint64_t suppressed = 0;
  if (refusal_log_.allow(suppressed))
    TLOG_INFO("event=b-refused reason={} peer={} suppressed={}", detail, peer, suppressed);
}

void BGate::refuse_auth(const Fd& fd, std::string_view stage, std::string_view reason,
                        std::string_view text, std::string_view peer, std::string_view name) {
  answer(fd, protocol::err(protocol::kErrAuth, text));
  ++counters_.failed[static_cast<size_t>(FailureReason::auth_refused)];
  ++(stage == "control" ? counters_.auth_failures_control : counters_.auth_failures_data);
  uint64_t suppressed = 0;
  // The name is what the peer claimed (the grammar keeps it to a safe alphabet); never a proof.
  if (auth_log_.allow(suppressed))
    TLOG_WARN("event=auth-refused stage={} reason={} peer={} client={} suppressed={}", stage,
              reason, peer, name.empty() ? "-" : name, suppressed);
}

}  // namespace tunnel::server
