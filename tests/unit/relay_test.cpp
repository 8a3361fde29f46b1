// Relay over real sockets: X <-> visitor side [Relay] service side <-> Y, with X (the external
// user) and Y (the private service) driven non-blocking from the test
// thread between loop rounds. Covers integrity, half-close both ways, resets, the done callback,
// the buffer path (no pipes) against the splice path, and unix sockets.
#include "tunnel/relay.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "tunnel/address.hpp"
#include "tunnel/event_loop.hpp"
#include "tunnel/pipe_pool.hpp"
#include "tunnel/socket.hpp"

using namespace std::chrono_literals;
using tunnel::Clock;
using tunnel::EventLoop;
using tunnel::Fd;
using tunnel::PipePool;
using tunnel::Relay;
using tunnel::RelayOutcome;

namespace unit_tests {
int sigpipe_count();  // main.cpp
}

namespace {

constexpr size_t kMiB = 1024 * 1024;

// Fails the test if SIGPIPE was raised since `before`: the loop ran only relay code.
void require_no_sigpipe_since(int before, const std::string& context) {
  if (unit_tests::sigpipe_count() != before)
    FAIL("SIGPIPE was raised while the relay ran ("
         << context << "): a write to a closed peer "
         << "must fail with EPIPE, not kill the process");
}

std::string random_bytes(size_t size, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::string out(size, '\0');
  for (size_t i = 0; i + 8 <= size; i += 8) {
    uint64_t v = rng();
    std::memcpy(&out[i], &v, 8);
  }
  for (size_t i = size - size % 8; i < size; ++i) out[i] = static_cast<char>(rng());
  return out;
}

// "" when equal; otherwise what differs, short enough for a failure message.
std::string difference(const std::string& sent, const std::string& received) {
  if (sent == received) return "";
  size_t i = 0;
  while (i < sent.size() && i < received.size() && sent[i] == received[i]) ++i;
  return "received " + std::to_string(received.size()) + " of " + std::to_string(sent.size()) +
         " bytes, first difference at offset " + std::to_string(i);
}

bool fd_is_open(int fd) {
  return ::fcntl(fd, F_GETFD) != -1;
}

struct SocketPair {
  Fd connecting;  // the end that called connect
  Fd accepted;    // the end the listener accepted
};

// A listener on 127.0.0.1 (ephemeral port) that makes connected, non-blocking TCP pairs.
class Loopback {
 public:
  Loopback() {
    auto where = tunnel::resolve(tunnel::HostPort{"127.0.0.1", 0}, false).front();
    std::error_code ec;
    listener_ = tunnel::listen_tcp(where, 64, ec);
    REQUIRE_FALSE(ec);
    address_ = tunnel::local_address(listener_.get());
  }

  // Buffer sizes for the sockets accepted from now on (0: the kernel's default).
  void set_accepted_receive_buffer(int bytes) {
    REQUIRE(::setsockopt(listener_.get(), SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes) == 0);
  }

  SocketPair connect() {
    std::error_code ec;
    Fd connecting = tunnel::start_connect(address_, ec);
    REQUIRE_FALSE(ec);
    pollfd readable{listener_.get(), POLLIN, 0};
    REQUIRE(::poll(&readable, 1, 2000) == 1);
    Fd accepted = tunnel::accept_connection(listener_.get(), ec);
    REQUIRE_FALSE(ec);
    REQUIRE(accepted);
    pollfd writable{connecting.get(), POLLOUT, 0};
    REQUIRE(::poll(&writable, 1, 2000) == 1);
    REQUIRE_FALSE(tunnel::take_socket_error(connecting.get()));
    return {std::move(connecting), std::move(accepted)};
  }

 private:
  Fd listener_;
  tunnel::SocketAddress address_;
};

SocketPair unix_pair() {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  return {Fd(sv[0]), Fd(sv[1])};
}

// One outer end (X or Y), driven without blocking: step() sends what is queued and reads what
// has arrived, recording end of stream and errors.
struct Peer {
  Fd fd;
  std::string out;
  size_t sent = 0;
  size_t chunk = 256 * 1024;  // largest single send
  bool shut_when_sent = false;
  bool shut = false;
  bool reading = true;
  std::string in;
  bool eof = false;
  int error = 0;  // errno of a failed send or recv

  void send(std::string bytes, bool then_shut = false) {
    out += bytes;
    shut_when_sent = then_shut;
  }
  bool all_sent() const { return sent == out.size(); }
  bool finished() const { return eof || error != 0; }

  void step() {
    if (!fd || error) return;
    while (sent < out.size()) {
      long n =
          tunnel::send_nosignal(fd.get(), out.data() + sent, std::min(chunk, out.size() - sent));
      if (n > 0) {
        sent += static_cast<size_t>(n);
      } else {
        if (errno != EAGAIN) error = errno;
        break;
      }
    }
    if (!error && all_sent() && shut_when_sent && !shut) {
      REQUIRE(::shutdown(fd.get(), SHUT_WR) == 0);
      shut = true;
    }
    static thread_local std::vector<char> buffer(256 * 1024);
    while (reading && !eof && !error) {
      ssize_t n = ::recv(fd.get(), buffer.data(), buffer.size(), 0);
      if (n > 0) {
        in.append(buffer.data(), static_cast<size_t>(n));
      } else if (n == 0) {
        eof = true;
      } else {
        if (errno != EAGAIN) error = errno;
        break;
      }
    }
  }

  // Closes with a reset instead of a FIN.
  void reset() {
    tunnel::set_linger_reset(fd.get());
    fd.reset();
  }
};

// The relay under test with X beyond its visitor side and Y beyond its service side.
struct Harness {
  EventLoop loop;
  PipePool pool;
  size_t pool_size;
  Peer x, y;
  Fd visitor, service;  // the relay's sides until start() hands them over
  int visitor_fd = -1, service_fd = -1;
  std::unique_ptr<Relay> relay;
  int done_calls = 0;
  std::optional<RelayOutcome> outcome;
  bool fds_closed_when_done = false;
  std::function<void()> on_done;  // runs inside the done callback, after the bookkeeping
  const int sigpipes_before = unit_tests::sigpipe_count();

  struct Setup {
    size_t max_pipes = 1024;
    size_t pipe_size = 64 * 1024;
    bool unix_sockets = false;  // socketpairs instead of loopback TCP
    // Small socket buffers between the service side and Y, so that bytes X sends pile up in the
    // relay's pipe
    // rather than in the kernel beyond it.
    bool small_service_path = false;
    bool start_relay = true;  // false: call start() later, after the peers have acted
    // SO_RCVBUF of the visitor side (0: the kernel's default, autotuned).
    int visitor_receive_buffer = 0;
  };

  explicit Harness(Setup setup)
      : pool(setup.max_pipes, setup.pipe_size), pool_size(setup.max_pipes) {
    if (setup.unix_sockets) {
      auto x_visitor = unix_pair();
      auto service_y = unix_pair();
      x.fd = std::move(x_visitor.connecting);
      visitor = std::move(x_visitor.accepted);
      service = std::move(service_y.connecting);
      y.fd = std::move(service_y.accepted);
    } else {
      // One listener per pair: the relay's visitor side is accepted, Y is accepted.
      Loopback visitor_listener, service_listener;
      if (setup.visitor_receive_buffer > 0)
        visitor_listener.set_accepted_receive_buffer(setup.visitor_receive_buffer);
      if (setup.small_service_path) service_listener.set_accepted_receive_buffer(16 * 1024);
      auto x_visitor = visitor_listener.connect();
      auto service_y = service_listener.connect();
      x.fd = std::move(x_visitor.connecting);
      visitor = std::move(x_visitor.accepted);
      service = std::move(service_y.connecting);
      y.fd = std::move(service_y.accepted);
      if (setup.small_service_path) {
        int bytes = 16 * 1024;
        REQUIRE(::setsockopt(service.get(), SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes) == 0);
      }
    }
    visitor_fd = visitor.get();
    service_fd = service.get();
    if (setup.start_relay) start();
  }

  void start() {
    relay = std::make_unique<Relay>(
        loop, pool, std::move(visitor), std::move(service), [this](const RelayOutcome& o) {
          ++done_calls;
          outcome = o;
          fds_closed_when_done = !fd_is_open(visitor_fd) && !fd_is_open(service_fd);
          if (on_done) on_done();
        });
  }

  void round() {
    loop.run_once(1);
    require_no_sigpipe_since(sigpipes_before, "pool max_pipes " + std::to_string(pool_size));
    x.step();
    y.step();
  }

  // Rounds until `done` holds or `limit` passes; returns whether it held.
  template <typename Pred>
  bool run_until(Pred done, Clock::duration limit = 10s) {
    auto deadline = Clock::now() + limit;
    while (!done()) {
      if (Clock::now() >= deadline) return false;
      round();
    }
    return true;
  }

  bool finished() const { return done_calls > 0; }

  std::string state() const {
    std::string s = "x: sent " + std::to_string(x.sent) + "/" + std::to_string(x.out.size()) +
                    " received " + std::to_string(x.in.size()) + (x.eof ? " eof" : "") +
                    (x.error ? std::string(" error ") + std::strerror(x.error) : "") +
                    "; y: sent " + std::to_string(y.sent) + "/" + std::to_string(y.out.size()) +
                    " received " + std::to_string(y.in.size()) + (y.eof ? " eof" : "") +
                    (y.error ? std::string(" error ") + std::strerror(y.error) : "") +
                    "; done calls " + std::to_string(done_calls);
    if (outcome)
      s += "; outcome reset=" + std::to_string(outcome->reset) + " reason '" + outcome->reason +
           "' to service " + std::to_string(outcome->bytes_to_service) + " to visitor " +
           std::to_string(outcome->bytes_to_visitor);
    return s;
  }
};

struct PoolConfig {
  const char* name;
  size_t max_pipes;
  size_t pipe_size;
};

// The splice path, the buffer path (no pipes at all), a pool too small for both directions (one
// flow splices while the other buffers, changing as the pipe comes and goes), and one-page pipes
// (many short splices).
const PoolConfig kConfigs[] = {
    {"splice path", 1024, 64 * 1024},
    {"buffer path (max_pipes 0)", 0, 64 * 1024},
    {"one pipe for two flows", 1, 64 * 1024},
    {"one-page pipes", 1024, 4096},
};

bool is_reset_or_eof(const Peer& p) {
  return p.eof || p.error == ECONNRESET || p.error == EPIPE;
}

}  // namespace

TEST_CASE(
    "relay: several MiB each way at once arrive unchanged and then both FINs end it cleanly") {
  auto config = GENERATE(range(0, 4));
  const PoolConfig& c = kConfigs[config];
  INFO("pool: " << c.name);
  Harness h({.max_pipes = c.max_pipes, .pipe_size = c.pipe_size});
  const std::string x_to_y = random_bytes(4 * kMiB + 123, 1);
  const std::string y_to_x = random_bytes(3 * kMiB + 77, 2);
  h.x.send(x_to_y, true);
  h.y.send(y_to_x, true);

  bool ended = h.run_until([&] { return h.finished() && h.x.finished() && h.y.finished(); });
  INFO(h.state());
  REQUIRE(ended);
  CHECK(difference(x_to_y, h.y.in) == "");
  CHECK(difference(y_to_x, h.x.in) == "");
  CHECK(h.x.eof);
  CHECK(h.y.eof);
  REQUIRE(h.outcome);
  CHECK_FALSE(h.outcome->reset);
  CHECK(h.outcome->reason == "closed");
  CHECK(h.outcome->bytes_to_service == x_to_y.size());
  CHECK(h.outcome->bytes_to_visitor == y_to_x.size());
  CHECK(h.relay->bytes_to_service() == x_to_y.size());
  CHECK(h.relay->bytes_to_visitor() == y_to_x.size());
  CHECK(h.done_calls == 1);
  CHECK(h.fds_closed_when_done);
  CHECK(h.pool.in_use() == 0);
  if (c.max_pipes == 0) CHECK(h.pool.idle() == 0);
  if (c.max_pipes == 1024) CHECK(h.pool.idle() > 0);  // pipes were used, and given back
}

TEST_CASE("relay: buffer path and splice path give the same bytes and counts") {
  auto run = [](size_t max_pipes) {
    Harness h({.max_pipes = max_pipes});
    h.x.send(random_bytes(1 * kMiB + 5, 11), true);
    h.y.send(random_bytes(2 * kMiB + 3, 12), true);
    bool ended = h.run_until([&] { return h.finished() && h.x.finished() && h.y.finished(); });
    INFO("max_pipes " << max_pipes << ": " << h.state());
    REQUIRE(ended);
    REQUIRE(h.outcome);
    return std::make_tuple(h.y.in, h.x.in, h.outcome->bytes_to_service, h.outcome->bytes_to_visitor,
                           h.outcome->reset, h.outcome->reason);
  };
  auto spliced = run(1024);
  auto buffered = run(0);
  CHECK(difference(std::get<0>(spliced), std::get<0>(buffered)) == "");
  CHECK(difference(std::get<1>(spliced), std::get<1>(buffered)) == "");
  CHECK(std::get<2>(spliced) == std::get<2>(buffered));
  CHECK(std::get<3>(spliced) == std::get<3>(buffered));
  CHECK(std::get<4>(spliced) == std::get<4>(buffered));
  CHECK(std::get<5>(spliced) == std::get<5>(buffered));
  CHECK(difference(random_bytes(1 * kMiB + 5, 11), std::get<0>(spliced)) == "");
}

TEST_CASE("relay: bytes and a FIN that arrived before the relay started are delivered") {
  // The external side may talk before it is paired; nothing it sent may be lost.
  auto config = GENERATE(0, 1);
  const PoolConfig& c = kConfigs[config];
  INFO("pool: " << c.name);
  Harness h({.max_pipes = c.max_pipes, .pipe_size = c.pipe_size, .start_relay = false});
  const std::string early = "sent before pairing\n";
  h.x.send(early, true);
  h.y.send("greeting from the target\n");
  h.x.step();
  h.y.step();
  REQUIRE(h.x.shut);
  pollfd ready[2] = {{h.visitor_fd, POLLIN, 0}, {h.service_fd, POLLIN, 0}};
  REQUIRE(::poll(ready, 2, 2000) >= 1);  // the bytes wait in the kernel for the relay
  h.start();
  bool arrived = h.run_until([&] { return h.y.finished() && h.x.in.size() >= 25; }, 5s);
  INFO(h.state());
  REQUIRE(arrived);
  CHECK(h.y.eof);
  CHECK(h.y.in == early);
  CHECK(h.x.in == "greeting from the target\n");
  h.y.send("", true);
  REQUIRE(h.run_until([&] { return h.finished() && h.x.finished(); }, 5s));
  REQUIRE(h.outcome);
  CHECK_FALSE(h.outcome->reset);
  CHECK(h.outcome->bytes_to_service == early.size());
  CHECK(h.outcome->bytes_to_visitor == 25);
}

TEST_CASE("relay: half-close from X: Y reads EOF and still talks back and the relay ends cleanly") {
  auto config = GENERATE(0, 1);
  const PoolConfig& c = kConfigs[config];
  INFO("pool: " << c.name);
  Harness h({.max_pipes = c.max_pipes, .pipe_size = c.pipe_size});
  const std::string request = "GET / HTTP/1.0\r\n\r\n";
  const std::string response = "HTTP/1.0 200 OK\r\n\r\nsent after the request's FIN";

  h.x.send(request, true);
  bool y_saw_eof = h.run_until([&] { return h.y.finished(); }, 5s);
  INFO(h.state());
  REQUIRE(y_saw_eof);
  CHECK(h.y.eof);
  CHECK(h.y.error == 0);
  CHECK(h.y.in == request);
  CHECK(h.done_calls == 0);  // the other direction is still open

  h.y.send(response);
  bool x_got_response = h.run_until([&] { return h.x.in.size() >= response.size(); }, 5s);
  INFO(h.state());
  REQUIRE(x_got_response);
  CHECK(h.x.in == response);
  CHECK_FALSE(h.x.finished());
  CHECK(h.done_calls == 0);

  h.y.send("", true);
  bool ended = h.run_until([&] { return h.finished() && h.x.finished(); }, 5s);
  INFO(h.state());
  REQUIRE(ended);
  CHECK(h.x.eof);
  REQUIRE(h.outcome);
  CHECK_FALSE(h.outcome->reset);
  CHECK(h.outcome->bytes_to_service == request.size());
  CHECK(h.outcome->bytes_to_visitor == response.size());
  for (int i = 0; i < 20; ++i) h.round();
  CHECK(h.done_calls == 1);
}

TEST_CASE("relay: half-close from Y: X reads EOF and still talks back and the relay ends cleanly") {
  auto config = GENERATE(0, 1);
  const PoolConfig& c = kConfigs[config];
  INFO("pool: " << c.name);
  Harness h({.max_pipes = c.max_pipes, .pipe_size = c.pipe_size});
  const std::string banner = "220 ready, and done talking\r\n";
  const std::string upload = random_bytes(512 * 1024, 3);

  h.y.send(banner, true);
  bool x_saw_eof = h.run_until([&] { return h.x.finished(); }, 5s);
  INFO(h.state());
  REQUIRE(x_saw_eof);
  CHECK(h.x.eof);
  CHECK(h.x.in == banner);
  CHECK(h.done_calls == 0);

  h.x.send(upload, true);
  bool ended = h.run_until([&] { return h.finished() && h.y.finished(); }, 10s);
  INFO(h.state());
  REQUIRE(ended);
  CHECK(h.y.eof);
  CHECK(difference(upload, h.y.in) == "");
  REQUIRE(h.outcome);
  CHECK_FALSE(h.outcome->reset);
  CHECK(h.outcome->reason == "closed");
  CHECK(h.outcome->bytes_to_service == upload.size());
  CHECK(h.outcome->bytes_to_visitor == banner.size());
  CHECK(h.done_calls == 1);
}

TEST_CASE("relay: a FIN is passed on only after every byte before it has been delivered") {
  // Y does not read at first, so bytes pile up in every buffer on the way, the relay's included;
  // X's FIN comes after all of them and must reach Y last.
  auto config = GENERATE(range(0, 4));
  const PoolConfig& c = kConfigs[config];
  INFO("pool: " << c.name);
  Harness h({.max_pipes = c.max_pipes, .pipe_size = c.pipe_size});
  const std::string payload = random_bytes(6 * kMiB, 4);
  h.y.reading = false;
  h.x.send(payload, true);
  // Until every socket buffer on the way is full, X makes progress; then it stalls.
  size_t last_sent = 0;
  int still = 0;
  bool stalled = h.run_until([&] {
    still = h.x.sent == last_sent ? still + 1 : 0;
    last_sent = h.x.sent;
    return h.x.all_sent() || still > 50;
  });
  REQUIRE(stalled);
  h.y.reading = true;
  bool ended = h.run_until([&] { return h.y.finished(); });
  INFO(h.state());
  REQUIRE(ended);
  CHECK(h.y.eof);
  CHECK(difference(payload, h.y.in) == "");
  CHECK(h.done_calls == 0);
  h.y.send("bye", true);
  REQUIRE(h.run_until([&] { return h.finished() && h.x.finished(); }));
  CHECK(h.x.in == "bye");
  REQUIRE(h.outcome);
  CHECK_FALSE(h.outcome->reset);
  CHECK(h.outcome->bytes_to_service == payload.size());
}

TEST_CASE("relay: a reset by X resets Y promptly and the relay ends with reset") {
  auto config = GENERATE(0, 1);
  const PoolConfig& c = kConfigs[config];
  INFO("pool: " << c.name);
  Harness h({.max_pipes = c.max_pipes, .pipe_size = c.pipe_size});
  h.x.send("hello");
  h.y.send("hi");
  REQUIRE(h.run_until([&] { return h.y.in == "hello" && h.x.in == "hi"; }, 5s));

  auto start = Clock::now();
  h.x.reset();
  bool ended = h.run_until([&] { return h.finished() && h.y.finished(); }, 5s);
  auto elapsed = Clock::now() - start;
  INFO(h.state());
  REQUIRE(ended);
  CHECK(elapsed < 1s);
  CHECK(is_reset_or_eof(h.y));
  REQUIRE(h.outcome);
  CHECK(h.outcome->reset);
  CHECK_THAT(h.outcome->reason, Catch::Contains("visitor side"));
  CHECK(h.outcome->bytes_to_service == 5);
  CHECK(h.outcome->bytes_to_visitor == 2);
  CHECK(h.done_calls == 1);
  CHECK(h.fds_closed_when_done);
  CHECK(h.pool.in_use() == 0);
}

TEST_CASE("relay: a reset by Y resets X promptly and the relay ends with reset") {
  auto config = GENERATE(0, 1);
  const PoolConfig& c = kConfigs[config];
  INFO("pool: " << c.name);
  Harness h({.max_pipes = c.max_pipes, .pipe_size = c.pipe_size});
  h.x.send("hello");
  REQUIRE(h.run_until([&] { return h.y.in == "hello"; }, 5s));

  auto start = Clock::now();
  h.y.reset();
  bool ended = h.run_until([&] { return h.finished() && h.x.finished(); }, 5s);
  auto elapsed = Clock::now() - start;
  INFO(h.state());
  REQUIRE(ended);
  CHECK(elapsed < 1s);
  CHECK(is_reset_or_eof(h.x));
  REQUIRE(h.outcome);
  CHECK(h.outcome->reset);
  CHECK_THAT(h.outcome->reason, Catch::Contains("service side"));
  CHECK(h.done_calls == 1);
}

TEST_CASE("relay: a reset after a half-close still ends the relay with reset") {
  Harness h({});
  h.x.send("request", true);
  REQUIRE(h.run_until([&] { return h.y.finished(); }, 5s));
  h.y.reset();
  bool ended = h.run_until([&] { return h.finished() && h.x.finished(); }, 5s);
  INFO(h.state());
  REQUIRE(ended);
  CHECK(is_reset_or_eof(h.x));
  REQUIRE(h.outcome);
  CHECK(h.outcome->reset);
}

TEST_CASE("relay: a reset with bytes stuck in the relay frees its pipes") {
  auto config = GENERATE(range(0, 4));
  const PoolConfig& c = kConfigs[config];
  INFO("pool: " << c.name);
  Harness h({.max_pipes = c.max_pipes, .pipe_size = c.pipe_size});
  h.y.reading = false;
  h.x.send(random_bytes(8 * kMiB, 5));
  size_t last_sent = 0;
  int still = 0;
  REQUIRE(h.run_until([&] {
    still = h.x.sent == last_sent ? still + 1 : 0;
    last_sent = h.x.sent;
    return still > 50;
  }));
  // The stalled flow holds a full pipe. X may look stalled a little before the relay is (a large
  // receive buffer on the visitor side still draining through one-page pipes): wait for it.
  if (c.max_pipes > 0) CHECK(h.run_until([&] { return h.pool.in_use() > 0; }, 5s));
  h.y.reset();
  bool ended = h.run_until([&] { return h.finished() && h.x.finished(); }, 5s);
  INFO(h.state());
  REQUIRE(ended);
  REQUIRE(h.outcome);
  CHECK(h.outcome->reset);
  CHECK(h.pool.in_use() == 0);
  CHECK(is_reset_or_eof(h.x));
}

TEST_CASE("relay: done runs exactly once and deferred and may destroy the relay") {
  Harness h({});
  bool relay_alive_in_done = false;
  h.on_done = [&] {
    relay_alive_in_done = h.relay != nullptr;
    h.relay.reset();
  };
  h.x.send("ping", true);
  h.y.send("pong", true);
  bool ended = h.run_until([&] { return h.finished() && h.x.finished() && h.y.finished(); }, 5s);
  INFO(h.state());
  REQUIRE(ended);
  CHECK(relay_alive_in_done);
  CHECK(h.relay == nullptr);
  CHECK(h.fds_closed_when_done);
  for (int i = 0; i < 20; ++i) h.round();
  CHECK(h.done_calls == 1);
  CHECK(h.x.in == "pong");
  CHECK(h.y.in == "ping");
  CHECK(h.pool.in_use() == 0);
}

TEST_CASE("relay: abort resets both sides and reports the reason once") {
  Harness h({});
  h.x.send("hello");
  REQUIRE(h.run_until([&] { return h.y.in == "hello"; }, 5s));
  h.relay->abort("shutting down");
  h.relay->abort("again");
  CHECK(h.done_calls == 0);  // deferred to the loop
  bool ended = h.run_until([&] { return h.finished() && h.x.finished() && h.y.finished(); }, 5s);
  INFO(h.state());
  REQUIRE(ended);
  CHECK(h.done_calls == 1);
  REQUIRE(h.outcome);
  CHECK(h.outcome->reset);
  CHECK(h.outcome->reason == "shutting down");
  CHECK(h.outcome->bytes_to_service == 5);
  CHECK(h.fds_closed_when_done);
  // Reset, not a clean end: both peers see a reset (or at worst an end of stream).
  CHECK(is_reset_or_eof(h.x));
  CHECK(is_reset_or_eof(h.y));
  h.relay->abort("after the end");
  for (int i = 0; i < 10; ++i) h.round();
  CHECK(h.done_calls == 1);
}

TEST_CASE("relay: abort after a clean end does nothing") {
  Harness h({});
  h.x.send("a", true);
  h.y.send("b", true);
  REQUIRE(h.run_until([&] { return h.finished(); }, 5s));
  h.relay->abort("late");
  for (int i = 0; i < 10; ++i) h.round();
  CHECK(h.done_calls == 1);
  REQUIRE(h.outcome);
  CHECK_FALSE(h.outcome->reset);
}

TEST_CASE(
    "relay: destroying a relay mid-stream closes both sides and frees its pipes without done") {
  Harness h({});
  h.y.reading = false;
  h.x.send(random_bytes(4 * kMiB, 6));
  size_t last_sent = 0;
  int still = 0;
  REQUIRE(h.run_until([&] {
    still = h.x.sent == last_sent ? still + 1 : 0;
    last_sent = h.x.sent;
    return still > 50;
  }));
  CHECK(h.run_until([&] { return h.pool.in_use() > 0; }, 5s));  // as in the test above
  h.relay.reset();
  CHECK(h.pool.in_use() == 0);
  CHECK_FALSE(fd_is_open(h.visitor_fd));
  CHECK_FALSE(fd_is_open(h.service_fd));
  h.y.reading = true;
  bool closed = h.run_until([&] { return h.x.finished() && h.y.finished(); }, 5s);
  INFO(h.state());
  CHECK(closed);
  CHECK(h.done_calls == 0);
}

TEST_CASE("relay: an idle relay does not wake the loop") {
  Harness h({});
  h.x.send("x");
  h.y.send("y");
  REQUIRE(h.run_until([&] { return h.x.in == "y" && h.y.in == "x"; }, 5s));
  int rounds = 0;
  auto start = Clock::now();
  while (Clock::now() - start < 200ms) {
    h.loop.run_once(100);
    ++rounds;
  }
  CHECK(rounds <= 5);
  CHECK(h.pool.in_use() == 0);  // an idle connection holds no pipe
}

TEST_CASE("relay: after a half-close the relay does not spin on the finished side") {
  Harness h({});
  h.x.send("done", true);
  REQUIRE(h.run_until([&] { return h.y.finished(); }, 5s));
  int rounds = 0;
  auto start = Clock::now();
  while (Clock::now() - start < 200ms) {
    h.loop.run_once(100);
    ++rounds;
  }
  CHECK(rounds <= 5);
  CHECK(h.done_calls == 0);
}

TEST_CASE("relay: a side finished both ways is closed while the other direction drains") {
  // Y half-closes first. Then X sends 512 KiB and its FIN while Y is not reading: with a 1 MiB pipe
  // and small buffers beyond the service side, the relay reads all of it and the FIN, and most
  // bytes wait in its pipe. The visitor side is then done both ways, so the relay closes it at
  // once: left open, the hang-up
  // epoll reports for it would wake the loop again and again while the bytes wait for Y.
  Harness h({.max_pipes = 16, .pipe_size = 1024 * 1024, .small_service_path = true});
  h.y.send("early goodbye", true);
  REQUIRE(h.run_until([&] { return h.x.finished(); }, 5s));
  CHECK(h.x.eof);
  h.y.reading = false;
  const std::string payload = random_bytes(512 * 1024, 10);
  h.x.send(payload, true);
  REQUIRE(h.run_until([&] { return h.x.shut; }, 5s));
  h.run_until([&] { return !fd_is_open(h.visitor_fd); }, 1s);  // time for the relay to read the FIN
  int rounds = 0;
  auto start = Clock::now();
  while (Clock::now() - start < 200ms) {
    h.loop.run_once(100);
    ++rounds;
  }
  INFO(h.state() << "; pipes in use " << h.pool.in_use());
  CHECK(rounds <= 5);
  CHECK_FALSE(fd_is_open(h.visitor_fd));
  CHECK(h.done_calls == 0);  // bytes for Y are still waiting

  h.y.reading = true;
  bool ended = h.run_until([&] { return h.finished() && h.y.finished(); });
  INFO(h.state());
  REQUIRE(ended);
  CHECK(h.y.eof);
  CHECK(difference(payload, h.y.in) == "");
  REQUIRE(h.outcome);
  CHECK_FALSE(h.outcome->reset);
  CHECK(h.outcome->bytes_to_service == payload.size());
  CHECK(h.outcome->bytes_to_visitor == 13);
}

TEST_CASE("relay: a receiver that stops reading does not make the relay spin") {
  // X writes many small segments while Y reads nothing. Once everything on the way is full, the
  // relay must wait for Y (Linux: a pipe can run out of slots long before it runs out of bytes).
  auto config = GENERATE(0, 1);
  const PoolConfig& c = kConfigs[config];
  INFO("pool: " << c.name);
  Harness h({.max_pipes = c.max_pipes, .pipe_size = c.pipe_size});
  int one = 1;
  ::setsockopt(h.x.fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  h.x.chunk = 100;
  h.y.reading = false;
  h.x.send(random_bytes(8 * kMiB, 7));
  size_t last_sent = 0;
  int still = 0;
  REQUIRE(h.run_until([&] {
    still = h.x.sent == last_sent ? still + 1 : 0;
    last_sent = h.x.sent;
    return still > 50;
  }));
  int rounds = 0;
  auto start = Clock::now();
  while (Clock::now() - start < 200ms) {
    h.loop.run_once(100);
    ++rounds;
  }
  INFO(h.state() << "; pipes in use " << h.pool.in_use());
  CHECK(rounds <= 5);
  // And it still delivers everything once Y reads again.
  h.y.reading = true;
  h.x.chunk = 256 * 1024;
  h.x.send("", true);
  REQUIRE(h.run_until([&] { return h.y.finished(); }, 20s));
  CHECK(h.y.in.size() == 8 * kMiB);
}

TEST_CASE("relay: unix stream sockets are relayed the same with and without pipes") {
  // Whether splice takes unix sockets depends on the kernel; either way the relay falls back to
  // its buffer where it must, and the bytes are the same.
  auto config = GENERATE(0, 1);
  const PoolConfig& c = kConfigs[config];
  INFO("pool: " << c.name);
  Harness h({.max_pipes = c.max_pipes, .pipe_size = c.pipe_size, .unix_sockets = true});
  const std::string x_to_y = random_bytes(2 * kMiB + 1, 8);
  const std::string y_to_x = random_bytes(1 * kMiB + 9, 9);
  h.x.send(x_to_y, true);
  h.y.send(y_to_x, true);
  bool ended = h.run_until([&] { return h.finished() && h.x.finished() && h.y.finished(); });
  INFO(h.state());
  REQUIRE(ended);
  CHECK(difference(x_to_y, h.y.in) == "");
  CHECK(difference(y_to_x, h.x.in) == "");
  REQUIRE(h.outcome);
  CHECK_FALSE(h.outcome->reset);
  CHECK(h.outcome->bytes_to_service == x_to_y.size());
  CHECK(h.outcome->bytes_to_visitor == y_to_x.size());
  CHECK(h.pool.in_use() == 0);
}

TEST_CASE("relay: unix sockets: half-close then an answer after it then the other side closes") {
  Harness h({.unix_sockets = true});
  h.x.send("question", true);
  REQUIRE(h.run_until([&] { return h.y.finished(); }, 5s));
  CHECK(h.y.eof);
  CHECK(h.y.in == "question");
  h.y.send("answer");
  REQUIRE(h.run_until([&] { return h.x.in == "answer"; }, 5s));
  CHECK(h.done_calls == 0);
  h.y.fd.reset();  // Y had read everything, so this is an end of stream, not an error
  bool ended = h.run_until([&] { return h.finished() && h.x.finished(); }, 5s);
  INFO(h.state());
  REQUIRE(ended);
  CHECK(h.x.eof);
  REQUIRE(h.outcome);
  CHECK_FALSE(h.outcome->reset);
  CHECK(h.outcome->bytes_to_service == 8);
  CHECK(h.outcome->bytes_to_visitor == 6);
}

TEST_CASE(
    "relay: unix sockets: a receiver closing with bytes on the way means reset and no SIGPIPE") {
  // Y stops reading, X keeps sending, then Y closes: the relay's next write to the service side
  // fails (EPIPE). That must end the relay as a reset without raising SIGPIPE, on either path.
  auto config = GENERATE(0, 1);
  const PoolConfig& c = kConfigs[config];
  INFO("pool: " << c.name);
  Harness h({.max_pipes = c.max_pipes, .pipe_size = c.pipe_size, .unix_sockets = true});
  h.y.reading = false;
  h.x.send(random_bytes(4 * kMiB, 12));
  size_t last_sent = 0;
  int still = 0;
  REQUIRE(h.run_until([&] {
    still = h.x.sent == last_sent ? still + 1 : 0;
    last_sent = h.x.sent;
    return still > 50;
  }));
  SECTION("Y closes with unread bytes (its peer sees ECONNRESET)") {
    h.y.fd.reset();
  }
  SECTION("Y reads what has arrived, then closes (its peer sees EPIPE)") {
    h.y.reading = true;
    h.y.step();  // drains Y's queue without letting the relay refill it
    REQUIRE(h.y.error == 0);
    h.y.fd.reset();
  }
  bool ended = h.run_until([&] { return h.finished() && h.x.finished(); }, 5s);
  INFO(h.state());
  REQUIRE(ended);
  REQUIRE(h.outcome);
  CHECK(h.outcome->reset);
  CHECK_THAT(h.outcome->reason, Catch::Contains("service side"));
  CHECK(h.pool.in_use() == 0);
}

TEST_CASE("relay: the relayed sockets get TCP_NODELAY") {
  Harness h({});
  for (int fd : {h.visitor_fd, h.service_fd}) {
    int value = 0;
    socklen_t length = sizeof value;
    REQUIRE(::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &value, &length) == 0);
    CHECK(value != 0);
  }
}

TEST_CASE("relay: many relays on one loop with one small pool all deliver") {
  // 20 relays share 4 pipes: most flows must use the buffer path at times.
  EventLoop loop;
  PipePool pool(4, 64 * 1024);
  Loopback loopback;
  struct One {
    Peer x, y;
    std::string x_to_y, y_to_x;
    std::unique_ptr<Relay> relay;
    std::optional<RelayOutcome> outcome;
  };
  std::vector<std::unique_ptr<One>> ones;
  for (unsigned i = 0; i < 20; ++i) {
    auto one = std::make_unique<One>();
    auto xa = loopback.connect();
    auto by = loopback.connect();
    one->x.fd = std::move(xa.connecting);
    one->y.fd = std::move(by.accepted);
    one->x_to_y = random_bytes(200 * 1024 + i, 100 + i);
    one->y_to_x = random_bytes(100 * 1024 + i, 200 + i);
    one->x.send(one->x_to_y, true);
    one->y.send(one->y_to_x, true);
    One* raw = one.get();
    one->relay =
        std::make_unique<Relay>(loop, pool, std::move(xa.accepted), std::move(by.connecting),
                                [raw](const RelayOutcome& o) { raw->outcome = o; });
    ones.push_back(std::move(one));
  }
  auto deadline = Clock::now() + 10s;
  auto all_done = [&] {
    for (auto& one : ones)
      if (!one->outcome || !one->x.finished() || !one->y.finished()) return false;
    return true;
  };
  const int sigpipes_before = unit_tests::sigpipe_count();
  size_t most_pipes_in_use = 0;
  while (!all_done() && Clock::now() < deadline) {
    loop.run_once(1);
    require_no_sigpipe_since(sigpipes_before, "20 relays sharing 4 pipes");
    for (auto& one : ones) {
      one->x.step();
      one->y.step();
    }
    most_pipes_in_use = std::max(most_pipes_in_use, pool.in_use());
  }
  REQUIRE(all_done());
  CHECK(most_pipes_in_use <= 4);
  CHECK(pool.idle() > 0);  // pipes were used, and came back
  CHECK(pool.idle() <= 4);
  for (size_t i = 0; i < ones.size(); ++i) {
    INFO("relay " << i);
    CHECK(difference(ones[i]->x_to_y, ones[i]->y.in) == "");
    CHECK(difference(ones[i]->y_to_x, ones[i]->x.in) == "");
    CHECK_FALSE(ones[i]->outcome->reset);
  }
  CHECK(pool.in_use() == 0);
}

TEST_CASE(
    "relay: one direction ended and the other stalled by a reader that does not read: the loop "
    "sleeps, then every byte and the FIN arrive") {
  // docs/ARCHITECTURE.md, failure behaviour. Y shuts its write side at once and reads nothing; X
  // sends N bytes and then its FIN. Once X's FIN reaches the visitor side, that socket has ended
  // both ways (our FIN out, X's in) and epoll reports a hang-up for it whatever the interest, while
  // the relay cannot read it: its flow waits for Y. Small buffers beyond the service side make the
  // flow stall early, a large receive buffer on the visitor side lets X's bytes and FIN reach it;
  // which sizes end in that state still depends on the kernel's buffers, hence the sweep.
  auto config = GENERATE(0, 1);
  auto size = GENERATE(as<size_t>{}, 64 * 1024, 128 * 1024, 192 * 1024, 256 * 1024, 384 * 1024,
                       512 * 1024, 768 * 1024, 1 * kMiB, 2 * kMiB, 4 * kMiB, 8 * kMiB);
  const PoolConfig& c = kConfigs[config];
  INFO("pool: " << c.name << "; payload " << size << " bytes");
  Harness h({.max_pipes = c.max_pipes,
             .pipe_size = c.pipe_size,
             .small_service_path = true,
             .visitor_receive_buffer = 1024 * 1024});
  h.y.reading = false;
  h.y.send("", true);
  REQUIRE(h.run_until([&] { return h.x.finished(); }, 5s));
  REQUIRE(h.x.eof);

  const std::string payload = random_bytes(size, 13);
  h.x.send(payload, true);
  // X sends until everything and its FIN are out, or every buffer on the way is full.
  size_t last_sent = 0;
  int still = 0;
  REQUIRE(h.run_until([&] {
    still = h.x.sent == last_sent ? still + 1 : 0;
    last_sent = h.x.sent;
    return still > 50;
  }));

  const uint64_t rounds_before = h.loop.rounds();
  const auto start = Clock::now();
  while (Clock::now() - start < 300ms) h.loop.run_once(100);
  const uint64_t idle_rounds = h.loop.rounds() - rounds_before;
  INFO(h.state() << "; X's FIN sent: " << h.x.shut << "; loop rounds over 300 ms while Y reads "
                 << "nothing: " << idle_rounds);
  CHECK(idle_rounds <= 10);

  h.y.reading = true;
  bool ended = h.run_until([&] { return h.finished() && h.y.finished(); }, 20s);
  INFO(h.state());
  REQUIRE(ended);
  CHECK(h.y.eof);
  CHECK(difference(payload, h.y.in) == "");
  REQUIRE(h.outcome);
  CHECK_FALSE(h.outcome->reset);
  CHECK(h.outcome->bytes_to_service == payload.size());
  CHECK(h.outcome->bytes_to_visitor == 0);
  CHECK(h.pool.in_use() == 0);
}
