// One HTTP exchange per connection: read the request head, answer, close.
#include "tunnel/metrics_endpoint.hpp"

#include <sys/socket.h>

#include <cerrno>

#include "tunnel/socket.hpp"

namespace tunnel {
namespace {

constexpr size_t kMaxRequest = 8192;
constexpr auto kRequestTimeout = std::chrono::seconds(5);

std::string response(int status, std::string_view reason, std::string_view content_type,
                     std::string_view body) {
  return fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
      status, reason, content_type, body.size(), body);
}

std::string answer(std::string_view head, const std::function<std::string()>& render) {
  auto line_end = head.find("\r\n");
  std::string_view request_line = head.substr(0, line_end);
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

class MetricsEndpoint::Exchange {
 public:
  Exchange(EventLoop& loop, Fd fd, MetricsEndpoint& owner, uint64_t key)
      : owner_(owner),
        key_(key),
        channel_(loop, std::move(fd), kReadable, [this](uint32_t events) { on_ready(events); }),
        deadline_(loop, [this] { done(); }) {
    deadline_.arm(kRequestTimeout);
  }

 private:
  void on_ready(uint32_t events) {
    if (!reply_.empty() || (events & kWritable)) return send_reply();
    char chunk[2048];
    ssize_t n = ::recv(channel_.fd(), chunk, sizeof chunk, 0);
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
      return done();
    }
    request_.append(chunk, static_cast<size_t>(n));
    if (request_.size() > kMaxRequest) {
      reply_ = response(400, "Bad Request", "text/plain", "request too large\n");
    } else if (request_.find("\r\n\r\n") != std::string::npos) {
      reply_ = answer(request_, owner_.render_);
    } else {
      return;
    }
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
      break;
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
  std::string request_;
  std::string reply_;
  size_t sent_ = 0;
};

MetricsEndpoint::MetricsEndpoint(EventLoop& loop, const HostPort& where,
                                 std::function<std::string()> render)
    : loop_(loop),
      render_(std::move(render)),
      listener_(loop, "metrics", resolve(where, true), [this](Fd fd) {
        uint64_t key = ++next_key_;
        exchanges_.emplace(key, std::make_unique<Exchange>(loop_, std::move(fd), *this, key));
      }) {}

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

void MetricsEndpoint::finished(uint64_t key) {
  // Destroyed after this batch: we are inside the exchange's own callback.
  auto it = exchanges_.find(key);
  if (it == exchanges_.end()) return;
  loop_.defer([gone = std::shared_ptr<Exchange>(std::move(it->second))] {});
  exchanges_.erase(it);
}

}  // namespace tunnel
