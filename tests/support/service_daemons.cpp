// Starting the daemons with several services, and reading their ports back.
#include "support/service_daemons.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace tunnel::test {

namespace {

uint16_t port_of(const std::string& line) {
  const auto addr = field(line, "addr");
  if (!addr) throw std::runtime_error("no addr= in: " + line);
  const int port = std::stoi(addr->substr(addr->rfind(':') + 1));
  if (port <= 0 || port > 65535) throw std::runtime_error("bad port in: " + line);
  return static_cast<uint16_t>(port);
}

// `--log-level debug` unless `extra` sets its own, then `extra`.
void append_extra(std::vector<std::string>& argv, const std::vector<std::string>& extra) {
  if (std::find(extra.begin(), extra.end(), "--log-level") == extra.end())
    argv.insert(argv.end(), {"--log-level", "debug"});
  argv.insert(argv.end(), extra.begin(), extra.end());
}

std::vector<std::string> server_argv(const std::string& config_file,
                                     const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {server_binary(), "--config",         config_file,  "--listen-b",
                                   "127.0.0.1:0",   "--metrics-listen", "127.0.0.1:0"};
  append_extra(argv, extra);
  return argv;
}

std::vector<std::string> client_argv(uint16_t port_b, const std::string& name,
                                     const std::string& token_file, const ServiceTargets& services,
                                     const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {client_binary(), "--server", loopback(port_b), "--name", name,
                                   "--token-file",  token_file};
  for (const auto& [service, target] : services)
    argv.insert(argv.end(), {"--service", service + "=" + target});
  append_extra(argv, extra);
  return argv;
}

}  // namespace

ServicesServer::ServicesServer(const std::string& config_file, std::vector<std::string> extra)
    : process_("tunnel-server", server_argv(config_file, extra)) {
  process_.wait_for_line("event=ready", kStartTimeout);
  port_b_ = port_of(process_.wait_for_line(
      Match::regex("event=listening side=b addr=127\\.0\\.0\\.1:[0-9]+"), kStartTimeout));
  metrics_port_ = port_of(process_.wait_for_line(
      Match::regex("event=listening side=metrics addr=127\\.0\\.0\\.1:[0-9]+"), kStartTimeout));
}

uint16_t ServicesServer::port(const std::string& service, size_t from) const {
  const Match match =
      Match::regex("event=listening side=a addr=[^ ]+ service=" + service + "( |$)");
  process_.wait_for_line(match, kStartTimeout, from);
  const auto lines = process_.log().lines();
  for (size_t i = lines.size(); i-- > from;)
    if (match(lines[i].text)) return port_of(lines[i].text);
  throw std::logic_error("the listening line of " + service + " vanished");
}

size_t ServicesServer::reload() {
  const size_t from = mark();
  process_.signal(SIGHUP);
  return from;
}

ServicesClient::ServicesClient(uint16_t port_b, const std::string& name,
                               const std::string& token_file, const ServiceTargets& services,
                               std::vector<std::string> extra)
    : name_(name),
      process_("tunnel-client " + name, client_argv(port_b, name, token_file, services, extra)) {}

Match serving(const std::string& client, const std::string& service) {
  return Match::regex("event=service-serving client=" + client +
                      " session=[0-9]+ service=" + service + " ");
}

Match refused(const std::string& client, const std::string& service, const std::string& reason) {
  return Match::regex("event=service-refused client=" + client +
                      " session=[0-9]+ service=" + service + " reason=" + reason + "( |$)");
}

std::string client_table(const std::string& name, const std::string& token_file) {
  return "[client." + name + "]\ntoken-file = \"" + token_file + "\"\n";
}

std::string service_table(const std::string& name, const std::vector<std::string>& clients,
                          const std::string& listen) {
  std::string table = "[service." + name + "]\nlisten = \"" + listen + "\"\n";
  if (clients.empty()) return table;
  table += "clients = [";
  for (size_t i = 0; i < clients.size(); ++i) table += (i == 0 ? "\"" : ", \"") + clients[i] + "\"";
  return table + "]\n";
}

void write_text(const std::string& path, const std::string& text) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) throw std::runtime_error("cannot write " + path);
  }
  if (::chmod(path.c_str(), 0600) != 0)
    throw std::runtime_error("chmod " + path + ": " + std::strerror(errno));
}

}  // namespace tunnel::test
