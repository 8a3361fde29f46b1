// What the operations tests need beyond tests/support: daemons started behind a prefix (env
// assignments, prlimit) or on fixed ports, temp dirs, external commands, CPU time, backoff values.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "support/daemons.hpp"
#include "support/process.hpp"

namespace tunnel::test::ops {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& content);
std::string read_file(const std::string& path);

// `prefix` (e.g. {"/usr/bin/env", "NOTIFY_SOCKET=..."} or {"/usr/bin/prlimit", "--nofile=64:64"})
// then `binary` and `args`. The prefix programs exec the daemon, so the pid is the daemon's.
std::unique_ptr<Process> start_process(const std::string& name,
                                       const std::vector<std::string>& prefix,
                                       const std::string& binary,
                                       const std::vector<std::string>& args);

// The port of the daemon's `event=listening side=<side> addr=127.0.0.1:PORT` line.
uint16_t bound_port(const Process& process, const std::string& side,
                    Millis timeout = kStartTimeout);

// The server arguments for A and B on exactly these loopback ports (0: ephemeral).
std::vector<std::string> server_listen_args(uint16_t port_a, uint16_t port_b);

// `args` followed by `more`.
std::vector<std::string> concat(std::vector<std::string> args,
                                const std::vector<std::string>& more);

// Two distinct loopback ports where nothing listens right now (for daemons that must be started
// on ports known in advance).
std::pair<uint16_t, uint16_t> two_free_ports();

// The full path of `program` on $PATH, or "" when it is not there.
std::string find_program(const std::string& program);

struct CommandResult {
  ExitStatus status;
  std::vector<std::string> lines;  // stdout and stderr, interleaved as written
  std::string output() const;
};

// Runs argv (argv[0] a full path) to completion; throws WaitTimeout when it takes longer.
CommandResult run_command(const std::vector<std::string>& argv, Millis timeout = Millis(30000));

// utime + stime of a process from /proc/PID/stat.
Millis cpu_time(pid_t pid);

// The `retry_in_ms=` values of the lines matching `match`, in order, from index `from`.
std::vector<long long> retry_values(const LineLog& log, const Match& match, size_t from = 0);

// A comma-separated list for messages.
std::string join(const std::vector<long long>& values);

}  // namespace tunnel::test::ops
