// Counting a process's descriptors through /proc/PID/fd.
#include "support/fd_count.hpp"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace tunnel::test {

std::string FdCensus::summary() const {
  return std::to_string(total) + " fds (" + std::to_string(sockets) + " sockets, " +
         std::to_string(pipes) + " pipes, " + std::to_string(other) + " other)";
}

std::string FdCensus::listing() const {
  std::string out = summary() + "\n";
  for (const auto& e : entries) out += "    " + e + "\n";
  return out;
}

FdCensus fd_census(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) throw std::runtime_error("opendir " + dir + ": " + std::strerror(errno));
  FdCensus census;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char target[512];
    const std::string path = dir + "/" + e->d_name;
    const ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
    // The descriptor may close between readdir and readlink; it is not open any more.
    if (n < 0) continue;
    target[n] = '\0';
    const std::string link(target);
    ++census.total;
    if (link.rfind("socket:", 0) == 0) {
      ++census.sockets;
    } else if (link.rfind("pipe:", 0) == 0) {
      ++census.pipes;
    } else {
      ++census.other;
    }
    census.entries.push_back(std::string(e->d_name) + " -> " + link);
  }
  ::closedir(d);
  std::sort(census.entries.begin(), census.entries.end(),
            [](const auto& a, const auto& b) { return std::stoi(a) < std::stoi(b); });
  return census;
}

size_t count_fds(pid_t pid) {
  return fd_census(pid).total;
}

FdCensus settled_census(pid_t pid, Millis settle, Millis timeout) {
  FdCensus last = fd_census(pid);
  auto since = Clock::now();
  const auto deadline = since + timeout;
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(Millis(10));
    FdCensus now = fd_census(pid);
    if (now.entries != last.entries) {
      last = std::move(now);
      since = Clock::now();
    } else if (Clock::now() - since >= settle) {
      return now;
    }
  }
  throw WaitTimeout("descriptors of pid " + std::to_string(pid) + " did not settle within " +
                    std::to_string(timeout.count()) + " ms; last: " + last.listing());
}

void wait_fds_back(pid_t pid, const FdCensus& baseline, size_t idle_pipe_fds, Millis timeout,
                   const std::string& who) {
  FdCensus now;
  const bool back = poll_until(
      [&] {
        now = fd_census(pid);
        return now.sockets == baseline.sockets && now.other == baseline.other &&
               now.pipes <= baseline.pipes + idle_pipe_fds;
      },
      timeout);
  if (!back) {
    throw WaitTimeout(who + " did not return to its descriptor baseline within " +
                      std::to_string(timeout.count()) + " ms (allowing " +
                      std::to_string(idle_pipe_fds) + " more pipe ends for the idle pool)\n" +
                      "  baseline: " + baseline.listing() + "  now: " + now.listing());
  }
}

}  // namespace tunnel::test
