// Spawning and supervising a daemon under test (fork/exec, output capture, exit status).
#include "support/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <stdexcept>

extern char** environ;

namespace tunnel::test {

namespace {

// Variables that would change how the daemons log or notify (systemd), removed for the child.
bool keep_in_child_env(const char* entry) {
  return std::strncmp(entry, "JOURNAL_STREAM=", 15) != 0 &&
         std::strncmp(entry, "NOTIFY_SOCKET=", 14) != 0;
}

bool echo_output() {
  return std::getenv("TUNNEL_TEST_QUIET") == nullptr;
}

// Between fork and exec only async-signal-safe calls: the test process has other threads.
[[noreturn]] void exec_child(int out_fd, pid_t parent, char* const* argv, char* const* envp) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);
  const int null_fd = ::open("/dev/null", O_RDONLY);
  if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
  ::dup2(out_fd, STDOUT_FILENO);
  ::dup2(out_fd, STDERR_FILENO);
  // Descriptors of the test (targets, peers) must not leak into the daemon, CLOEXEC or not.
  if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0) {
    for (int fd = 3; fd < 65536; ++fd) ::close(fd);
  }
  // The test ignores SIGPIPE; an ignored disposition would survive exec.
  ::signal(SIGPIPE, SIG_DFL);
  ::execve(argv[0], argv, envp);
  const char msg[] = "test support: execve failed for the daemon binary\n";
  [[maybe_unused]] auto ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
  ::_exit(127);
}

}  // namespace

std::string ExitStatus::describe() const {
  if (exited) return "exited with code " + std::to_string(code);
  return std::string("killed by signal ") + std::to_string(signal) + " (" + ::strsignal(signal) +
         ")";
}

Process::Process(std::string name, std::vector<std::string> argv)
    : name_(std::move(name)), log_(name_) {
  if (argv.empty()) throw std::invalid_argument("Process: empty argv");
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  std::vector<char*> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (keep_in_child_env(*e)) env.push_back(*e);
  }
  env.push_back(nullptr);

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) {
    const int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    throw std::runtime_error(std::string("fork: ") + std::strerror(err));
  }
  if (pid_ == 0) exec_child(fds[1], parent, args.data(), env.data());
  ::close(fds[1]);
  reader_ = std::thread([this, fd = fds[0]] { read_output(fd); });
}

Process::~Process() {
  if (!status_) {
    ::kill(pid_, SIGKILL);
    reap(true);
  }
  if (reader_.joinable()) reader_.join();
}

void Process::read_output(int fd) {
  const bool echo = echo_output();
  std::string pending;
  char buf[4096];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buf, static_cast<size_t>(n));
    size_t start = 0;
    for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::string line = pending.substr(start, nl - start);
      if (echo) std::cerr << "[" + name_ + " " + std::to_string(pid_) + "] " + line + "\n";
      log_.append(std::move(line));
    }
    pending.erase(0, start);
  }
  if (!pending.empty()) log_.append(std::move(pending));
  ::close(fd);
  log_.close();
}

std::string Process::wait_for_line(const Match& match, Millis timeout, size_t from) const {
  return log_.wait_for(match, timeout, from).text;
}

void Process::signal(int sig) {
  if (!status_ && ::kill(pid_, sig) != 0) {
    throw std::runtime_error(name_ + ": kill(" + std::to_string(sig) +
                             "): " + std::strerror(errno));
  }
}

std::optional<ExitStatus> reap_child(pid_t pid, bool block) {
  int raw = 0;
  pid_t r;
  do {
    r = ::waitpid(pid, &raw, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r != pid) return std::nullopt;
  ExitStatus s;
  if (WIFEXITED(raw)) {
    s.exited = true;
    s.code = WEXITSTATUS(raw);
  } else if (WIFSIGNALED(raw)) {
    s.signal = WTERMSIG(raw);
  }
  return s;
}

bool Process::reap(bool block) {
  if (!status_) status_ = reap_child(pid_, block);
  return status_.has_value();
}

bool Process::running() {
  return !reap(false);
}

ExitStatus Process::wait_exit(Millis timeout) {
  if (!poll_until([this] { return reap(false); }, timeout)) {
    throw WaitTimeout(name_ + " (pid " + std::to_string(pid_) + ") still running after " +
                      std::to_string(timeout.count()) + " ms\n" + log_.tail());
  }
  // The last lines may still be in the pipe: collect them before anyone reads the log.
  log_.wait_closed(Millis(2000));
  return *status_;
}

}  // namespace tunnel::test
