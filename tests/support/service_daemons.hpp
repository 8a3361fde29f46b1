// The daemons with several services (docs/PROTOCOL.md, "Services"): tunnel-server from a TOML
// config file with [service.NAME] and [client.NAME] tables, each service's port read back from its
// `event=listening side=a ... service=NAME` line; tunnel-client serving named services under its
// own name and token.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "support/daemons.hpp"
#include "support/process.hpp"

namespace tunnel::test {

class ServicesServer {
 public:
  // Starts `tunnel-server --config <config_file> --listen-b 127.0.0.1:0 --metrics-listen
  // 127.0.0.1:0 --log-level debug` followed by `extra` (which may set its own --log-level: under a
  // load of connections, debug lines come faster than a test reads them, and a daemon drops lines
  // rather than block, `event=log-dropped`), and waits for `event=ready`.
  explicit ServicesServer(const std::string& config_file, std::vector<std::string> extra = {});

  uint16_t port_b() const { return port_b_; }
  uint16_t metrics_port() const { return metrics_port_; }
  // The port of `service` from its last `event=listening side=a` line (waiting for one at index
  // >= from).
  uint16_t port(const std::string& service, size_t from = 0) const;
  // SIGHUP (reload the config file); returns the log mark from before, to wait from.
  size_t reload();

  Process& process() { return process_; }
  const LineLog& log() const { return process_.log(); }
  pid_t pid() const { return process_.pid(); }
  size_t mark() const { return process_.log().size(); }
  std::string wait_for_line(const Match& match, Millis timeout, size_t from = 0) const {
    return process_.wait_for_line(match, timeout, from);
  }

 private:
  Process process_;
  uint16_t port_b_ = 0;
  uint16_t metrics_port_ = 0;
};

// service name -> target address ("127.0.0.1:PORT")
using ServiceTargets = std::vector<std::pair<std::string, std::string>>;

class ServicesClient {
 public:
  // Starts `tunnel-client --server 127.0.0.1:<port_b> --name <name> --token-file <token_file>
  // --service NAME=TARGET ... --log-level debug` followed by `extra` (which may set its own
  // --log-level). It does not wait.
  ServicesClient(uint16_t port_b, const std::string& name, const std::string& token_file,
                 const ServiceTargets& services, std::vector<std::string> extra = {});

  const std::string& name() const { return name_; }
  Process& process() { return process_; }
  const LineLog& log() const { return process_.log(); }
  pid_t pid() const { return process_.pid(); }
  size_t mark() const { return process_.log().size(); }
  std::string wait_for_line(const Match& match, Millis timeout, size_t from = 0) const {
    return process_.wait_for_line(match, timeout, from);
  }

 private:
  std::string name_;
  Process process_;
};

// The server's `event=service-serving client=<client> session=N service=<service>` line.
Match serving(const std::string& client, const std::string& service);
// The server's `event=service-refused client=<client> ... service=<service> reason=<reason>`.
Match refused(const std::string& client, const std::string& service, const std::string& reason);

// Config file tables: `[client.NAME]` with its token file, and `[service.NAME]` listening on
// `listen` for `clients` (none: the key is left out, so any client may serve it).
std::string client_table(const std::string& name, const std::string& token_file);
std::string service_table(const std::string& name, const std::vector<std::string>& clients,
                          const std::string& listen = "127.0.0.1:0");

// Writes `text` to `path` (replacing it, mode 0600), as a config file or its new version.
void write_text(const std::string& path, const std::string& text);

}  // namespace tunnel::test
