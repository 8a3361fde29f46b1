// The `auth` extension (docs/PROTOCOL.md, "Authentication") spoken by the test itself: a token
// file in a private directory, a fake control client that holds the token and so knows its session
// key, the data proofs it can make, and reading the daemons' /metrics. Unlike the rest of the
// support library this needs libtunnel (tunnel::auth, tunnel::crypto): the computations are the
// ones the unit tests check against the worked example of PROTOCOL.md.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/process.hpp"
#include "support/socket_io.hpp"
#include "support/wait.hpp"
#include "tunnel/auth.hpp"

namespace tunnel::test {

// A token as `head -c 32 /dev/urandom | base64` makes it: 44 characters (256 bits), no newline.
std::string new_token();

// A fresh private directory (mode 0700) under $TMPDIR or /tmp, removed with its contents.
class TokenDir {
 public:
  TokenDir();
  ~TokenDir();
  TokenDir(const TokenDir&) = delete;
  TokenDir& operator=(const TokenDir&) = delete;

  const std::string& path() const { return path_; }
  // Writes `token` and a newline (as `base64 > FILE` does) to path()/name with exactly `mode`;
  // returns the file's full path.
  std::string write(const std::string& name, const std::string& token, mode_t mode = 0600) const;

 private:
  std::string path_;
};

// 64 lowercase hex digits from the OS random source: a nonce, or a proof that matches nothing.
std::string random_hex64();

// The data proof for `id` (32 hex digits) under `key`, as 64 lowercase hex digits.
std::string data_proof_hex(const auth::SessionKey& key, const std::string& id);

// The words of a line split on single spaces.
std::vector<std::string> words(const std::string& line);

// What a control handshake with `auth` showed, seen from the client side.
struct AuthExchange {
  std::string challenge;     // the server's answer to the hello, as received (or how it ended)
  std::string server_nonce;  // from AUTH-CHALLENGE, when it was one
  std::string client_nonce;
  std::string proof_line;  // the AUTH-PROOF line sent, without its newline (empty: none sent)
  std::string auth_ok;  // the line after AUTH-PROOF: `AUTH-OK <proof>`, `ERR ...`, or how it ended
  bool server_proof_valid = false;  // AUTH-OK carried the server proof of this transcript
  std::string answer;               // the final line: `OK auth`, `ERR busy ...`, or how it ended
  auth::SessionKey key{};           // the session key of this transcript
};

// A hand-written control connection that authenticates with the token: it sends
// `TUNNEL/1 CONTROL auth`, answers the challenge with a right proof for `name`, checks the server's
// AUTH-OK proof, then (when the final answer starts with "OK") answers `PING t` with `PONG t` and
// collects NEW/CLOSE ids on a thread of its own, like FakeControl.
class AuthControl {
 public:
  AuthControl(uint16_t port_b, std::string token, std::string name = "fake-client",
              Millis timeout = Millis(5000));
  ~AuthControl();
  AuthControl(const AuthControl&) = delete;
  AuthControl& operator=(const AuthControl&) = delete;

  const AuthExchange& exchange() const { return exchange_; }
  const std::string& answer() const { return exchange_.answer; }
  // The hello was answered `OK auth` after a valid AUTH-OK.
  bool online() const;

  // `TUNNEL/1 DATA <id> <proof>` with this session's proof for `id`, without the newline.
  std::string data_line(const std::string& id) const;
  std::string data_proof(const std::string& id) const;

  // The next `NEW <id>` announced, in order; throws WaitTimeout when none comes.
  std::string wait_new(Millis timeout);
  std::vector<std::string> closes() const;
  std::vector<std::string> other_lines() const;
  size_t pings_seen() const { return pings_.load(); }
  // True once the server closed (or reset) the control connection.
  bool closed() const { return closed_.load(); }
  void send_line(const std::string& line);
  // Ends the session from this side: stops the thread and closes the socket.
  void close();

 private:
  void run();

  Socket socket_;
  std::string name_;
  AuthExchange exchange_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> closed_{false};
  std::atomic<size_t> pings_{0};
  mutable std::mutex mutex_;
  std::condition_variable new_arrived_;
  std::deque<std::string> news_;
  std::vector<std::string> closes_;
  std::vector<std::string> others_;
  std::mutex send_mutex_;
  std::thread thread_;
};

// Accepts one connection on `listener` within `timeout`; throws WaitTimeout otherwise.
Socket accept_within(const Socket& listener, Millis timeout);

// The port of a daemon's `event=listening side=<side> addr=127.0.0.1:PORT` line.
uint16_t listening_port(const Process& process, const std::string& side,
                        Millis timeout = Millis(10000));

// GET /metrics on 127.0.0.1:port; throws unless the answer is 200.
std::string scrape_metrics(uint16_t port);
// The value of the sample `series` (`name` or `name{label="v"}` exactly as written), if present.
std::optional<double> sample(const std::string& exposition, const std::string& series);
// Scrapes and returns the value of `series`; throws naming it (with the exposition) when absent.
double metric(uint16_t port, const std::string& series);

}  // namespace tunnel::test
