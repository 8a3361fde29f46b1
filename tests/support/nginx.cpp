// Starting Debian's nginx in the foreground on a private directory, and reading its access log.
#include "support/nginx.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "support/socket_io.hpp"

namespace tunnel::test {
namespace {

constexpr const char* kNginx = "/usr/sbin/nginx";
// nginx under a loaded machine starts in well under a second; this is the bound, not the wait.
constexpr Millis kReadyTimeout{10000};
// A port found free can be taken by someone else before nginx binds it: try a few.
constexpr int kPortAttempts = 5;

std::string make_private_dir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      std::string(base != nullptr && base[0] != '\0' ? base : "/tmp") + "/tunnel-nginx-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr)
    throw std::runtime_error("mkdtemp " + pattern + ": " + std::strerror(errno));
  return pattern;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Every path nginx would otherwise take from its build (/var/lib/nginx, /run/nginx.pid) is
// inside `dir`, so it runs as any user beside any other nginx.
std::string config(const std::string& dir, uint16_t port, bool proxy_protocol) {
  std::string c;
  c += "daemon off;\nmaster_process off;\n";
  c += "pid " + dir + "/nginx.pid;\n";
  c += "error_log " + dir + "/error.log info;\n";
  c += "events { worker_connections 256; }\n";
  c += "http {\n";
  c += "  log_format origin '$proxy_protocol_addr $proxy_protocol_port $remote_addr $remote_port "
       "\"$request\" $status';\n";
  for (const char* temp : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"})
    c += std::string("  ") + temp + "_temp_path " + dir + "/" + temp + ";\n";
  c += "  server {\n";
  c += "    listen 127.0.0.1:" + std::to_string(port) + (proxy_protocol ? " proxy_protocol" : "") +
       ";\n";
  c += "    access_log " + dir + "/access.log origin;\n";
  c += "    location / { default_type text/plain; return 200 \"hello from nginx\\n\"; }\n";
  c += "  }\n}\n";
  return c;
}

uint16_t free_port() {
  Socket probe = listen_tcp(0);
  return local_port(probe);
}

// "a b c d \"GET / HTTP/1.1\" 200" into its fields; an unexpected shape keeps only `line`.
NginxRequest parse_request(const std::string& line) {
  NginxRequest r;
  r.line = line;
  const auto open = line.find('"');
  const auto close = line.rfind('"');
  if (open == std::string::npos || close <= open) return r;
  std::istringstream head(line.substr(0, open));
  head >> r.proxy_address >> r.proxy_port >> r.remote_address >> r.remote_port;
  r.request = line.substr(open + 1, close - open - 1);
  std::istringstream tail(line.substr(close + 1));
  tail >> r.status;
  return r;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

Nginx::Nginx(Options options) {
  if (::access(kNginx, X_OK) != 0)
    throw std::runtime_error(
        std::string(kNginx) +
        " is missing: run scripts/install-deps.sh --tests (it installs nginx)");
  dir_ = make_private_dir();
  try {
    for (int attempt = 1; attempt <= kPortAttempts; ++attempt) {
      if (try_start(options)) return;
    }
    throw std::runtime_error("nginx: every port tried was taken before nginx could bind it\n" +
                             error_log());
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
    throw;
  }
}

bool Nginx::try_start(const Options& options) {
  port_ = free_port();
  const std::string conf = dir_ + "/nginx.conf";
  std::filesystem::remove(dir_ + "/error.log");
  {
    std::ofstream out(conf, std::ios::trunc);
    out << config(dir_, port_, options.proxy_protocol);
    if (!out) throw std::runtime_error("cannot write " + conf);
  }
  process_ = std::make_unique<Process>(
      "nginx",
      std::vector<std::string>{kNginx, "-p", dir_ + "/", "-c", conf, "-e", dir_ + "/error.log"});
  // nginx writes its pid file after binding its listener: with our pid in it, the port is nginx's
  // and not some other process's that took it first.
  const std::string pid_file = dir_ + "/nginx.pid";
  const std::string our_pid = std::to_string(process_->pid());
  bool exited = false;
  const bool ready = poll_until(
      [&] {
        if (!process_->running()) return exited = true;
        return read_file(pid_file).starts_with(our_pid) &&
               probe_connect("127.0.0.1", port_, Millis(500)) == Reach::connected;
      },
      kReadyTimeout);
  if (ready && !exited) return true;
  const std::string errors = error_log();
  process_.reset();
  if (exited && errors.find("Address already in use") != std::string::npos) return false;
  throw std::runtime_error("nginx did not start on 127.0.0.1:" + std::to_string(port_) + " (" +
                           (exited ? "it exited" : "its port never accepted") +
                           "); its error log:\n" + errors);
}

Nginx::~Nginx() {
  if (process_ && process_->running()) {
    try {
      process_->signal(SIGQUIT);  // graceful: finishes requests in flight
      process_->wait_exit(Millis(5000));
    } catch (...) {
      // Process's destructor kills and reaps what did not stop.
    }
  }
  process_.reset();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string Nginx::access_log() const {
  return read_file(dir_ + "/access.log");
}

std::string Nginx::error_log() const {
  return read_file(dir_ + "/error.log");
}

size_t Nginx::requests() const {
  return lines_of(access_log()).size();
}

NginxRequest Nginx::wait_for_request(size_t index, Millis timeout) const {
  std::vector<std::string> lines;
  // nginx writes its access log line when the request ends; no event announces it to the test.
  if (!poll_until(
          [&] {
            lines = lines_of(access_log());
            return lines.size() > index;
          },
          timeout)) {
    throw WaitTimeout("nginx logged " + std::to_string(lines.size()) + " requests, not request #" +
                      std::to_string(index + 1) + ", within " + std::to_string(timeout.count()) +
                      " ms\naccess log:\n" + access_log() + "error log:\n" + error_log());
  }
  return parse_request(lines[index]);
}

}  // namespace tunnel::test
