// A fresh connection on port B until its first line says what it is (control or data). Reads
// exactly up to the `\n`, so not one payload byte of a data connection is consumed here.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "tunnel/channel.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/timer.hpp"

namespace tunnel::server {

class BHandshake {
 public:
  // Exactly one of the two is called, once. on_line gets the line without `\n` and takes the
  // socket; on_failed gets a reason word (handshake-timeout, line-too-long, closed, ...).
  using OnLine = std::function<void(Fd fd, std::string_view line)>;
  using OnFailed = std::function<void(std::string_view reason, std::string_view peer)>;

  BHandshake(EventLoop& loop, Fd fd, Duration timeout, OnLine on_line, OnFailed on_failed);
  const std::string& peer() const { return peer_; }

 private:
  void on_readable();
  void give_up(std::string_view reason);

  Channel channel_;
  Timer deadline_;
  std::string peer_;
  std::string line_;
  OnLine on_line_;
  OnFailed on_failed_;
  bool done_ = false;
};

}  // namespace tunnel::server
