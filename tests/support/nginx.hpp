// Debian's nginx as a target that logs where each request came from: an HTTP server on an
// ephemeral 127.0.0.1 port, with or without `proxy_protocol` on its listener, that answers every
// request with a fixed body and writes one access-log line per request with the PROXY header's
// address and the connection's own. Everything it writes lives in a private directory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "support/process.hpp"
#include "support/wait.hpp"

namespace tunnel::test {

// One request as nginx logged it. Fields nginx had no value for read "-".
struct NginxRequest {
  std::string proxy_address;   // $proxy_protocol_addr: the source in the PROXY header
  std::string proxy_port;      // $proxy_protocol_port
  std::string remote_address;  // $remote_addr: the TCP peer (no realip module configured)
  std::string remote_port;     // $remote_port
  std::string request;         // "GET / HTTP/1.1"
  std::string status;          // "200"
  std::string line;            // the whole line, for messages
};

class Nginx {
 public:
  struct Options {
    bool proxy_protocol = true;  // the listener requires a PROXY header (v1 or v2)
  };

  // What every request gets back as its body.
  static constexpr const char* kBody = "hello from nginx\n";

  // Starts nginx and waits until its port accepts connections. Throws with nginx's error log when
  // it does not start, and with a pointer to scripts/install-deps.sh --tests when it is missing.
  explicit Nginx(Options options);
  Nginx() : Nginx(Options{}) {}
  // Stops nginx (SIGQUIT, then SIGKILL if it lingers) and removes its directory.
  ~Nginx();
  Nginx(const Nginx&) = delete;
  Nginx& operator=(const Nginx&) = delete;

  uint16_t port() const { return port_; }
  // The request logged at position `index` (0: the first), waiting for it up to `timeout`; throws
  // WaitTimeout quoting the access and error logs.
  NginxRequest wait_for_request(size_t index, Millis timeout = Millis(5000)) const;
  // Requests logged so far.
  size_t requests() const;
  std::string access_log() const;
  std::string error_log() const;

 private:
  // One attempt on a port found free a moment ago; false when another process took it meanwhile.
  bool try_start(const Options& options);

  std::string dir_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> process_;
};

}  // namespace tunnel::test
