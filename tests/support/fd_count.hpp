// The open descriptors of a process, from /proc/PID/fd, split into sockets, pipes and the rest so
// that a leak report says what leaked.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <vector>

#include "support/wait.hpp"

namespace tunnel::test {

struct FdCensus {
  size_t total = 0;
  size_t sockets = 0;
  size_t pipes = 0;
  size_t other = 0;
  std::vector<std::string> entries;  // "fd -> link target"
  std::string summary() const;       // "N fds (S sockets, P pipes, O other)"
  std::string listing() const;       // summary and every entry, one per line
};

FdCensus fd_census(pid_t pid);
size_t count_fds(pid_t pid);

// A census taken once the count has stopped moving (equal over `settle`), so that start-up work
// still in flight (a pool being filled) is not mistaken for the baseline.
FdCensus settled_census(pid_t pid, Millis settle = Millis(150), Millis timeout = Millis(5000));

// Waits until `pid` is back to `baseline`: exactly as many sockets and other descriptors, and at
// most `idle_pipe_fds` more pipe ends (0: exactly the baseline). The daemons' pipe pools close idle
// pipes a few seconds after the last relay, so a wait long enough for that expects exactly zero.
// Throws WaitTimeout with both listings when the deadline passes.
void wait_fds_back(pid_t pid, const FdCensus& baseline, size_t idle_pipe_fds, Millis timeout,
                   const std::string& who);

}  // namespace tunnel::test
