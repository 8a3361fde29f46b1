// A target that says who it is, for tests where several targets sit behind one tunnel: every
// connection first gets "<banner>\n", then every byte it sends back; after the peer's EOF (and
// once everything is sent) the target closes. One thread serves all connections with poll(2), so
// thousands of short connections cost no thread each.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>

#include "support/socket_io.hpp"

namespace tunnel::test {

class BannerEcho {
 public:
  explicit BannerEcho(std::string banner);
  ~BannerEcho();
  BannerEcho(const BannerEcho&) = delete;
  BannerEcho& operator=(const BannerEcho&) = delete;

  const std::string& banner() const { return banner_; }
  uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  size_t accepted() const { return accepted_.load(); }
  // Connections accepted and not yet closed.
  size_t open() const { return open_.load(); }

 private:
  void run();

  std::string banner_;
  Socket listener_;
  uint16_t port_ = 0;
  int wake_[2] = {-1, -1};
  std::atomic<size_t> accepted_{0};
  std::atomic<size_t> open_{0};
  std::thread thread_;
};

}  // namespace tunnel::test
