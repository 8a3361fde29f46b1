// Port B's gate: every connection on B from accept until it is a client's session (handed to
// Sessions) or a claimed data connection (handed to the connection table). Runs the TLS
// handshake when TLS is on, reads the first line, runs the auth extension's control handshake
// when the server has a token, checks data proofs, and refuses everything else (counted, logged
// with a rate limit).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "b_handshake.hpp"
#include "connection_table.hpp"
#include "server_metrics.hpp"
#include "sessions.hpp"
#include "tokens.hpp"
#include "tunnel/auth.hpp"
#include "tunnel/log.hpp"
#include "tunnel/tls_context.hpp"
#include "tunnel/tls_handshake.hpp"

namespace tunnel::server {

class BGate {
 public:
  // `tokens` (read at each hello: a reload may replace them) without any: no auth (the core
  // protocol); `tls` null: plain TCP. `counters` is where refusals and pairings count.
  // `pool_max`: the most pooled connections one session may keep (0: the pool is not offered).
  BGate(EventLoop& loop, Duration handshake_timeout, const Tokens& tokens,
        std::shared_ptr<tls::ServerContext> tls, Sessions& sessions, ConnectionTable& table,
        ServerCounters& counters, size_t pool_max = 0);
  ~BGate();

  // A connection was accepted on B.
  void admit(Fd fd);
  // Shutting down: every connection still at the gate is closed.
  void close();

  size_t in_progress() const { return handshakes_.size() + tls_handshakes_.size(); }

  // Connections at the gate at once; a flood of silent B connections beyond this is shed.
  static constexpr size_t kMaxInProgress = 4096;

 private:
  void on_tls_done(uint64_t handshake, Fd fd, std::unique_ptr<tls::Stream> stream);
  void on_tls_failed(uint64_t handshake, Fd fd, tls::Failure failure, std::string_view detail);
  // Reads one line on `socket` within the handshake timeout, then calls `next` with it.
  using OnLine = std::function<void(StreamSocket socket, std::string_view line, std::string peer)>;
  void read_line(StreamSocket socket, OnLine next);
  OnLine first_line_reader();
  void on_handshake_failed(uint64_t handshake, HandshakeFailure failure, std::string_view peer);
  void finish_handshake(uint64_t handshake);

  void on_first_line(StreamSocket socket, std::string_view line, std::string peer);
  void on_control_hello(StreamSocket socket, const std::vector<std::string>& features,
                        std::string peer);
  void on_auth_proof(StreamSocket socket, std::string_view line, std::string peer,
                     const std::string& nonce, HelloFeatures features);
  void on_data_hello(StreamSocket socket, const ConnId& id, std::string_view proof,
                     const std::string& peer);

  // Counts a refused B connection and logs it (rate-limited); `detail` is the precise word.
  void refuse(FailureReason counted_as, std::string_view detail, std::string_view peer);
  // Answers `ERR auth <text>`, counts and logs an auth refusal.
  void refuse_auth(StreamSocket& socket, std::string_view stage, std::string_view reason,
                   std::string_view text, std::string_view peer, std::string_view name = "");

  EventLoop& loop_;
  Duration handshake_timeout_;
  const Tokens& tokens_;
  std::shared_ptr<tls::ServerContext> tls_;
  Sessions& sessions_;
  ConnectionTable& table_;
  ServerCounters& counters_;
  size_t pool_max_;
  std::unordered_map<uint64_t, std::unique_ptr<BHandshake>> handshakes_;
  std::unordered_map<uint64_t, std::unique_ptr<tls::Handshake>> tls_handshakes_;
  std::unordered_map<uint64_t, std::string> tls_peers_;  // for the log, taken while connected
  uint64_t handshakes_started_ = 0;
  log::RateLimit tls_log_;
  auth::SessionKey unknown_key_{};  // random: stands in for a missing session key
  std::string unknown_token_;       // random: stands in for the token of a name nobody has
  log::RateLimit refusal_log_;
  log::RateLimit auth_log_;
};

}  // namespace tunnel::server
