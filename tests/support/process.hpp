// A child process for a test: fork/exec with arguments, stdout and stderr captured line by line by
// a reader thread, signals, waiting for exit with a deadline; the destructor kills and reaps it.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/line_log.hpp"
#include "support/wait.hpp"

namespace tunnel::test {

struct ExitStatus {
  bool exited = false;  // true: ended by exit() with `code`; false: killed by `signal`
  int code = -1;
  int signal = 0;
  std::string describe() const;
};

// Collects child `pid` if it has ended (waiting for it when `block`): its exit status, or nothing
// while it still runs.
std::optional<ExitStatus> reap_child(pid_t pid, bool block);

class Process {
 public:
  // `argv[0]` is the path of the executable. Spawn from the test's main thread: the child is killed
  // (PR_SET_PDEATHSIG) when the spawning thread ends, so a crashed test leaves no daemon behind.
  Process(std::string name, std::vector<std::string> argv);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }
  const LineLog& log() const { return log_; }

  // Waits for a line (at index >= `from`) matching; throws WaitTimeout quoting the last lines.
  std::string wait_for_line(const Match& match, Millis timeout, size_t from = 0) const;

  void signal(int sig);
  bool running();
  // Waits for the process to end; throws WaitTimeout (with the log tail) when it does not.
  ExitStatus wait_exit(Millis timeout);

 private:
  bool reap(bool block);
  void read_output(int fd);

  std::string name_;
  pid_t pid_ = -1;
  std::optional<ExitStatus> status_;
  LineLog log_;
  std::thread reader_;
};

}  // namespace tunnel::test
