// fuzz-b-handshake: the server's port B in process. Two live tunnel::server::Server on one loop
// with a manual clock, one without a token and one with (auth required); each input is one loopback
// connection to a B port that writes the input in pieces, lets the server react, and closes.
//
// Input layout:
//   byte 0, flags  bit 0  the server with a token (docs/PROTOCOL.md, "Authentication")
//                  bit 1  half-close (SHUT_WR) after the last piece
//                  bit 2  let more than a handshake timeout pass at the end
//                  bit 3  close with a reset instead of a FIN
//                  bits 4-6  how many split bytes follow (0: the stream goes in one write)
//                  bit 7  with a token: play a client that holds it (see sign_proof_line)
//   split bytes    used in turn, one per piece: bits 0-5 the size (1 to 64 bytes); bit 6 moves the
//                  clock by 40% of the handshake timeout after the piece; bit 7 writes the next
//                  piece before the server runs, so that pieces coalesce in the socket
//   the rest       the bytes a peer sends on port B
//
// Properties (a violation aborts with its text), from docs/PROTOCOL.md:
// - the server sends only valid protocol lines with the words a server may send, nothing after ERR;
// - its first answer fits the first line: OK to a control hello (no token), AUTH-CHALLENGE to one
//   offering auth and ERR auth to one that does not (token), nothing to a data line without a
//   token, ERR auth to any data line with one (nobody here has a session key), ERR <code> to a bad
//   hello unless its second word is DATA (then nothing);
// - an AUTH-OK carries the server's proof for the transcript, followed by OK auth;
// - a first line that is not a control hello, no `\n` within kMaxLineLength bytes, or a half-close
//   or a timeout before the line gets the connection closed; an incomplete first line with time
//   left and the socket open does not;
// - the loop never counts an internal error, and descriptors do not leak across inputs.
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "server.hpp"
#include "server_config.hpp"
#include "tunnel/auth.hpp"
#include "tunnel/crypto.hpp"
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

// The token of docs/PROTOCOL.md's worked example.
constexpr std::string_view kToken = "Qm9yaW5nIGV4YW1wbGUgdG9rZW4sIG5ldmVyIHVzZSBtZQ";

struct Harness {
  EventLoop loop;
  std::unique_ptr<server::Server> plain;
  std::unique_ptr<server::Server> with_token;
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
    server::ServiceConfig service;
    service.name = "default";
    service.listen = HostPort{"127.0.0.1", 0};
    config.services = {service};
    config.listen_b = HostPort{"127.0.0.1", 0};
    config.handshake_timeout = kHandshakeTimeout;
    config.probe_timeout = 200ms;
    config.pair_timeout = 2s;
    plain = std::make_unique<server::Server>(loop, config);
    config.token = std::string(kToken);
    with_token = std::make_unique<server::Server>(loop, config);
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

  // The complete lines so far, checked: valid protocol lines, words a server may send, nothing
  // after ERR.
  std::vector<proto::Message> lines() const {
    LineReader reader;
    reader.feed(bytes);
    std::vector<proto::Message> messages;
    while (auto line = reader.next()) {
      CHECK(messages.empty() || messages.back().verb != proto::Verb::err);
      auto parsed = proto::parse_message(*line);
      auto* message = std::get_if<proto::Message>(&parsed);
      CHECK(message != nullptr);
      switch (message->verb) {
        case proto::Verb::ok:
        case proto::Verb::err:
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
          violated("the server sent a word only a client sends", __LINE__);
      }
      messages.push_back(std::move(*message));
    }
    CHECK(!reader.overflowed());
    return messages;
  }
};

struct Input {
  uint8_t flags = 0;
  std::string_view splits;
  std::string stream;  // a copy: sign_proof_line may rewrite a proof in it
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
  in.stream = std::string(bytes.substr(split_bytes));
  return in;
}

// The fuzzer cannot compute an HMAC, so without help no input would get past AUTH-PROOF. Playing
// a client that holds the token, once the challenge is known, the first AUTH-PROOF line not yet
// written whose name and nonce are well formed gets the proof that matches; the transcript is kept
// to check the server's AUTH-OK. Only the proof's 64 hex digits change, so the splits stay put.
std::optional<auth::Transcript> sign_proof_line(std::string& stream, size_t written,
                                                const std::string& challenge) {
  // The first line that starts at or after `written`.
  size_t start = 0;
  if (written > 0) {
    start = stream.find('\n', written - 1);
    if (start == std::string::npos) return std::nullopt;
    ++start;
  }
  while (start < stream.size()) {
    size_t end = stream.find('\n', start);
    if (end == std::string::npos) return std::nullopt;
    auto parsed = proto::parse_message(std::string_view(stream).substr(start, end - start));
    auto* message = std::get_if<proto::Message>(&parsed);
    if (message && message->verb == proto::Verb::auth_proof) {
      auth::Transcript transcript{challenge, message->nonce, message->word, ""};
      auto proof = crypto::to_hex(auth::client_proof(kToken, transcript));
      stream.replace(end - proof.size(), proof.size(), proof);  // the proof ends the line
      return transcript;
    }
    start = end + 1;
  }
  return std::nullopt;
}

// An empty Fd when the system is out of local ports (TIME_WAIT after a long run): that input is
// skipped, since it says nothing about the server.
Fd connect_loopback(const SocketAddress& to) {
  std::error_code ec;
  Fd fd = start_connect(to, ec);
  if (!fd &&
      (ec == std::errc::address_not_available || ec == std::errc::resource_unavailable_try_again))
    return fd;
  CHECK(fd && !ec);
  // Without it Nagle holds a piece back until the previous one is acknowledged, and the server
  // would see the pieces whenever the delayed ACK fires, not when the input says.
  set_nodelay(fd.get());
  return fd;
}

// How the first line went: whether the server read it before its handshake timeout, and what it
// was.
struct FirstLine {
  bool sent = false;       // its `\n` was written
  bool delivered = false;  // and the server has run since
  Duration before{};       // clock moved before it was delivered
  bool in_time() const { return delivered && before < kHandshakeTimeout; }
};

void check_first_answer(bool with_token, std::string_view line,
                        const std::vector<proto::Message>& answers, const Replies& replies) {
  auto hello = proto::parse_hello(line);
  if (auto* control = std::get_if<proto::ControlHello>(&hello)) {
    if (answers.empty()) return;  // a later line or the close may have cut it short
    const auto& first = answers.front();
    bool offers_auth = false;
    bool offers_services = false;
    bool offers_pool = false;
    for (const auto& feature : control->features) {
      offers_auth |= feature == auth::kFeature;
      offers_services |= feature == proto::kServicesFeature;
      offers_pool |= feature == proto::kPoolFeature;
    }
    if (!with_token) {
      // The OK lists exactly what both sides speak: without a token, services and pool if offered
      // (the harness's servers keep the default --pool-max, so they grant a pool).
      std::vector<std::string> expected;
      if (offers_services) expected.emplace_back(proto::kServicesFeature);
      if (offers_pool) expected.emplace_back(proto::kPoolFeature);
      CHECK(first.verb == proto::Verb::ok && first.features == expected);
    } else if (offers_auth) {
      CHECK(first.verb == proto::Verb::auth_challenge);
    } else {
      CHECK(first.verb == proto::Verb::err && first.word == proto::kErrAuth);
    }
    return;
  }
  if (std::holds_alternative<proto::DataHello>(hello)) {
    if (!with_token) {
      CHECK(replies.bytes.empty());
    } else if (!answers.empty()) {
      CHECK(answers.size() == 1 && answers.front().verb == proto::Verb::err &&
            answers.front().word == proto::kErrAuth);
    }
    return;
  }
  const auto& bad = std::get<proto::Malformed>(hello);
  if (bad.claimed == proto::HelloKind::data) {
    CHECK(replies.bytes.empty());
  } else if (!answers.empty()) {
    CHECK(answers.size() == 1 && answers.front().verb == proto::Verb::err &&
          answers.front().word == bad.code);
  }
}

// The server proves it holds the token, then opens the session.
void check_auth_ok(const auth::Transcript& transcript, const std::vector<proto::Message>& answers) {
  for (size_t i = 0; i < answers.size(); ++i) {
    if (answers[i].verb != proto::Verb::auth_ok) continue;
    CHECK(auth::proof_matches(auth::server_proof(kToken, transcript), answers[i].proof));
    if (i + 1 < answers.size()) {
      CHECK(answers[i + 1].verb == proto::Verb::ok);
      CHECK(answers[i + 1].features == std::vector<std::string>{std::string(auth::kFeature)});
    }
  }
}

// What the server must have done with the connection by the end.
enum class Expect { closed, open, either };

Expect expected_outcome(std::string_view stream, size_t sent, bool half_closed,
                        const FirstLine& first) {
  size_t newline = stream.find('\n');
  bool line_arrived = newline != std::string_view::npos && newline < sent;
  if (line_arrived && newline + 1 <= kMaxLineLength) {
    auto hello = proto::parse_hello(stream.substr(0, newline));
    // A control hello opens a session (or an auth exchange), which later lines may end.
    if (std::holds_alternative<proto::ControlHello>(hello)) return Expect::either;
    return Expect::closed;
  }
  if (sent >= kMaxLineLength) return Expect::closed;  // no `\n` among the first 256 bytes
  if (half_closed || first.before > kHandshakeTimeout) return Expect::closed;
  return Expect::open;
}

void run_one(Harness& h, Input& in) {
  bool with_token = (in.flags & 0x01) != 0;
  bool holds_token = with_token && (in.flags & 0x80) != 0;
  server::Server& server = with_token ? *h.with_token : *h.plain;
  Fd client = connect_loopback(server.address_b());
  if (!client) return;
  h.pump(kRoundsPerPiece);

  Replies replies;
  FirstLine first;
  std::optional<auth::Transcript> signed_for;
  size_t sent = 0;
  size_t turn = 0;
  auto after_run = [&] {
    if (first.sent) first.delivered = true;
  };
  while (sent < in.stream.size() && !replies.ended()) {
    if (holds_token && !signed_for) {
      auto answers = replies.lines();
      if (!answers.empty() && answers.front().verb == proto::Verb::auth_challenge)
        signed_for = sign_proof_line(in.stream, sent, answers.front().nonce);
    }
    uint8_t split =
        in.splits.empty() ? 0x3f : static_cast<uint8_t>(in.splits[turn++ % in.splits.size()]);
    size_t size = in.splits.empty() ? in.stream.size() : static_cast<size_t>(split & 0x3f) + 1;
    if (size > in.stream.size() - sent) size = in.stream.size() - sent;
    ssize_t n = ::send(client.get(), in.stream.data() + sent, size, MSG_NOSIGNAL);
    if (n < 0) break;  // the server closed (EPIPE, ECONNRESET) or the buffer is full
    if (in.stream.find('\n', sent) < sent + static_cast<size_t>(n)) first.sent = true;
    sent += static_cast<size_t>(n);
    if (!(split & 0x80)) {
      h.pump(kRoundsPerPiece);
      after_run();
    }
    if (split & 0x40) {
      h.loop.advance(kClockStep);  // runs the timers now: a line still unread may lose the race
      if (!first.delivered) first.before += kClockStep;
      h.pump(1);
      after_run();
    }
    replies.read_from(client.get());
  }
  h.pump(kRoundsPerPiece);
  after_run();
  bool half_closed = (in.flags & 0x02) != 0;
  if (half_closed) ::shutdown(client.get(), SHUT_WR);
  if (in.flags & 0x04) {
    h.loop.advance(kPastTimeout);
    if (!first.delivered) first.before += kPastTimeout;
  }
  for (int round = 0; round < kRoundsToClose && !replies.ended(); ++round) {
    h.pump(1);
    replies.read_from(client.get());
  }

  auto answers = replies.lines();
  // A FIN comes after whole lines; a reset may cut what was in flight.
  if (replies.state == Peer::closed) CHECK(replies.bytes.empty() || replies.bytes.back() == '\n');
  size_t newline = in.stream.find('\n');
  if (first.in_time() && newline != std::string::npos && newline + 1 <= kMaxLineLength)
    check_first_answer(with_token, std::string_view(in.stream).substr(0, newline), answers,
                       replies);
  if (signed_for) check_auth_ok(*signed_for, answers);
  switch (expected_outcome(in.stream, sent, half_closed, first)) {
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
  for (int round = 0; round < kRoundsToClose && server.sessions().online() > 0; ++round) h.pump(1);
  h.pump(kRoundsPerPiece);
  CHECK(!server.sessions().online() > 0);
  CHECK(h.loop.internal_errors() == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Harness& h = harness();
  Input input = decode(data, size);
  run_one(h, input);
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
