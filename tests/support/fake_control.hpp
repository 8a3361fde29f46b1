// A hand-written control connection on port B, independent of tunnel-client: it sends
// `TUNNEL/1 CONTROL`, answers `PING t` with `PONG t` (unless told not to) and collects NEW/CLOSE
// ids.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/socket_io.hpp"
#include "support/wait.hpp"

namespace tunnel::test {

class FakeControl {
 public:
  // Connects to 127.0.0.1:port_b, sends `first_line` and reads the server's answer line. The
  // session thread runs only when the answer starts with "OK".
  explicit FakeControl(uint16_t port_b, std::string first_line = "TUNNEL/1 CONTROL",
                       Millis timeout = Millis(5000));
  ~FakeControl();
  FakeControl(const FakeControl&) = delete;
  FakeControl& operator=(const FakeControl&) = delete;

  // The answer line without its newline ("OK", "ERR busy ..."), or how the read ended.
  const std::string& answer() const { return answer_; }
  bool online() const { return answer_.rfind("OK", 0) == 0; }

  void answer_pings(bool on) { answer_pings_ = on; }
  size_t pings_seen() const { return pings_.load(); }

  // The next `NEW <id>` announced, in order; throws WaitTimeout when none comes.
  std::string wait_new(Millis timeout);
  std::vector<std::string> closes() const;       // ids of `CLOSE <id>` received
  std::vector<std::string> other_lines() const;  // anything else received
  void send_line(const std::string& line);
  // True once the server closed (or reset) the control connection.
  bool closed() const { return closed_.load(); }

 private:
  void run();

  Socket socket_;
  std::string answer_;
  std::atomic<bool> answer_pings_{true};
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

// A fresh random id in protocol form: 32 lowercase hex digits.
std::string random_id();

}  // namespace tunnel::test
