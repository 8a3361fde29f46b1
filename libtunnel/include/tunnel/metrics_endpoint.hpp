// The opt-in /metrics endpoint: a minimal HTTP/1.x responder on the daemon's own event loop.
// Requests are bounded in size and time, and so is the number of them in progress; anything but
// `GET /metrics` gets 404, 405, 431 or 400, and the client always gets to read the answer.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "tunnel/listener.hpp"
#include "tunnel/timer.hpp"

namespace tunnel {

class MetricsEndpoint {
 public:
  // `render` produces the exposition text at each scrape. Throws std::runtime_error (naming the
  // address) when it cannot listen.
  MetricsEndpoint(EventLoop& loop, const HostPort& where, std::function<std::string()> render);
  ~MetricsEndpoint();

  // The endpoint when `where` is set, else nothing. Logs the bound address; errors name the flag.
  static std::unique_ptr<MetricsEndpoint> start_if_asked(EventLoop& loop,
                                                         const std::optional<HostPort>& where,
                                                         std::function<std::string()> render);
  const SocketAddress& address() const { return listener_.address(); }

 private:
  class Exchange;
  void accept(Fd fd);
  void finished(uint64_t key);

  EventLoop& loop_;
  std::function<std::string()> render_;
  Listener listener_;
  std::unordered_map<uint64_t, std::unique_ptr<Exchange>> exchanges_;
  uint64_t next_key_ = 0;
  log::RateLimit busy_log_;
};

}  // namespace tunnel
