// fuzz-b-handshake: the server's port B in process. One live tunnel::server::Server on a loop with
// a manual clock; each input is one loopback connection to its B port that writes the input in
// pieces, lets the server react, and closes.
//
// Input layout:
//   byte 0, flags  bit 0  (reserved for the server with a token, once the server has auth)
//                  bit 1  half-close (SHUT_WR) after the last piece
//                  bit 2  let more than a handshake timeout pass at the end
//                  bit 3  close with a reset instead of a FIN
//                  bits 4-6  how many split bytes follow (0: the stream goes in one write)
//   split bytes    used in turn, one per piece: bits 0-5 the size (1 to 64 bytes); bit 6 moves the
//                  clock by 40% of the handshake timeout after the piece; bit 7 writes the next
//                  piece before the server runs, so that pieces coalesce in the socket
//   the rest       the bytes a peer sends on port B
//
// Properties (a violation aborts with its text): what the server sends is a sequence of valid
// protocol lines, with nothing after an ERR; a first line that is not a control hello, or no line
// within kMaxLineLength bytes, or a half-close or timeout before the line, gets the connection
// closed; an incomplete first line with time left and the socket open is not closed; the loop
// never counts an internal error; descriptors do not leak across inputs.
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <variant>

#include "server.hpp"
#include "server_config.hpp"
#include "tunnel/event_loop.hpp"
#include "tunnel/line_reader.hpp"
#include "tunnel/log.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/socket.hpp"

namespace {

using namespace tunnel;
using namespace std::chrono_literals;
namespace proto = tunnel::protocol;

[[noreturn]] void violated(const char* property, int line) {
  std::fprintf(stderr, "fuzz-b-handshake: property violated (b_handshake_fuzz.cpp:%d): %s\n", line,
               property);
  std::abort();
}

#define CHECK(property)                             \
  do {                                              \
    if (!(property)) violated(#property, __LINE__); \
  } while (false)

constexpr Duration kHandshakeTimeout = 500ms;
// A step of 40% never lands exactly on the deadline, so "timed out" is never a matter of rounding.
constexpr Duration kClockStep = kHandshakeTimeout * 2 / 5;
constexpr Duration kPastTimeout = kHandshakeTimeout * 11 / 10;
// Loop rounds after each piece: one for the listener's accept, one for the handshake's read, one
// for what that read set off. Loopback delivery is synchronous, so this is deterministic.
constexpr int kRoundsPerPiece = 3;
// Bound on the rounds spent waiting for the server to close at the end of an input.
constexpr int kRoundsToClose = 12;
constexpr uint64_t kFdCheckEvery = 1000;
// libFuzzer may hold a file or two open at a check; a real leak grows by at least one per input.
constexpr size_t kFdSlack = 8;

size_t open_fds() {
  size_t count = 0;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (dirent* entry = ::readdir(dir))
      if (entry->d_name[0] != '.') ++count;
    ::closedir(dir);
  }
  return count;
}

struct Harness {
  EventLoop loop;
  std::unique_ptr<server::Server> plain;
  uint64_t inputs = 0;
  size_t fd_baseline = 0;

  Harness() {
    // The log is off unless asked for: a line per input would slow fuzzing tenfold. Set
    // TUNNEL_FUZZ_LOG=debug to watch one input go through.
    const char* level = std::getenv("TUNNEL_FUZZ_LOG");
    log::set_level(level ? log::parse_level(level) : log::Level::off);
    // Time moves only when an input says so: timeouts fire at the same point on every run.
    loop.use_manual_clock();
    server::ServerConfig config;
    config.listen_a = HostPort{"127.0.0.1", 0};
    config.listen_b = HostPort{"127.0.0.1", 0};
    config.handshake_timeout = kHandshakeTimeout;
    config.probe_timeout = 200ms;
    config.pair_timeout = 2s;
    plain = std::make_unique<server::Server>(loop, config);
  }

  void pump(int rounds) {
    for (int i = 0; i < rounds; ++i) loop.run_once(0);
  }
};

Harness& harness() {
  // Never destroyed: the servers live for the whole process, and exit needs no orderly teardown.
  static Harness* h = new Harness;
  return *h;
}

enum class Peer { open, closed, reset };

// What the server sent, and whether it has closed.
struct Replies {
  std::string bytes;
  Peer state = Peer::open;

  void read_from(int fd) {
    char buffer[4096];
    while (state == Peer::open) {
      ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n > 0) {
        bytes.append(buffer, static_cast<size_t>(n));
      } else if (n == 0) {
        state = Peer::closed;
      } else if (errno == EINTR) {
        continue;
      } else if (errno == EAGAIN) {
        return;
      } else {
        state = Peer::reset;
      }
    }
  }
  bool ended() const { return state != Peer::open; }
};

// The server speaks only lines of docs/PROTOCOL.md on B, the words a server may send, and stops
// after ERR.
void check_replies(const Replies& replies) {
  LineReader reader;
  reader.feed(replies.bytes);
  bool after_err = false;
  while (auto line = reader.next()) {
    CHECK(!after_err);
    auto parsed = proto::parse_message(*line);
    auto* message = std::get_if<proto::Message>(&parsed);
    CHECK(message != nullptr);
    switch (message->verb) {
      case proto::Verb::err:
        after_err = true;
        break;
      case proto::Verb::ok:
      case proto::Verb::ping:
      case proto::Verb::pong:
      case proto::Verb::new_conn:
      case proto::Verb::close_conn:
      case proto::Verb::auth_challenge:
      case proto::Verb::auth_ok:
        break;
      case proto::Verb::fail:
      case proto::Verb::auth_proof:
      case proto::Verb::unknown:
        violated("the server sent a client's word", __LINE__);
    }
  }
  CHECK(!reader.overflowed());
  // A FIN comes after whole lines; a reset may cut what was in flight.
  if (replies.state == Peer::closed) CHECK(reader.buffered() == 0);
}

struct Input {
  uint8_t flags = 0;
  std::string_view splits;
  std::string_view stream;
};

Input decode(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  Input in;
  if (bytes.empty()) return in;
  in.flags = static_cast<uint8_t>(bytes[0]);
  size_t split_bytes = (in.flags >> 4) & 0x07;
  bytes.remove_prefix(1);
  if (split_bytes > bytes.size()) split_bytes = bytes.size();
  in.splits = bytes.substr(0, split_bytes);
  in.stream = bytes.substr(split_bytes);
  return in;
}

Fd connect_loopback(const SocketAddress& to) {
  std::error_code ec;
  Fd fd = start_connect(to, ec);
  CHECK(fd && !ec);
  return fd;
}

// What the server must have done with the connection by the end, judged from the first line.
enum class Expect { closed, open, either };

Expect expected_outcome(std::string_view stream, size_t sent, bool half_closed,
                        Duration before_line) {
  size_t newline = stream.find('\n');
  bool line_arrived = newline != std::string_view::npos && newline < sent;
  if (line_arrived && newline + 1 <= kMaxLineLength) {
    auto hello = proto::parse_hello(stream.substr(0, newline));
    // A control hello opens a session (or an auth exchange), which later lines may end.
    if (std::holds_alternative<proto::ControlHello>(hello)) return Expect::either;
    return Expect::closed;
  }
  if (sent >= kMaxLineLength) return Expect::closed;  // no `\n` among the first 256 bytes
  if (half_closed || before_line > kHandshakeTimeout) return Expect::closed;
  return Expect::open;
}

void run_one(Harness& h, const Input& in) {
  server::Server& server = *h.plain;
  Fd client = connect_loopback(server.address_b());
  h.pump(kRoundsPerPiece);

  Replies replies;
  std::string_view rest = in.stream;
  size_t sent = 0;
  size_t turn = 0;
  Duration elapsed{};
  Duration before_line{};  // clock moved before the first `\n` was written
  bool line_written = false;
  while (!rest.empty() && !replies.ended()) {
    uint8_t split =
        in.splits.empty() ? 0x3f : static_cast<uint8_t>(in.splits[turn++ % in.splits.size()]);
    size_t size = in.splits.empty() ? rest.size() : static_cast<size_t>(split & 0x3f) + 1;
    if (size > rest.size()) size = rest.size();
    ssize_t n = ::send(client.get(), rest.data(), size, MSG_NOSIGNAL);
    if (n < 0) break;  // the server closed (EPIPE, ECONNRESET) or the buffer is full
    auto piece = rest.substr(0, static_cast<size_t>(n));
    if (piece.find('\n') != std::string_view::npos) line_written = true;
    sent += piece.size();
    rest.remove_prefix(piece.size());
    if (!(split & 0x80)) h.pump(kRoundsPerPiece);
    if (split & 0x40) {
      h.loop.advance(kClockStep);
      elapsed += kClockStep;
      if (!line_written) before_line = elapsed;
      h.pump(1);
    }
    replies.read_from(client.get());
  }
  h.pump(kRoundsPerPiece);
  bool half_closed = (in.flags & 0x02) != 0;
  if (half_closed) ::shutdown(client.get(), SHUT_WR);
  if (in.flags & 0x04) {
    h.loop.advance(kPastTimeout);
    if (!line_written) before_line += kPastTimeout;
  }
  for (int round = 0; round < kRoundsToClose && !replies.ended(); ++round) {
    h.pump(1);
    replies.read_from(client.get());
  }

  check_replies(replies);
  switch (expected_outcome(in.stream, sent, half_closed, before_line)) {
    case Expect::closed:
      CHECK(replies.ended());
      break;
    case Expect::open:
      CHECK(!replies.ended());
      break;
    case Expect::either:
      break;
  }

  if (in.flags & 0x08) set_linger_reset(client.get());
  client.reset();
  // Let the server see the close: a session it opened ends before the next input arrives, so that
  // no input meets the previous one's session (which would start a liveness probe).
  for (int round = 0; round < kRoundsToClose && server.arbiter().online(); ++round) h.pump(1);
  h.pump(kRoundsPerPiece);
  CHECK(!server.arbiter().online());
  CHECK(h.loop.internal_errors() == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Harness& h = harness();
  run_one(h, decode(data, size));
  ++h.inputs;
  if (h.inputs == 1) h.fd_baseline = open_fds();
  if (h.inputs % kFdCheckEvery == 0) {
    size_t now = open_fds();
    if (now > h.fd_baseline + kFdSlack) {
      std::fprintf(stderr,
                   "fuzz-b-handshake: %zu descriptors open after %llu inputs, %zu after 1\n", now,
                   static_cast<unsigned long long>(h.inputs), h.fd_baseline);
      std::abort();
    }
  }
  return 0;
}
