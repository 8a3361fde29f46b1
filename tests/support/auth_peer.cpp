// The test's own side of the auth extension: token files, an authenticating control client, and
// reading /metrics.
#include "support/auth_peer.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>

#include "tunnel/crypto.hpp"

namespace tunnel::test {

namespace {

std::string base64(const uint8_t* data, size_t size) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < size; i += 3) {
    const uint32_t chunk = (uint32_t{data[i]} << 16) | (i + 1 < size ? data[i + 1] << 8 : 0) |
                           (i + 2 < size ? data[i + 2] : 0);
    out += alphabet[(chunk >> 18) & 63];
    out += alphabet[(chunk >> 12) & 63];
    out += i + 1 < size ? alphabet[(chunk >> 6) & 63] : '=';
    out += i + 2 < size ? alphabet[chunk & 63] : '=';
  }
  return out;
}

std::string line_or_end(const ReadResult& r) {
  return r.end == End::complete ? r.data : "<no line: " + r.describe() + ">";
}

}  // namespace

std::string new_token() {
  std::array<uint8_t, 32> bytes{};
  crypto::random_bytes(bytes);
  return base64(bytes.data(), bytes.size());
}

TokenDir::TokenDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      std::string(base != nullptr && base[0] != '\0' ? base : "/tmp") + "/tunnel-auth-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::runtime_error("mkdtemp " + pattern + ": " + std::strerror(errno));
  }
  path_ = pattern;
}

TokenDir::~TokenDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string TokenDir::write(const std::string& name, const std::string& token, mode_t mode) const {
  const std::string file = path_ + "/" + name;
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out << token << "\n";
    if (!out) throw std::runtime_error("cannot write " + file);
  }
  // Exactly `mode`, whatever the umask made of it.
  if (::chmod(file.c_str(), mode) != 0) {
    throw std::runtime_error("chmod " + file + ": " + std::strerror(errno));
  }
  return file;
}

std::string random_hex64() {
  std::array<uint8_t, 32> bytes{};
  crypto::random_bytes(bytes);
  return crypto::to_hex(bytes);
}

std::string data_proof_hex(const auth::SessionKey& key, const std::string& id) {
  const auto parsed = ConnId::parse(id);
  if (!parsed) throw std::invalid_argument("not an id: " + id);
  return crypto::to_hex(auth::data_proof(key, *parsed));
}

std::vector<std::string> words(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t space = line.find(' ', start);
    out.push_back(line.substr(start, space - start));
    if (space == std::string::npos) return out;
    start = space + 1;
  }
}

AuthControl::AuthControl(uint16_t port_b, std::string token, std::string name, Millis timeout)
    : socket_(connect_tcp(port_b, timeout)), name_(std::move(name)) {
  send_all(socket_, "TUNNEL/1 CONTROL auth\n", timeout);
  const ReadResult challenge = read_line(socket_, timeout, 512);
  exchange_.challenge = line_or_end(challenge);
  const auto challenge_words = words(challenge.data);
  if (challenge.end != End::complete || challenge_words.size() != 2 ||
      challenge_words[0] != "AUTH-CHALLENGE") {
    exchange_.answer = exchange_.challenge;
    return;
  }
  exchange_.server_nonce = challenge_words[1];
  exchange_.client_nonce = auth::new_nonce();
  const auth::Transcript transcript{exchange_.server_nonce, exchange_.client_nonce, name_, ""};
  exchange_.proof_line = "AUTH-PROOF " + name_ + " " + exchange_.client_nonce + " " +
                         crypto::to_hex(auth::client_proof(token, transcript));
  send_all(socket_, exchange_.proof_line + "\n", timeout);

  const ReadResult auth_ok = read_line(socket_, timeout, 512);
  exchange_.auth_ok = line_or_end(auth_ok);
  const auto ok_words = words(auth_ok.data);
  if (auth_ok.end != End::complete || ok_words.size() != 2 || ok_words[0] != "AUTH-OK") {
    exchange_.answer = exchange_.auth_ok;
    return;
  }
  exchange_.server_proof_valid =
      auth::proof_matches(auth::server_proof(token, transcript), ok_words[1]);
  exchange_.key = auth::session_key(token, transcript);
  exchange_.answer = line_or_end(read_line(socket_, timeout, 512));
  if (exchange_.answer.rfind("OK", 0) == 0) {
    thread_ = std::thread([this] { run(); });
  }
}

AuthControl::~AuthControl() {
  close();
}

bool AuthControl::online() const {
  return exchange_.server_proof_valid && exchange_.answer.rfind("OK", 0) == 0;
}

std::string AuthControl::data_proof(const std::string& id) const {
  return data_proof_hex(exchange_.key, id);
}

std::string AuthControl::data_line(const std::string& id) const {
  return "TUNNEL/1 DATA " + id + " " + data_proof(id);
}

void AuthControl::close() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  socket_.close();
}

void AuthControl::run() {
  while (!stop_) {
    ReadResult r = read_line(socket_, Millis(20), 512);
    if (r.end == End::timeout) {
      if (r.data.empty()) continue;
      // Part of a line was consumed: read the rest of it.
      ReadResult rest = read_line(socket_, Millis(5000), 512);
      r.data += rest.data;
      r.end = rest.end;
    }
    if (r.end != End::complete) {
      closed_ = true;
      new_arrived_.notify_all();
      return;
    }
    const std::string& line = r.data;
    if (line.rfind("PING ", 0) == 0) {
      ++pings_;
      send_line("PONG " + line.substr(5));
    } else if (line.rfind("NEW ", 0) == 0) {
      {
        std::lock_guard lock(mutex_);
        news_.push_back(line.substr(4));
      }
      new_arrived_.notify_all();
    } else if (line.rfind("CLOSE ", 0) == 0) {
      std::lock_guard lock(mutex_);
      closes_.push_back(line.substr(6));
    } else {
      std::lock_guard lock(mutex_);
      others_.push_back(line);
    }
  }
}

std::string AuthControl::wait_new(Millis timeout) {
  std::unique_lock lock(mutex_);
  if (!new_arrived_.wait_for(lock, timeout, [this] { return !news_.empty() || closed_; }) ||
      news_.empty()) {
    throw WaitTimeout(std::string("auth control: no NEW <id> within ") +
                      std::to_string(timeout.count()) + " ms" +
                      (closed_ ? " (the server closed the control connection)" : ""));
  }
  std::string id = news_.front();
  news_.pop_front();
  return id;
}

std::vector<std::string> AuthControl::closes() const {
  std::lock_guard lock(mutex_);
  return closes_;
}

std::vector<std::string> AuthControl::other_lines() const {
  std::lock_guard lock(mutex_);
  return others_;
}

void AuthControl::send_line(const std::string& line) {
  std::lock_guard lock(send_mutex_);
  int error = 0;
  try_send_all(socket_, line + "\n", Millis(5000), error);
}

Socket accept_within(const Socket& listener, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
    if (left <= 0) {
      throw WaitTimeout("no connection accepted within " + std::to_string(timeout.count()) + " ms");
    }
    pollfd p{listener.fd(), POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno != EINTR) throw std::runtime_error(std::string("poll: ") + strerror(errno));
    if (r <= 0) continue;
    const int fd = ::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) return Socket(fd);
    if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
      throw std::runtime_error(std::string("accept4: ") + std::strerror(errno));
    }
  }
}

uint16_t listening_port(const Process& process, const std::string& side, Millis timeout) {
  const std::string line = process.wait_for_line(
      Match::regex("event=listening side=" + side + " addr=127\\.0\\.0\\.1:[0-9]+"), timeout);
  const auto addr = field(line, "addr");
  const int port = std::stoi(addr->substr(addr->rfind(':') + 1));
  if (port <= 0 || port > 65535) throw std::runtime_error("bad port in: " + line);
  return static_cast<uint16_t>(port);
}

std::string scrape_metrics(uint16_t port) {
  Socket s = connect_tcp(port);
  send_all(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  const ReadResult r = read_to_end(s, Millis(5000));
  const size_t head_end = r.data.find("\r\n\r\n");
  if (r.data.rfind("HTTP/1.1 200", 0) != 0 && r.data.rfind("HTTP/1.0 200", 0) != 0) {
    throw std::runtime_error("GET /metrics on port " + std::to_string(port) +
                             ": not a 200 answer: " + r.describe());
  }
  return head_end == std::string::npos ? "" : r.data.substr(head_end + 4);
}

std::optional<double> sample(const std::string& exposition, const std::string& series) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
    }
  }
  return std::nullopt;
}

double metric(uint16_t port, const std::string& series) {
  const std::string text = scrape_metrics(port);
  const auto value = sample(text, series);
  if (!value) throw std::runtime_error("no sample " + series + " in /metrics:\n" + text);
  return *value;
}

}  // namespace tunnel::test
