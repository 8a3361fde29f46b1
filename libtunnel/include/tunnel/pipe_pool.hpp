// A bounded pool of pipes for splice(2). A relay holds a pipe only while bytes sit in it and gives
// it back empty, so idle connections cost no pipes (HAProxy's approach).
#pragma once

#include <chrono>
#include <cstddef>
#include <vector>

#include "tunnel/fd.hpp"

namespace tunnel {

struct Pipe {
  Fd read_end;
  Fd write_end;
  size_t capacity = 0;
  explicit operator bool() const { return static_cast<bool>(read_end); }
};

class PipePool {
 public:
  // At most max_pipes exist at once (in use or idle); each asks for pipe_size bytes of capacity.
  explicit PipePool(size_t max_pipes = 1024, size_t pipe_size = 64 * 1024);
  // An empty pipe, or an empty Pipe when the pool is exhausted or pipes cannot be made.
  Pipe acquire();
  // Takes back a pipe that must be empty.
  void release(Pipe pipe);
  // For a pipe that still holds bytes (its connection died): it is closed, not reused.
  void discard(Pipe pipe);

  // Closes the idle pipes if none was taken since the previous call. Called every kTrimInterval,
  // so a burst's pipes go back to the kernel once traffic calms down.
  static constexpr auto kTrimInterval = std::chrono::seconds(2);
  void trim_idle();

  size_t idle() const { return idle_.size(); }
  size_t in_use() const { return in_use_; }

 private:
  static constexpr size_t kMaxIdle = 256;
  std::vector<Pipe> idle_;
  size_t max_pipes_;
  size_t pipe_size_;
  size_t in_use_ = 0;
  bool acquired_since_trim_ = false;
};

}  // namespace tunnel
