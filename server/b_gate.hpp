// Port B's gate: every connection on B from accept until it is the client's session (handed to
// the session arbiter) or a claimed data connection (handed to the connection table). Reads the
// first line, runs the auth extension's control handshake when the server has a token, checks
// data proofs, and refuses everything else (counted, logged with a rate limit).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "b_handshake.hpp"
#include "connection_table.hpp"
#include "server_metrics.hpp"
#include "session_arbiter.hpp"
#include "tunnel/auth.hpp"
#include "tunnel/log.hpp"

namespace tunnel::server {

class BGate {
 public:
  // `token` empty: no auth (the core protocol). `counters` is where refusals and pairings count.
  BGate(EventLoop& loop, Duration handshake_timeout, std::string token, SessionArbiter& arbiter,
        ConnectionTable& table, ServerCounters& counters);
  ~BGate();

  // A connection was accepted on B.
  void admit(Fd fd);
  // Shutting down: every connection still at the gate is closed.
  void close();

  size_t in_progress() const { return handshakes_.size(); }

  // Connections at the gate at once; a flood of silent B connections beyond this is shed.
  static constexpr size_t kMaxInProgress = 4096;

 private:
  // Reads one line on `fd` within the handshake timeout, then calls `next` with it.
  using OnLine = std::function<void(Fd fd, std::string_view line, std::string peer)>;
  void read_line(Fd fd, OnLine next);
  void on_handshake_failed(uint64_t handshake, HandshakeFailure failure, std::string_view peer);
  void finish_handshake(uint64_t handshake);

  void on_first_line(Fd fd, std::string_view line, std::string peer);
  void on_control_hello(Fd fd, const std::vector<std::string>& features, std::string peer);
  void on_auth_proof(Fd fd, std::string_view line, std::string peer, const std::string& nonce);
  void on_data_hello(Fd fd, const ConnId& id, std::string_view proof, const std::string& peer);

  // Counts a refused B connection and logs it (rate-limited); `detail` is the precise word.
  void refuse(FailureReason counted_as, std::string_view detail, std::string_view peer);
  // Answers `ERR auth <text>`, counts and logs an auth refusal.
  void refuse_auth(const Fd& fd, std::string_view stage, std::string_view reason,
                   std::string_view text, std::string_view peer, std::string_view name = "");

  EventLoop& loop_;
  Duration handshake_timeout_;
  std::string token_;
  SessionArbiter& arbiter_;
  ConnectionTable& table_;
  ServerCounters& counters_;
  std::unordered_map<uint64_t, std::unique_ptr<BHandshake>> handshakes_;
  uint64_t handshakes_started_ = 0;
  auth::SessionKey unknown_key_{};  // random: stands in for a missing session key
  log::RateLimit refusal_log_;
  log::RateLimit auth_log_;
};

}  // namespace tunnel::server
