// One HTTP exchange per connection: read the request head, answer, close gracefully.
#include "tunnel/metrics_endpoint.hpp"

#include <sys/socket.h>

#include <cerrno>

#include "tunnel/socket.hpp"

namespace tunnel {
namespace {

constexpr size_t kMaxRequest = 8192;
constexpr auto kRequestTimeout = std::chrono::seconds(5);
// After the answer: how long, and how much, the client may still send (a body nobody reads)
// before the connection is closed anyway.
constexpr auto kDrainTimeout = std::chrono::seconds(1);
constexpr size_t kMaxDrain = 1 << 20;
// Scrapes in progress at once; more are closed at once.
constexpr size_t kMaxExchanges = 64;

std::string response(int status, std::string_view reason, std::string_view content_type,
                     std::string_view body) {
  return fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
      status, reason, content_type, body.size(), body);
}

// Where the request head ends: after its first empty line, lines ending in CRLF or a bare LF.
std::optional<size_t> head_end(std::string_view data) {
  size_t start = 0;
  for (size_t nl; (nl = data.find('\n', start)) != std::string_view::npos; start = nl + 1) {
    if (nl == start || (nl == start + 1 && data[start] == '\r')) return nl + 1;
  }
  return std::nullopt;
}

std::string answer(std::string_view head, const std::function<std::string()>& render) {
  std::string_view request_line = head.substr(0, head.find('\n'));
  if (request_line.ends_with('\r')) request_line.remove_suffix(1);
  auto first_space = request_line.find(' ');
  auto second_space = request_line.find(' ', first_space + 1);
  if (first_space == std::string_view::npos || second_space == std::string_view::npos ||
      !request_line.substr(second_space + 1).starts_with("HTTP/1."))
    return response(400, "Bad Request", "text/plain", "bad request\n");
  auto method = request_line.substr(0, first_space);
  auto target = request_line.substr(first_space + 1, second_space - first_space - 1);
  if (target != "/metrics" && !target.starts_with("/metrics?"))
    return response(404, "Not Found", "text/plain", "only /metrics is served here\n");
  if (method != "GET") return response(405, "Method Not Allowed", "text/plain", "use GET\n");
  return response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", render());
}

}  // namespace

// Reads the request head, answers, then closes gracefully: the sending side is shut down and what
// the client still sends (a body, the rest of an oversize head) is read and discarded, so that
// closing with unread bytes never resets the connection before the client has read the answer.
class MetricsEndpoint::Exchange {
 public:
  Exchange(EventLoop& loop, Fd fd, MetricsEndpoint& owner, uint64_t key)
      : owner_(owner),
        key_(key),
        channel_(loop, std::move(fd), kReadable, [this](uint32_t) { on_ready(); }),
        deadline_(loop, [this] { done(); }) {
    deadline_.arm(kRequestTimeout);
  }

 private:
  enum class State { reading, answering, draining };

  void on_ready() {
    switch (state_) {
      case State::reading:
        return read_request();
      case State::answering:
        return send_reply();
      case State::draining:
        return drain();
    }
  }

  void read_request() {
    char chunk[2048];
    ssize_t n = ::recv(channel_.fd(), chunk, sizeof chunk, 0);
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
      return done();
    }
    request_.append(chunk, static_cast<size_t>(n));
    auto end = head_end(request_);
    if (end && *end <= kMaxRequest) {
      reply_ = answer(std::string_view(request_).substr(0, *end), owner_.render_);
    } else if (request_.size() > kMaxRequest) {
      reply_ = response(431, "Request Header Fields Too Large", "text/plain",
                        "request head too large\n");
    } else {
      return;
    }
    request_ = std::string();
    state_ = State::answering;
    send_reply();
  }

  void send_reply() {
    while (sent_ < reply_.size()) {
      long n = send_nosignal(channel_.fd(), reply_.data() + sent_, reply_.size() - sent_);
      if (n > 0) {
        sent_ += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        channel_.set_interest(kWritable);
        return;
      }
      return done();
    }
    ::shutdown(channel_.fd(), SHUT_WR);
    state_ = State::draining;
    channel_.set_interest(kReadable);
    deadline_.arm(kDrainTimeout);
    drain();
  }

  void drain() {
    char chunk[16384];
    while (drained_ < kMaxDrain) {
      ssize_t n = ::recv(channel_.fd(), chunk, sizeof chunk, 0);
      if (n > 0) {
        drained_ += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && errno == EAGAIN) {
        return;
      } else {
        break;  // the client closed too (or reset)
      }
    }
    done();
  }

  void done() {
    channel_.close();
    deadline_.cancel();
    owner_.finished(key_);
  }

  MetricsEndpoint& owner_;
  uint64_t key_;
  Channel channel_;
  Timer deadline_;
  State state_ = State::reading;
  std::string request_;
  std::string reply_;
  size_t sent_ = 0;
  size_t drained_ = 0;
};

MetricsEndpoint::MetricsEndpoint(EventLoop& loop, const HostPort& where,
                                 std::function<std::string()> render)
    : loop_(loop),
      render_(std::move(render)),
      listener_(loop, "metrics", resolve(where, true), [this](Fd fd) { accept(std::move(fd)); }) {}

MetricsEndpoint::~MetricsEndpoint() = default;

std::unique_ptr<MetricsEndpoint> MetricsEndpoint::start_if_asked(
    EventLoop& loop, const std::optional<HostPort>& where, std::function<std::string()> render) {
  if (!where) return nullptr;
  std::unique_ptr<MetricsEndpoint> endpoint;
  try {
    endpoint = std::make_unique<MetricsEndpoint>(loop, *where, std::move(render));
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("--metrics-listen: {}", e.what()));
  }
  TLOG_INFO("event=listening side=metrics addr={}", endpoint->address().to_string());
  return endpoint;
}

void MetricsEndpoint::accept(Fd fd) {
  if (exchanges_.size() >= kMaxExchanges) {
    // `fd` closes on return: a flood of scrapers cannot take the daemon's descriptors.
    uint64_t suppressed = 0;
    if (busy_log_.allow(suppressed))
      TLOG_WARN("event=metrics-refused reason=too-many-requests limit={} suppressed={}",
                kMaxExchanges, suppressed);
    return;
  }
  uint64_t key = ++next_key_;
  exchanges_.emplace(key, std::make_unique<Exchange>(loop_, std::move(fd), *this, key));
}

void MetricsEndpoint::finished(uint64_t key) {
  // We are inside the exchange's own callback: the loop frees it after this batch.
  auto it = exchanges_.find(key);
  if (it == exchanges_.end()) return;
  loop_.destroy_later(std::move(it->second));
  exchanges_.erase(it);
}

}  // namespace tunnel
