// tunnel-server and tunnel-client under test: started with the flags of the contract, the server
// always on 127.0.0.1:0 for A and B with the bound ports read back from its `event=listening`
// lines.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "support/process.hpp"

namespace tunnel::test {

const std::string& server_binary();
const std::string& client_binary();

// How long a daemon gets to start under ASan on a loaded machine.
inline constexpr Millis kStartTimeout{10000};

class Server {
 public:
  // Starts tunnel-server with `--listen-a 127.0.0.1:0 --listen-b 127.0.0.1:0 --log-level debug`
  // followed by `extra` (which may set its own --log-level), and waits for `event=ready`.
  explicit Server(std::vector<std::string> extra = {});

  uint16_t port_a() const { return port_a_; }
  uint16_t port_b() const { return port_b_; }
  Process& process() { return process_; }
  const LineLog& log() const { return process_.log(); }
  pid_t pid() const { return process_.pid(); }
  // The current number of log lines: pass it as `from` to wait only for lines written after now.
  size_t mark() const { return process_.log().size(); }
  std::string wait_for_line(const Match& match, Millis timeout, size_t from = 0) const {
    return process_.wait_for_line(match, timeout, from);
  }

 private:
  Process process_;
  uint16_t port_a_ = 0;
  uint16_t port_b_ = 0;
};

class Client {
 public:
  // Starts tunnel-client with `--server 127.0.0.1:<port_b> --target <target> --log-level debug`
  // followed by `extra`. It does not wait; see wait_online().
  Client(uint16_t port_b, const std::string& target, std::vector<std::string> extra = {},
         const std::string& name = "tunnel-client");

  // Waits for the client's `event=online` (at index >= from).
  void wait_online(Millis timeout = kStartTimeout, size_t from = 0) const;
  Process& process() { return process_; }
  const LineLog& log() const { return process_.log(); }
  pid_t pid() const { return process_.pid(); }
  size_t mark() const { return process_.log().size(); }
  std::string wait_for_line(const Match& match, Millis timeout, size_t from = 0) const {
    return process_.wait_for_line(match, timeout, from);
  }

 private:
  Process process_;
};

// "127.0.0.1:<port>"
std::string loopback(uint16_t port);

// The server's `event=conn-failed conn=XXXXXXXX ... reason=<reason>` line of the contract.
Match conn_failed(const std::string& reason);
// The same for a connection shed at accept, which has no id yet and may carry no conn= field.
Match shed(const std::string& reason);

}  // namespace tunnel::test
