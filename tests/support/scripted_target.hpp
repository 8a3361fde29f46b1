// An in-process TCP target on 127.0.0.1:0: a thread accepts, and each connection runs the test's
// handler in its own thread. Stopping closes the listener and wakes every handler (shutdown).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/socket_io.hpp"
#include "support/wait.hpp"

namespace tunnel::test {

class ScriptedTarget {
 public:
  // `index` counts connections from 0 in accept order. An exception thrown by the handler is
  // recorded in errors() for the test to check.
  using Handler = std::function<void(Socket& connection, size_t index)>;

  explicit ScriptedTarget(Handler handler);
  ~ScriptedTarget();
  ScriptedTarget(const ScriptedTarget&) = delete;
  ScriptedTarget& operator=(const ScriptedTarget&) = delete;

  uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  size_t accepted() const { return accepted_.load(); }
  size_t active() const { return active_.load(); }
  size_t max_active() const { return max_active_.load(); }
  std::vector<std::string> errors() const;
  void wait_for_accepted(size_t n, Millis timeout) const;

 private:
  void accept_loop();
  void serve(int fd, int dup, size_t index);

  Handler handler_;
  Socket listener_;
  uint16_t port_ = 0;
  int wake_[2] = {-1, -1};
  std::atomic<size_t> accepted_{0};
  std::atomic<size_t> active_{0};
  std::atomic<size_t> max_active_{0};
  mutable std::mutex mutex_;
  std::vector<int> live_fds_;  // duplicates of live connections, shut down on stop
  std::vector<std::string> errors_;
  std::list<std::thread> connections_;
  std::thread acceptor_;
};

// The echo target: returns every byte; after the peer's EOF it shuts down its sending side.
class EchoTarget : public ScriptedTarget {
 public:
  EchoTarget();
};

}  // namespace tunnel::test
