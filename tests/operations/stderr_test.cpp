// Failure behaviour (docs/ARCHITECTURE.md), row "a daemon's stderr is closed or stalled": a daemon
// whose stderr is a pipe nobody reads from (closed at once, or never read) keeps serving; logging
// never kills it nor blocks its loop, and once stderr takes lines again it first says how many were
// dropped.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>
#include <optional>
#include <regex>

#include "ops_support.hpp"
#include "support/daemons.hpp"
#include "support/echo_tunnel.hpp"
#include "support/report.hpp"
#include "support/scripted_target.hpp"
#include "support/socket_io.hpp"

extern char** environ;

using namespace tunnel::test;
using namespace tunnel::test::ops;
using namespace std::chrono_literals;

namespace {

// A pipe whose ends the test owns; either end may be closed early.
struct Pipe {
  int read_end = -1;
  int write_end = -1;
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) FAIL("pipe2: " << std::strerror(errno));
    read_end = fds[0];
    write_end = fds[1];
  }
  ~Pipe() {
    close_read();
    close_write();
  }
  void close_read() {
    if (read_end >= 0) ::close(read_end);
    read_end = -1;
  }
  void close_write() {
    if (write_end >= 0) ::close(write_end);
    write_end = -1;
  }
};

// A daemon whose stdout and stderr are `output` (the write end of a test's pipe), unlike
// support::Process, which always reads them. Killed and reaped by the destructor.
class PipedDaemon {
 public:
  PipedDaemon(std::vector<std::string> argv, int output) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    // The daemons must not think they run under systemd.
    std::vector<char*> env;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::strncmp(*e, "JOURNAL_STREAM=", 15) != 0 && std::strncmp(*e, "NOTIFY_SOCKET=", 14))
        env.push_back(*e);
    }
    env.push_back(nullptr);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) FAIL("fork: " << std::strerror(errno));
    if (pid_ == 0) {
      // Only async-signal-safe calls until exec: the test has other threads.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      const int null_fd = ::open("/dev/null", O_RDONLY);
      if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
      ::dup2(output, STDOUT_FILENO);
      ::dup2(output, STDERR_FILENO);
      if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0) {
        for (int fd = 3; fd < 65536; ++fd) ::close(fd);
      }
      // The test ignores SIGPIPE, and an ignored disposition survives exec: give the daemon the
      // default one, which is what kills it when it writes to a closed pipe unprepared.
      ::signal(SIGPIPE, SIG_DFL);
      ::execve(args[0], args.data(), env.data());
      ::_exit(127);
    }
  }
  ~PipedDaemon() {
    if (!status_) {
      ::kill(pid_, SIGKILL);
      reap(true);
    }
  }
  PipedDaemon(const PipedDaemon&) = delete;
  PipedDaemon& operator=(const PipedDaemon&) = delete;

  pid_t pid() const { return pid_; }
  bool running() { return !reap(false); }
  std::string describe() {
    if (running()) return "still running";
    return status_->describe();
  }

 private:
  bool reap(bool block) {
    if (!status_) status_ = reap_child(pid_, block);
    return status_.has_value();
  }

  pid_t pid_ = -1;
  std::optional<ExitStatus> status_;
};

// Whatever the pipe holds now, without waiting (the read end is made non-blocking).
std::string read_available(int fd) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  std::string out;
  char buf[16384];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

// Reads the pipe until `pattern` matches what was read, or the deadline; returns all of it.
std::string read_until(int fd, const std::regex& pattern, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  std::string out;
  while (!std::regex_search(out, pattern) && Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, 50);
    out += read_available(fd);
  }
  return out;
}

size_t bytes_in(int fd) {
  int n = 0;
  ::ioctl(fd, FIONREAD, &n);
  return static_cast<size_t>(n);
}

uint16_t port_of(const std::string& log, char side) {
  std::smatch m;
  const std::regex line(std::string("event=listening side=") + side +
                        " addr=127\\.0\\.0\\.1:([0-9]+)");
  if (!std::regex_search(log, m, line)) FAIL("no event=listening side=" << side << " in:\n" << log);
  return static_cast<uint16_t>(std::stoi(m[1]));
}

const std::vector<std::string> kServerEphemeral = {"--listen-a", "127.0.0.1:0", "--listen-b",
                                                   "127.0.0.1:0"};

}  // namespace

TEST_CASE("tunnel-server with stderr on a pipe already closed by its reader keeps serving") {
  const auto [port_a, port_b] = two_free_ports();
  Pipe out;
  out.close_read();
  PipedDaemon server({server_binary(), "--listen-a", loopback(port_a), "--listen-b",
                      loopback(port_b), "--log-level", "debug"},
                     out.write_end);
  out.close_write();
  // Listening on B (it binds after A), or dead: the start-up log lines go to the closed pipe.
  const bool up = poll_until(
      [&] {
        return !server.running() || probe_connect("127.0.0.1", port_b, 200ms) == Reach::connected;
      },
      kStartTimeout);
  INFO("tunnel-server: " << server.describe());
  REQUIRE(up);
  REQUIRE(server.running());

  EchoTarget echo;
  Client client(port_b, echo.address());
  client.wait_online();
  for (int i = 0; i < 5; ++i) echo_round_trip(port_a, "through a server that cannot log\n");
  CHECK(server.running());
}

TEST_CASE("tunnel-client with stderr on a pipe already closed by its reader keeps serving") {
  EchoTarget echo;
  Server server;
  Pipe out;
  out.close_read();
  PipedDaemon client({client_binary(), "--server", loopback(server.port_b()), "--target",
                      echo.address(), "--log-level", "debug"},
                     out.write_end);
  out.close_write();
  const bool online = poll_until(
      [&] { return !client.running() || server.log().find("event=client-online").has_value(); },
      kStartTimeout);
  INFO("tunnel-client: " << client.describe());
  REQUIRE(online);
  REQUIRE(client.running());
  for (int i = 0; i < 5; ++i)
    echo_round_trip(server.port_a(), "through a client that cannot log\n");
  CHECK(client.running());
}

TEST_CASE(
    "tunnel-server with stderr on a pipe nobody reads keeps serving promptly, drops lines and then "
    "says how many") {
  Pipe out;
  auto args = concat({server_binary()}, kServerEphemeral);
  PipedDaemon server(concat(args, {"--log-level", "debug"}), out.write_end);
  out.close_write();
  const std::string start = read_until(out.read_end, std::regex("event=ready"), kStartTimeout);
  INFO("tunnel-server start-up output:\n" << start);
  REQUIRE(start.find("event=ready") != std::string::npos);
  const uint16_t port_a = port_of(start, 'a');
  const uint16_t port_b = port_of(start, 'b');

  EchoTarget echo;
  Client client(port_b, echo.address());
  client.wait_online();

  // From here on nobody reads the server's stderr. Every round trip logs several debug lines:
  // keep going until the pipe is full to the last page, then as many again.
  const size_t capacity = static_cast<size_t>(::fcntl(out.read_end, F_GETPIPE_SZ));
  const std::string payload = "a round trip while the server's stderr is full\n";
  size_t round_trips = 0;
  long long slowest_ms = 0;
  auto timed_round_trip = [&] {
    const auto begin = Clock::now();
    try {
      echo_round_trip(port_a, payload, 3s);
    } catch (const std::exception& e) {
      FAIL("round trip " << round_trips << " with " << bytes_in(out.read_end) << " of " << capacity
                         << " bytes in the server's stderr pipe: " << e.what()
                         << "\ntunnel-server: " << server.describe());
    }
    slowest_ms = std::max(slowest_ms, ms_since(begin));
    ++round_trips;
  };
  while (bytes_in(out.read_end) + 4096 < capacity && round_trips < 5000) timed_round_trip();
  const size_t to_fill = round_trips;
  INFO(round_trips << " round trips filled " << bytes_in(out.read_end) << " of " << capacity
                   << " bytes");
  REQUIRE(bytes_in(out.read_end) + 4096 >= capacity);
  for (size_t i = 0; i < std::max<size_t>(to_fill, 20); ++i) timed_round_trip();
  MEASURED("stalled stderr: " << round_trips << " round trips (" << to_fill
                              << " to fill the pipe), slowest " << slowest_ms << " ms");
  CHECK(slowest_ms < 2000);
  REQUIRE(server.running());

  // The reader comes back: what was written is whole lines, and the next line the server logs
  // is preceded by how many it could not write.
  const std::string held = read_available(out.read_end);
  echo_round_trip(port_a, payload);
  const std::regex dropped("level=warn event=log-dropped lines=([0-9]+)\n");
  const std::string after = read_until(out.read_end, dropped, 5s);
  INFO("after the pipe was emptied:\n" << after);
  std::smatch m;
  REQUIRE(std::regex_search(after, m, dropped));
  CHECK(std::stoll(m[1]) > 0);
  const std::regex whole_line(
      "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z level=(trace|debug|info|warn|error) event=[a-z-]+.*");
  std::string torn;
  size_t lines = 0;
  for (size_t begin = 0, end; (end = held.find('\n', begin)) != std::string::npos;
       begin = end + 1, ++lines) {
    const std::string line = held.substr(begin, end - begin);
    if (!std::regex_match(line, whole_line)) torn += line + "\n";
  }
  INFO(lines << " lines held in the pipe; not whole lines:\n" << torn);
  CHECK(torn.empty());
  CHECK(server.running());
}
