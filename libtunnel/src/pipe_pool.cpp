// Pipes for splice(2), created on demand up to a bound and reused while empty.
#include "tunnel/pipe_pool.hpp"

#include <fcntl.h>
#include <unistd.h>

namespace tunnel {

PipePool::PipePool(size_t max_pipes, size_t pipe_size)
    : max_pipes_(max_pipes), pipe_size_(pipe_size) {}

Pipe PipePool::acquire() {
  acquired_since_trim_ = true;
  if (!idle_.empty()) {
    Pipe pipe = std::move(idle_.back());
    idle_.pop_back();
    ++in_use_;
    return pipe;
  }
  if (in_use_ >= max_pipes_) return {};
  int ends[2];
  if (::pipe2(ends, O_NONBLOCK | O_CLOEXEC) < 0) return {};
  Pipe pipe{Fd(ends[0]), Fd(ends[1]), 0};
  // The default is 64 KiB; a larger size is a request the kernel may cap (pipe-max-size).
  ::fcntl(pipe.write_end.get(), F_SETPIPE_SZ, static_cast<int>(pipe_size_));
  int capacity = ::fcntl(pipe.write_end.get(), F_GETPIPE_SZ);
  pipe.capacity = capacity > 0 ? static_cast<size_t>(capacity) : 4096;
  ++in_use_;
  return pipe;
}

void PipePool::release(Pipe pipe) {
  --in_use_;
  // Idle pipes are kept for the next burst, but not without limit: each holds kernel memory.
  if (idle_.size() < kMaxIdle) idle_.push_back(std::move(pipe));
}

void PipePool::trim_idle() {
  if (!acquired_since_trim_) idle_.clear();
  acquired_since_trim_ = false;
}

void PipePool::discard(Pipe pipe) {
  --in_use_;
  pipe.read_end.reset();
  pipe.write_end.reset();
}

}  // namespace tunnel
