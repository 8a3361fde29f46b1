// TlsRelay over real loopback TCP with a real TLS 1.3 handshake (a self-signed certificate made at
// test time): P <-> plain side [TlsRelay] TLS side <-> T, where P is a plain socket and T a
// tls::Stream, both the test's, driven without blocking between loop rounds. The TLS side is the
// service side (as on the server) or the visitor side (as on the client). Covers integrity both
// ways at once, the initial bytes and the Stream's pending bytes, half-close both ways, resets and
// truncation, key updates, slow readers without spinning, records sent in parts through a tiny
// socket buffer, buffers (the relay's and its Stream's) held only while bytes move, abort,
// RelaySet's TLS start, and descriptors.
#include "tunnel/tls_relay.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
// From the ASan runtime (GCC ships no header that declares it).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#endif

#include "tls_test_support.hpp"
#include "tunnel/event_loop.hpp"
#include "tunnel/pipe_pool.hpp"
#include "tunnel/relay.hpp"
#include "tunnel/relay_set.hpp"
#include "tunnel/socket.hpp"
#include "tunnel/tls.hpp"

using namespace std::chrono_literals;
using tunnel::Clock;
using tunnel::ConnId;
using tunnel::Duration;
using tunnel::EventLoop;
using tunnel::Fd;
using tunnel::RelayOutcome;
using tunnel::RelaySet;
using tunnel::TlsRelay;
using tunnel::TlsSide;
using tunnel::tls::IoResult;
using tunnel::tls::IoStatus;
using tunnel::tls::Stream;

namespace unit_tests {
int sigpipe_count();  // main.cpp
}

namespace {

constexpr size_t kKiB = 1024;
constexpr size_t kMiB = 1024 * 1024;

// One self-signed certificate for localhost and both contexts, made once for the whole run.
struct Certs {
  tls_test::TempDir dir;
  tls_test::Identity identity = tls_test::make_identity(dir, "relay-server", {});
  tunnel::tls::ServerContext server = tunnel::tls::ServerContext::load(identity.cert, identity.key);
  tunnel::tls::ClientContext client =
      tunnel::tls::ClientContext::load({.ca_file = identity.cert, .server_name = "localhost"});
};

Certs& certs() {
  static Certs made;
  return made;
}

const char* side_label(TlsSide side) {
  return side == TlsSide::service ? "TLS side = service side (server)"
                                  : "TLS side = visitor side (client)";
}

std::string diff(const std::string& sent, const std::string& received) {
  if (sent == received) return "";
  size_t i = 0;
  while (i < sent.size() && i < received.size() && sent[i] == received[i]) ++i;
  return "got " + std::to_string(received.size()) + " of " + std::to_string(sent.size()) +
         " bytes, first difference at " + std::to_string(i);
}

bool is_open(int fd) {
  return ::fcntl(fd, F_GETFD) != -1;
}

// Bytes of heap in use by this process now (ASan's own allocator when it is on).
size_t heap_in_use() {
#if defined(__SANITIZE_ADDRESS__)
  return __sanitizer_get_current_allocated_bytes();
#else
  struct mallinfo2 info = ::mallinfo2();
  return info.uordblks + info.hblkhd;
#endif
}

// P: the plain end beyond the relay's plain side.
struct PlainPeer {
  Fd fd;
  std::string out;
  size_t sent = 0;
  bool fin_after = false;  // shut down for writing once `out` is sent
  bool fin_sent = false;
  bool reading = true;
  std::string in;
  bool eof = false;
  int error = 0;  // errno of a failed recv or send

  void send(std::string_view bytes, bool then_fin = false) {
    out += bytes;
    fin_after = then_fin;
  }
  bool ended() const { return eof || error != 0; }
  bool was_reset() const { return error == ECONNRESET || error == EPIPE; }

  void step() {
    if (!fd || error) return;
    while (sent < out.size()) {
      long n = tunnel::send_nosignal(fd.get(), out.data() + sent,
                                     std::min<size_t>(128 * kKiB, out.size() - sent));
      if (n <= 0) {
        if (errno != EAGAIN) error = errno;
        break;
      }
      sent += static_cast<size_t>(n);
    }
    if (!error && sent == out.size() && fin_after && !fin_sent) {
      REQUIRE(::shutdown(fd.get(), SHUT_WR) == 0);
      fin_sent = true;
    }
    char buffer[64 * 1024];
    while (reading && !ended()) {
      ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
      if (n > 0) {
        in.append(buffer, static_cast<size_t>(n));
      } else if (n == 0) {
        eof = true;
      } else {
        if (errno != EAGAIN) error = errno;
        break;
      }
    }
  }

  void reset() {
    tunnel::set_linger_reset(fd.get());
    fd.reset();
  }
};

// T: the TLS end beyond the relay's TLS side.
struct TlsPeer {
  Fd fd;
  std::unique_ptr<Stream> stream;
  std::string out;
  size_t sent = 0;
  size_t chunk = 64 * kKiB;     // largest single write
  size_t key_update_every = 0;  // request a key update after each this many bytes written
  size_t next_key_update = 0;
  int key_updates = 0;
  bool notify_after = false;  // close_notify once `out` is sent
  bool notified = false;
  bool reading = true;
  size_t bite = 32 * kKiB;  // largest single read
  int bites_per_step = 0;   // reads per step at most (0: until it waits)
  std::string in;
  std::optional<IoResult> read_end;   // eof, reset or error from read()
  std::optional<IoResult> write_end;  // reset or error from write() or shutdown_write()

  void send(std::string_view bytes, bool then_notify = false) {
    out += bytes;
    notify_after = then_notify;
  }
  bool read_ended() const { return read_end.has_value(); }
  IoStatus read_status() const { return read_end ? read_end->status : IoStatus::ok; }

  void step() {
    if (!stream) return;
    while (!write_end && sent < out.size()) {
      if (key_update_every > 0 && sent >= next_key_update) {
        REQUIRE(SSL_key_update(stream->native_handle(), SSL_KEY_UPDATE_REQUESTED) == 1);
        ++key_updates;
        next_key_update = sent + key_update_every;
      }
      // After want_*, the same start and at least as many bytes: `out` only grows.
      IoResult r = stream->write(
          std::span<const char>(out).subspan(sent, std::min(chunk, out.size() - sent)));
      if (r.status == IoStatus::ok) {
        sent += r.bytes;
      } else {
        if (r.status != IoStatus::want_read && r.status != IoStatus::want_write) write_end = r;
        break;
      }
    }
    if (!write_end && sent == out.size() && notify_after && !notified) {
      IoResult r = stream->shutdown_write();
      if (r.status == IoStatus::ok)
        notified = true;
      else if (r.status != IoStatus::want_write)
        write_end = r;
    }
    char buffer[32 * 1024];
    for (int bites = 0; reading && !read_end; ++bites) {
      if (bites_per_step > 0 && bites == bites_per_step) break;
      IoResult r = stream->read(std::span<char>(buffer, std::min(bite, sizeof buffer)));
      if (r.status == IoStatus::ok) {
        in.append(buffer, r.bytes);
      } else {
        if (r.status != IoStatus::want_read && r.status != IoStatus::want_write) read_end = r;
        break;
      }
    }
  }

  // A TCP FIN with no close_notify before it: a truncation.
  void fin_without_notify() { REQUIRE(::shutdown(fd.get(), SHUT_WR) == 0); }
  void reset() {
    stream.reset();
    tunnel::set_linger_reset(fd.get());
    fd.reset();
  }
};

// The four sockets of one relay, before it starts: P and T (the test's), the relay's two sides,
// and the relay's Stream, its handshake with T done.
struct Ends {
  TlsSide side = TlsSide::service;
  PlainPeer plain;
  TlsPeer tls;
  Fd visitor, service;  // the relay's, until it takes them
  std::unique_ptr<Stream> stream;
  int visitor_fd = -1, service_fd = -1;
  int relay_plain_fd() const { return side == TlsSide::service ? visitor_fd : service_fd; }
  int relay_tls_fd() const { return side == TlsSide::service ? service_fd : visitor_fd; }
};

void set_buffer(int fd, int option, size_t size) {
  int bytes = static_cast<int>(size);
  REQUIRE(::setsockopt(fd, SOL_SOCKET, option, &bytes, sizeof bytes) == 0);
}

Ends make_ends(TlsSide side) {
  Ends e;
  e.side = side;
  auto plain = tls_test::connect_loopback();
  auto secure = tls_test::connect_loopback();
  e.plain.fd = std::move(plain.client);
  Fd relay_plain = std::move(plain.server);
  Fd relay_tls;
  if (side == TlsSide::service) {
    // The server: the relay's TLS end is the accepted B connection.
    relay_tls = std::move(secure.server);
    e.tls.fd = std::move(secure.client);
    e.stream = certs().server.new_stream(relay_tls.get());
    e.tls.stream = certs().client.new_stream(e.tls.fd.get());
    auto done = tls_test::handshake_both(*e.tls.stream, *e.stream);
    INFO(done.client.detail << " / " << done.server.detail);
    REQUIRE(done.both_done());
    e.visitor = std::move(relay_plain);
    e.service = std::move(relay_tls);
  } else {
    // The client: the relay's TLS end is its data connection to B.
    relay_tls = std::move(secure.client);
    e.tls.fd = std::move(secure.server);
    e.stream = certs().client.new_stream(relay_tls.get());
    e.tls.stream = certs().server.new_stream(e.tls.fd.get());
    auto done = tls_test::handshake_both(*e.stream, *e.tls.stream);
    INFO(done.client.detail << " / " << done.server.detail);
    REQUIRE(done.both_done());
    e.visitor = std::move(relay_tls);
    e.service = std::move(relay_plain);
  }
  e.visitor_fd = e.visitor.get();
  e.service_fd = e.service.get();
  return e;
}

// One TlsRelay on its own loop.
struct Rig {
  EventLoop loop;
  Ends e;
  std::unique_ptr<TlsRelay> relay;
  int done_calls = 0;
  std::optional<RelayOutcome> outcome;
  bool closed_when_done = false;
  const int sigpipes_before = unit_tests::sigpipe_count();

  explicit Rig(TlsSide side, bool start_now = true) : e(make_ends(side)) {
    if (start_now) start();
  }

  void start(std::string_view initial = {}) {
    relay = std::make_unique<TlsRelay>(loop, std::move(e.visitor), std::move(e.service), e.side,
                                       std::move(e.stream), initial, [this](const RelayOutcome& o) {
                                         ++done_calls;
                                         outcome = o;
                                         closed_when_done =
                                             !is_open(e.visitor_fd) && !is_open(e.service_fd);
                                       });
  }

  void round() {
    loop.run_once(1);
    REQUIRE(unit_tests::sigpipe_count() == sigpipes_before);
    e.plain.step();
    e.tls.step();
  }

  template <typename Pred>
  bool run_until(Pred done, Clock::duration limit = 10s) {
    auto deadline = Clock::now() + limit;
    while (!done()) {
      if (Clock::now() >= deadline) return false;
      round();
    }
    return true;
  }

  // Rounds until nothing has moved for 100 ms: neither peer sent a byte, nor the relay delivered
  // one. Bytes may still trickle through the kernel for a while after the peers stall.
  void run_until_stalled() {
    uint64_t last = 0;
    auto still_since = Clock::now();
    REQUIRE(run_until([&] {
      uint64_t now = e.plain.sent + e.tls.sent;
      if (relay) now += relay->bytes_to_service() + relay->bytes_to_visitor();
      if (now != last) still_since = Clock::now();
      last = now;
      return Clock::now() - still_since > 100ms;
    }));
  }

  // Loop rounds over 200 ms of an idle stretch, peers untouched: a sleeping loop runs 2 or 3.
  int idle_rounds() {
    int rounds = 0;
    auto start_at = Clock::now();
    auto before = loop.rounds();
    uint64_t moved = relay ? relay->bytes_to_service() + relay->bytes_to_visitor() : 0;
    while (Clock::now() - start_at < 200ms) loop.run_once(100);
    rounds = static_cast<int>(loop.rounds() - before);
    if (relay) {
      UNSCOPED_INFO("moved while idle: " << relay->bytes_to_service() + relay->bytes_to_visitor() -
                                                moved);
    }
    return rounds;
  }

  bool finished() const { return done_calls > 0; }
  // Plaintext the relay carried from P to T, and from T to P.
  uint64_t plain_to_tls() const {
    return e.side == TlsSide::service ? outcome->bytes_to_service : outcome->bytes_to_visitor;
  }
  uint64_t tls_to_plain() const {
    return e.side == TlsSide::service ? outcome->bytes_to_visitor : outcome->bytes_to_service;
  }

  std::string state() const {
    std::string s = std::string(side_label(e.side)) + "; P: sent " + std::to_string(e.plain.sent) +
                    "/" + std::to_string(e.plain.out.size()) + " got " +
                    std::to_string(e.plain.in.size()) + (e.plain.eof ? " eof" : "") +
                    (e.plain.error ? std::string(" ") + std::strerror(e.plain.error) : "") +
                    "; T: sent " + std::to_string(e.tls.sent) + "/" +
                    std::to_string(e.tls.out.size()) + " got " + std::to_string(e.tls.in.size());
    if (e.tls.read_end) s += " read end '" + e.tls.read_end->detail + "'";
    if (e.tls.write_end) s += " write end '" + e.tls.write_end->detail + "'";
    if (relay) {
      uint64_t to_tls =
          e.side == TlsSide::service ? relay->bytes_to_service() : relay->bytes_to_visitor();
      uint64_t to_plain =
          e.side == TlsSide::service ? relay->bytes_to_visitor() : relay->bytes_to_service();
      s += "; relay moved P->T " + std::to_string(to_tls) + " T->P " + std::to_string(to_plain) +
           "; buffers " + std::to_string(relay->buffers_held());
    }
    if (outcome)
      s += "; outcome reset=" + std::to_string(outcome->reset) + " '" + outcome->reason + "'";
    return s;
  }
};

// Reads from a Stream (not yet the relay's) until `want` bytes came.
std::string read_exactly(Stream& stream, size_t want) {
  std::string got;
  auto deadline = Clock::now() + 5s;
  std::vector<char> buffer(want);
  while (got.size() < want) {
    REQUIRE(Clock::now() < deadline);
    IoResult r = stream.read(std::span<char>(buffer.data(), want - got.size()));
    if (r.status == IoStatus::ok) {
      got.append(buffer.data(), r.bytes);
    } else {
      REQUIRE((r.status == IoStatus::want_read || r.status == IoStatus::want_write));
      tls_test::wait_ready(stream.fd(), r.status == IoStatus::want_read ? POLLIN : POLLOUT, 20);
    }
  }
  return got;
}

const TlsSide kSides[] = {TlsSide::service, TlsSide::visitor};

}  // namespace

TEST_CASE("tls relay: 1 MiB each way at once arrives unchanged, then both ends close cleanly") {
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side);
  const std::string p_to_t = tls_test::random_text(1 * kMiB + 321, 1);
  const std::string t_to_p = tls_test::random_text(1 * kMiB + 123, 2);
  r.e.plain.send(p_to_t, true);
  r.e.tls.send(t_to_p, true);
  bool ended =
      r.run_until([&] { return r.finished() && r.e.plain.ended() && r.e.tls.read_ended(); });
  INFO(r.state());
  REQUIRE(ended);
  CHECK(diff(p_to_t, r.e.tls.in) == "");
  CHECK(diff(t_to_p, r.e.plain.in) == "");
  CHECK(r.e.plain.eof);
  CHECK(r.e.tls.read_status() == IoStatus::eof);  // close_notify, not a bare FIN
  REQUIRE(r.outcome);
  CHECK_FALSE(r.outcome->reset);
  CHECK(r.outcome->reason == "closed");
  CHECK(r.plain_to_tls() == p_to_t.size());
  CHECK(r.tls_to_plain() == t_to_p.size());
  CHECK(r.done_calls == 1);
  CHECK(r.closed_when_done);
  CHECK(r.relay->buffers_held() == 0);
}

TEST_CASE("tls relay: small records and one-byte reads on the far side still deliver every byte") {
  // T writes 1000-byte records, so the relay's 16 KiB buffer ends in the middle of a record and
  // the rest waits inside the Stream (pending()), where no poller reports it.
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side);
  r.e.tls.chunk = 1000;
  const std::string t_to_p = tls_test::random_text(512 * kKiB + 7, 3);
  r.e.tls.send(t_to_p, true);
  r.e.plain.send("", true);
  bool ended = r.run_until([&] { return r.finished() && r.e.plain.ended(); });
  INFO(r.state());
  REQUIRE(ended);
  CHECK(diff(t_to_p, r.e.plain.in) == "");
  REQUIRE(r.outcome);
  CHECK_FALSE(r.outcome->reset);
}

namespace {

// Both ends send `size` bytes (and a few) at once while T asks for a key update every so often;
// every byte arrives, both ends close cleanly, and more than 10 key updates happened.
void exchange_under_key_updates(Rig& r, size_t size, unsigned seed, Clock::duration timeout) {
  const std::string p_to_t = tls_test::random_text(size + 3, seed);
  const std::string t_to_p = tls_test::random_text(size + 5, seed + 1);
  r.e.plain.send(p_to_t, true);
  r.e.tls.send(t_to_p, true);
  bool ended = r.run_until(
      [&] { return r.finished() && r.e.plain.ended() && r.e.tls.read_ended(); }, timeout);
  INFO(r.state());
  REQUIRE(ended);
  CHECK(r.e.tls.key_updates > 10);
  CHECK(diff(p_to_t, r.e.tls.in) == "");
  CHECK(diff(t_to_p, r.e.plain.in) == "");
  REQUIRE(r.outcome);
  CHECK_FALSE(r.outcome->reset);
}

}  // namespace

TEST_CASE("tls relay: key updates requested by the far side mid-stream lose nothing") {
  // Each KeyUpdate(update_requested) changes the keys T sends with, and makes the relay's Stream
  // answer with one of its own (OpenSSL sends it from the next SSL_write), while bytes flow both
  // ways and the socket toward T is often full.
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side);
  r.e.tls.key_update_every = 96 * kKiB;
  exchange_under_key_updates(r, 2 * kMiB, 4, 20s);
}

TEST_CASE("tls relay: the initial bytes come first, then what the Stream still holds, then more") {
  // As on the server: the first line was read through TLS, and what followed it in the same
  // record is either already out of the Stream (the initial bytes) or still inside it (pending).
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side, false);
  const std::string line = "TUNNEL/1 DATA 0123456789abcdef0123456789abcdef\n";
  const std::string rest_of_record = "early payload that shared the line's record";
  r.e.tls.send(line + rest_of_record);
  r.e.tls.step();
  REQUIRE(r.e.tls.sent == r.e.tls.out.size());

  size_t taken = 0;
  SECTION("the initial bytes are part of the record, the rest waits in the Stream") {
    taken = 8;
  }
  SECTION("no initial bytes: all of the rest waits in the Stream") {
    taken = 0;
  }
  SECTION("all of the rest was taken as initial bytes") {
    taken = rest_of_record.size();
  }
  std::string first = read_exactly(*r.e.stream, line.size() + taken);
  REQUIRE(first.substr(0, line.size()) == line);
  std::string initial = first.substr(line.size());
  CHECK(r.e.stream->pending() == rest_of_record.size() - taken);
  r.start(initial);

  // Nothing more comes from T: only the relay's own start can move the bytes held in the Stream.
  bool arrived = r.run_until([&] { return r.e.plain.in.size() >= rest_of_record.size(); }, 5s);
  INFO(r.state());
  REQUIRE(arrived);
  CHECK(r.e.plain.in == rest_of_record);
  r.e.tls.send(" and what came later", true);
  r.e.plain.send("answer", true);
  bool ended = r.run_until([&] { return r.finished() && r.e.plain.ended(); }, 5s);
  INFO(r.state());
  REQUIRE(ended);
  CHECK(r.e.plain.in == rest_of_record + " and what came later");
  CHECK(r.e.tls.in == "answer");
  REQUIRE(r.outcome);
  CHECK_FALSE(r.outcome->reset);
  CHECK(r.tls_to_plain() == rest_of_record.size() + 20);
}

TEST_CASE("tls relay: key updates while records wait unsent behind a tiny socket buffer") {
  // The relay's Stream answers each KeyUpdate(update_requested) with one of its own; when records
  // of an earlier write are still unsent, the answer must go after them, not before (T could not
  // decrypt them with the old key after it).
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side, false);
  set_buffer(r.e.relay_tls_fd(), SO_SNDBUF, 4 * kKiB);
  r.start();
  r.e.tls.key_update_every = 64 * kKiB;
  exchange_under_key_updates(r, 1 * kMiB, 24, 30s);
}

TEST_CASE("tls relay: initial bytes larger than one buffer are delivered whole and in order") {
  Rig r(TlsSide::service, false);
  const std::string initial = tls_test::random_text(40 * kKiB + 1, 6);
  const std::string later = tls_test::random_text(100 * kKiB, 7);
  r.start(initial);
  CHECK(r.relay->buffers_held() == 1);
  r.e.tls.send(later, true);
  r.e.plain.send("", true);
  bool ended = r.run_until([&] { return r.finished() && r.e.plain.ended(); });
  INFO(r.state());
  REQUIRE(ended);
  CHECK(diff(initial + later, r.e.plain.in) == "");
  REQUIRE(r.outcome);
  CHECK(r.tls_to_plain() == initial.size() + later.size());
}

TEST_CASE("tls relay: a plain FIN becomes close_notify and the other direction keeps flowing") {
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side);
  const std::string request = "GET / HTTP/1.0\r\n\r\n";
  const std::string response = tls_test::random_text(300 * kKiB, 8);
  r.e.plain.send(request, true);
  bool eof = r.run_until([&] { return r.e.tls.read_ended(); }, 5s);
  INFO(r.state());
  REQUIRE(eof);
  CHECK(r.e.tls.read_status() == IoStatus::eof);  // close_notify, the TLS end's clean end
  CHECK(r.e.tls.in == request);
  CHECK(r.done_calls == 0);
  // The plain side, done both ways at the TCP level, must not make the loop spin meanwhile.
  CHECK(r.idle_rounds() <= 5);

  r.e.tls.send(response);
  bool got = r.run_until([&] { return r.e.plain.in.size() >= response.size(); }, 5s);
  INFO(r.state());
  REQUIRE(got);
  CHECK(diff(response, r.e.plain.in) == "");
  CHECK_FALSE(r.e.plain.ended());
  CHECK(r.done_calls == 0);

  r.e.tls.send("", true);
  bool ended = r.run_until([&] { return r.finished() && r.e.plain.ended(); }, 5s);
  INFO(r.state());
  REQUIRE(ended);
  CHECK(r.e.plain.eof);
  REQUIRE(r.outcome);
  CHECK_FALSE(r.outcome->reset);
  CHECK(r.outcome->reason == "closed");
  CHECK(r.plain_to_tls() == request.size());
  CHECK(r.tls_to_plain() == response.size());
}

TEST_CASE("tls relay: close_notify becomes a plain FIN and the other direction keeps flowing") {
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side);
  const std::string banner = "220 ready, and done talking\r\n";
  const std::string upload = tls_test::random_text(700 * kKiB, 9);
  r.e.tls.send(banner, true);
  bool eof = r.run_until([&] { return r.e.plain.ended(); }, 5s);
  INFO(r.state());
  REQUIRE(eof);
  CHECK(r.e.plain.eof);
  CHECK(r.e.plain.in == banner);
  CHECK(r.done_calls == 0);
  CHECK(r.idle_rounds() <= 5);

  r.e.plain.send(upload, true);
  bool ended = r.run_until([&] { return r.finished() && r.e.tls.read_ended(); });
  INFO(r.state());
  REQUIRE(ended);
  CHECK(r.e.tls.read_status() == IoStatus::eof);
  CHECK(diff(upload, r.e.tls.in) == "");
  REQUIRE(r.outcome);
  CHECK_FALSE(r.outcome->reset);
  CHECK(r.outcome->reason == "closed");
  CHECK(r.plain_to_tls() == upload.size());
  CHECK(r.tls_to_plain() == banner.size());
}

TEST_CASE("tls relay: a reset on the plain side resets the TLS side, with no close_notify") {
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side);
  r.e.plain.send("hello");
  r.e.tls.send("hi");
  REQUIRE(r.run_until([&] { return r.e.tls.in == "hello" && r.e.plain.in == "hi"; }, 5s));
  auto start = Clock::now();
  r.e.plain.reset();
  bool ended = r.run_until([&] { return r.finished() && r.e.tls.read_ended(); }, 5s);
  INFO(r.state());
  REQUIRE(ended);
  CHECK(Clock::now() - start < 1s);
  CHECK(r.e.tls.read_status() == IoStatus::reset);
  REQUIRE(r.outcome);
  CHECK(r.outcome->reset);
  CHECK_THAT(r.outcome->reason,
             Catch::Contains(side == TlsSide::service ? "visitor side" : "service side"));
  CHECK(r.plain_to_tls() == 5);
  CHECK(r.tls_to_plain() == 2);
  CHECK(r.closed_when_done);
  CHECK(r.relay->buffers_held() == 0);
}

TEST_CASE("tls relay: a TCP FIN without close_notify on the TLS side resets the plain side") {
  // A truncation: the peer, or someone on the path, cut the stream. Passing it on as a FIN would
  // make a cut response look complete.
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side);
  r.e.tls.send("partial respon");
  REQUIRE(r.run_until([&] { return r.e.plain.in == "partial respon"; }, 5s));
  r.e.tls.fin_without_notify();
  bool ended = r.run_until([&] { return r.finished() && r.e.plain.ended(); }, 5s);
  INFO(r.state());
  REQUIRE(ended);
  CHECK(r.e.plain.was_reset());
  CHECK_FALSE(r.e.plain.eof);
  REQUIRE(r.outcome);
  CHECK(r.outcome->reset);
  CHECK_THAT(r.outcome->reason, Catch::Contains("close_notify"));
  CHECK_THAT(r.outcome->reason,
             Catch::Contains(side == TlsSide::service ? "service side" : "visitor side"));
}

TEST_CASE("tls relay: a reset on the TLS side resets the plain side") {
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side);
  r.e.plain.send("hello");
  REQUIRE(r.run_until([&] { return r.e.tls.in == "hello"; }, 5s));
  auto start = Clock::now();
  r.e.tls.reset();
  bool ended = r.run_until([&] { return r.finished() && r.e.plain.ended(); }, 5s);
  INFO(r.state());
  REQUIRE(ended);
  CHECK(Clock::now() - start < 1s);
  CHECK(r.e.plain.was_reset());
  REQUIRE(r.outcome);
  CHECK(r.outcome->reset);
}

TEST_CASE("tls relay: a reset after a half-close still resets the other side") {
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side);
  r.e.plain.send("request", true);
  REQUIRE(r.run_until([&] { return r.e.tls.read_ended(); }, 5s));
  r.e.tls.reset();
  bool ended = r.run_until([&] { return r.finished() && r.e.plain.ended(); }, 5s);
  INFO(r.state());
  REQUIRE(ended);
  CHECK(r.e.plain.was_reset());
  REQUIRE(r.outcome);
  CHECK(r.outcome->reset);
}

TEST_CASE("tls relay: a slow plain reader makes no spin, then gets every byte and the end") {
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side, false);
  // Small buffers between the relay and P, so that the relay's own buffer fills and waits.
  set_buffer(r.e.plain.fd.get(), SO_RCVBUF, 256 * kKiB);
  set_buffer(r.e.relay_plain_fd(), SO_SNDBUF, 64 * kKiB);
  r.start();
  r.e.tls.chunk = 5000;  // records that do not line up with the relay's buffer
  r.e.plain.reading = false;
  const std::string payload = tls_test::random_text(8 * kMiB, 10);
  r.e.tls.send(payload, true);
  r.run_until_stalled();
  INFO(r.state());
  CHECK(r.relay->buffers_held() == 1);  // the stalled direction's, full
  CHECK(r.idle_rounds() <= 5);
  r.e.plain.reading = true;
  bool got = r.run_until([&] { return r.e.plain.ended(); }, 20s);
  INFO(r.state());
  REQUIRE(got);
  CHECK(r.e.plain.eof);
  CHECK(diff(payload, r.e.plain.in) == "");
  r.e.plain.send("", true);
  REQUIRE(r.run_until([&] { return r.finished(); }, 5s));
  CHECK_FALSE(r.outcome->reset);
}

TEST_CASE("tls relay: a slow TLS reader makes no spin, then gets every byte and close_notify") {
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side, false);
  set_buffer(r.e.tls.fd.get(), SO_RCVBUF, 256 * kKiB);
  set_buffer(r.e.relay_tls_fd(), SO_SNDBUF, 64 * kKiB);
  r.start();
  r.e.tls.reading = false;
  const std::string payload = tls_test::random_text(8 * kMiB, 11);
  r.e.plain.send(payload, true);
  r.run_until_stalled();
  INFO(r.state());
  CHECK(r.relay->buffers_held() == 1);  // the stalled direction's, its write repeated later
  CHECK(r.idle_rounds() <= 5);
  r.e.tls.reading = true;
  bool got = r.run_until([&] { return r.e.tls.read_ended(); }, 20s);
  INFO(r.state());
  REQUIRE(got);
  CHECK(r.e.tls.read_status() == IoStatus::eof);
  CHECK(diff(payload, r.e.tls.in) == "");
  r.e.tls.send("", true);
  REQUIRE(r.run_until([&] { return r.finished(); }, 5s));
  CHECK_FALSE(r.outcome->reset);
}

TEST_CASE("tls relay: a slow plain reader after close_notify and FIN makes no spin") {
  // T says everything and closes its socket while P reads nothing: the relay's TLS socket has hung
  // up (FIN in, and its own FIN out once P's FIN is passed on), and the relay cannot act on that
  // until P reads. Small buffers on the plain path keep most of the payload before the relay, and
  // a large one at T lets T send all of it and its close_notify.
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side, false);
  set_buffer(r.e.plain.fd.get(), SO_RCVBUF, 256 * kKiB);
  set_buffer(r.e.relay_plain_fd(), SO_SNDBUF, 64 * kKiB);
  set_buffer(r.e.tls.fd.get(), SO_SNDBUF, 4 * kMiB);
  r.start();
  r.e.plain.reading = false;
  const std::string payload = tls_test::random_text(2 * kMiB, 12);
  r.e.tls.send(payload, true);
  r.e.plain.send("", true);  // P's FIN: passed on as close_notify while the other way is stalled
  bool closed = r.run_until([&] { return r.e.tls.notified && r.e.tls.read_ended(); }, 5s);
  INFO(r.state());
  REQUIRE(closed);
  REQUIRE(r.e.tls.read_status() == IoStatus::eof);
  r.e.tls.stream.reset();
  r.e.tls.fd.reset();  // T closes: a FIN after its close_notify
  r.run_until_stalled();
  CHECK(r.e.plain.in.size() < payload.size());  // bytes for P are still on the way
  CHECK(r.relay->buffers_held() == 1);
  CHECK(r.idle_rounds() <= 5);
  r.e.plain.reading = true;
  bool ended = r.run_until([&] { return r.finished() && r.e.plain.ended(); }, 20s);
  INFO(r.state());
  REQUIRE(ended);
  CHECK(r.e.plain.eof);
  CHECK(diff(payload, r.e.plain.in) == "");
  REQUIRE(r.outcome);
  CHECK_FALSE(r.outcome->reset);
}

TEST_CASE("tls relay: an idle relay holds no buffer and does not wake the loop") {
  // Buffers are kept while bytes move and given back kReleaseAfter after the last wake-up: one
  // more wake-up, then none.
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side);
  CHECK(r.relay->buffers_held() == 0);
  r.e.plain.send(tls_test::random_text(200 * kKiB, 13));
  r.e.tls.send(tls_test::random_text(200 * kKiB, 14));
  bool moved = r.run_until(
      [&] { return r.e.plain.in.size() == 200 * kKiB && r.e.tls.in.size() == 200 * kKiB; }, 5s);
  INFO(r.state());
  REQUIRE(moved);
  for (int i = 0; i < 5; ++i) r.round();
  CHECK(r.idle_rounds() <= 5);  // the release (after up to two periods), and sleep
  CHECK(r.relay->buffers_held() == 0);
  CHECK(r.idle_rounds() <= 4);
  CHECK(r.relay->bytes_to_service() == 200 * kKiB);
  CHECK(r.relay->bytes_to_visitor() == 200 * kKiB);
}

TEST_CASE("tls relay: after a burst, an idle relay and its Stream give back every buffer") {
  // What an idle TLS relay costs: no relay buffer, and no OpenSSL record buffer, read-ahead
  // buffer or gather buffer either (SSL_free_buffers), measured on the heap. The peers' strings
  // are sized beforehand so that only the relay's memory moves.
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side);
  const std::string p_to_t = tls_test::random_text(4 * kMiB, 21);
  const std::string t_to_p = tls_test::random_text(4 * kMiB, 22);
  r.e.plain.out.reserve(p_to_t.size());
  r.e.tls.out.reserve(t_to_p.size());
  r.e.plain.in.reserve(t_to_p.size());
  r.e.tls.in.reserve(p_to_t.size());
  for (int i = 0; i < 5; ++i) r.round();
  const size_t before = heap_in_use();
  r.e.plain.send(p_to_t);
  r.e.tls.send(t_to_p);
  REQUIRE(r.run_until([&] { return r.e.plain.in.size() > kMiB && r.e.tls.in.size() > kMiB; }));
  const size_t streaming = heap_in_use();
  bool moved = r.run_until(
      [&] { return r.e.plain.in.size() == t_to_p.size() && r.e.tls.in.size() == p_to_t.size(); });
  INFO(r.state());
  REQUIRE(moved);
  r.idle_rounds();
  const size_t idle = heap_in_use();
  INFO("heap in use: before " << before << ", streaming " << streaming << ", idle " << idle);
  // Both relay buffers (64 KiB) and the Stream's read-ahead, gather and record buffers.
  CHECK(streaming > before + 128 * kKiB);
  CHECK(idle < before + 4 * kKiB);
  CHECK(r.relay->buffers_held() == 0);
  CHECK(diff(t_to_p, r.e.plain.in) == "");
  CHECK(diff(p_to_t, r.e.tls.in) == "");
}

TEST_CASE("tls relay: records sent in parts to a slow TLS reader arrive whole, then close_notify") {
  // The relay's socket toward T takes a few KiB at a time and T reads in small bites: each write
  // of four records leaves most of them unsent inside the Stream, flushed as the socket drains,
  // and the plain FIN's close_notify goes out only after the last of them.
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side, false);
  set_buffer(r.e.relay_tls_fd(), SO_SNDBUF, 4 * kKiB);
  set_buffer(r.e.tls.fd.get(), SO_RCVBUF, 4 * kKiB);
  r.start();
  r.e.tls.bite = 3000;
  r.e.tls.bites_per_step = 2;
  const std::string payload = tls_test::random_text(1 * kMiB + 17, 23);
  r.e.plain.send(payload, true);
  bool ended = r.run_until([&] { return r.e.tls.read_ended(); }, 60s);
  INFO(r.state());
  REQUIRE(ended);
  CHECK(r.e.tls.read_status() == IoStatus::eof);
  CHECK(diff(payload, r.e.tls.in) == "");
  r.e.tls.send("", true);
  REQUIRE(r.run_until([&] { return r.finished() && r.e.plain.ended(); }, 5s));
  CHECK(r.e.plain.eof);
  CHECK_FALSE(r.outcome->reset);
  CHECK(r.plain_to_tls() == payload.size());
}

TEST_CASE("tls relay: a stalled direction holds one buffer, the idle one none") {
  Rig r(TlsSide::service);
  r.e.plain.reading = false;
  r.e.tls.send(tls_test::random_text(8 * kMiB, 15));
  r.run_until_stalled();
  INFO(r.state());
  CHECK(r.relay->buffers_held() == 1);
}

TEST_CASE("tls relay: abort resets both sides, no close_notify, and reports once") {
  TlsSide side = GENERATE(TlsSide::service, TlsSide::visitor);
  INFO(side_label(side));
  Rig r(side);
  r.e.plain.send("hello");
  REQUIRE(r.run_until([&] { return r.e.tls.in == "hello"; }, 5s));
  r.relay->abort("shutting down");
  r.relay->abort("again");
  CHECK(r.done_calls == 0);  // deferred to the loop
  bool ended =
      r.run_until([&] { return r.finished() && r.e.plain.ended() && r.e.tls.read_ended(); }, 5s);
  INFO(r.state());
  REQUIRE(ended);
  CHECK(r.e.plain.was_reset());
  CHECK(r.e.tls.read_status() == IoStatus::reset);
  REQUIRE(r.outcome);
  CHECK(r.outcome->reset);
  CHECK(r.outcome->reason == "shutting down");
  CHECK(r.closed_when_done);
  for (int i = 0; i < 10; ++i) r.round();
  CHECK(r.done_calls == 1);
}

TEST_CASE("tls relay: the relayed sockets get TCP_NODELAY") {
  Rig r(TlsSide::service);
  for (int fd : {r.e.visitor_fd, r.e.service_fd}) {
    int value = 0;
    socklen_t length = sizeof value;
    REQUIRE(::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &value, &length) == 0);
    CHECK(value != 0);
  }
}

TEST_CASE("tls relay: destroying a relay mid-stream closes both sides without done") {
  Rig r(TlsSide::visitor);
  r.e.plain.reading = false;
  r.e.tls.send(tls_test::random_text(4 * kMiB, 16));
  r.run_until_stalled();
  r.relay.reset();
  CHECK_FALSE(is_open(r.e.visitor_fd));
  CHECK_FALSE(is_open(r.e.service_fd));
  r.e.plain.reading = true;
  bool closed = r.run_until([&] { return r.e.plain.ended() && r.e.tls.read_ended(); }, 5s);
  INFO(r.state());
  CHECK(closed);
  CHECK(r.done_calls == 0);
}

TEST_CASE("tls relay: no descriptor is left open, whichever way a relay ends") {
  certs();  // made once, before counting
  const size_t before = tls_test::open_fds();
  for (TlsSide side : kSides) {
    {
      Rig r(side);
      r.e.plain.send("a", true);
      r.e.tls.send("b", true);
      REQUIRE(r.run_until([&] { return r.finished() && r.e.plain.ended(); }, 5s));
    }
    {
      Rig r(side);
      r.e.tls.reset();
      REQUIRE(r.run_until([&] { return r.finished(); }, 5s));
    }
    {
      Rig r(side);
      r.e.plain.send("x");
      r.relay->abort("gone");
      REQUIRE(r.run_until([&] { return r.finished(); }, 5s));
    }
    {
      Rig r(side);  // destroyed while running
      r.e.plain.send(tls_test::random_text(64 * kKiB, 17));
      for (int i = 0; i < 5; ++i) r.round();
    }
  }
  CHECK(tls_test::open_fds() == before);
}

namespace {

struct SetReport {
  ConnId id;
  RelayOutcome outcome;
};

// A RelaySet on its own loop, recording what it reports.
struct SetRig {
  EventLoop loop;
  std::vector<SetReport> reports;
  std::vector<std::string> events;
  RelaySet set{loop, [this](const ConnId& id, const RelayOutcome& outcome, Duration) {
                 CHECK_FALSE(set.contains(id));
                 reports.push_back({id, outcome});
                 events.push_back("ended");
               }};

  ConnId start(Ends& e, std::string_view initial = {}) {
    ConnId id = ConnId::random();
    set.start(id, std::move(e.visitor), std::move(e.service), e.side, std::move(e.stream), initial);
    return id;
  }
  template <typename Pred, typename Step>
  bool run_until(Pred done, Step step, Clock::duration limit = 10s) {
    auto deadline = Clock::now() + limit;
    while (!done()) {
      if (Clock::now() >= deadline) return false;
      loop.run_once(1);
      step();
    }
    return true;
  }
  const SetReport* report_for(const ConnId& id) const {
    for (const auto& r : reports)
      if (r.id == id) return &r;
    return nullptr;
  }
};

}  // namespace

TEST_CASE("tls relay set: TLS relays count live bytes, report their outcome and drain") {
  certs();
  const size_t fds_before = tls_test::open_fds();
  {
    SetRig s;
    Ends server_like = make_ends(TlsSide::service);
    Ends client_like = make_ends(TlsSide::visitor);
    ConnId a = s.start(server_like, "first ");
    ConnId b = s.start(client_like);
    CHECK(s.set.size() == 2);
    CHECK(s.set.contains(a));
    CHECK(s.set.contains(b));
    auto step = [&] {
      for (Ends* e : {&server_like, &client_like}) {
        e->plain.step();
        e->tls.step();
      }
    };
    // a: server-like, P is the visitor; b: client-like, T is the visitor.
    server_like.plain.send(std::string(1000, 'v'));
    server_like.tls.send(std::string(3000, 's'));
    client_like.tls.send(std::string(5000, 'v'));
    client_like.plain.send(std::string(7000, 's'));
    bool moved = s.run_until(
        [&] {
          return server_like.tls.in.size() == 1000 && server_like.plain.in.size() == 3006 &&
                 client_like.plain.in.size() == 5000 && client_like.tls.in.size() == 7000;
        },
        step);
    REQUIRE(moved);
    CHECK(server_like.plain.in.substr(0, 6) == "first ");
    CHECK(s.set.live_bytes_to_service() == 1000 + 5000);
    CHECK(s.set.live_bytes_to_visitor() == 3006 + 7000);

    bool drained = false;
    s.set.when_drained([&] {
      drained = true;
      s.events.push_back("drained");
    });
    CHECK_FALSE(drained);
    server_like.plain.send("", true);
    server_like.tls.send("", true);
    s.set.abort(b, "shutting down");
    CHECK_FALSE(s.set.contains(b));
    CHECK(s.reports.empty());  // reported from the loop, never inside abort
    bool ended = s.run_until(
        [&] {
          return drained && server_like.plain.ended() && client_like.plain.ended() &&
                 client_like.tls.read_ended();
        },
        step);
    REQUIRE(ended);
    REQUIRE(s.reports.size() == 2);
    CHECK(s.events.back() == "drained");
    const SetReport* ra = s.report_for(a);
    const SetReport* rb = s.report_for(b);
    REQUIRE(ra);
    REQUIRE(rb);
    CHECK_FALSE(ra->outcome.reset);
    CHECK(ra->outcome.bytes_to_service == 1000);
    CHECK(ra->outcome.bytes_to_visitor == 3006);
    CHECK(rb->outcome.reset);
    CHECK(rb->outcome.reason == "shutting down");
    CHECK(rb->outcome.bytes_to_service == 5000);
    CHECK(rb->outcome.bytes_to_visitor == 7000);
    CHECK(client_like.plain.was_reset());
    CHECK(client_like.tls.read_status() == IoStatus::reset);
    CHECK(s.set.size() == 0);
    CHECK(s.set.live_bytes_to_service() == 0);
  }
  CHECK(tls_test::open_fds() == fds_before);
}

TEST_CASE("tls relay set: abort_all ends plain and TLS relays alike") {
  SetRig s;
  Ends one = make_ends(TlsSide::service);
  Ends two = make_ends(TlsSide::visitor);
  ConnId a = s.start(one);
  ConnId b = s.start(two);
  // And a plain relay in the same set.
  auto x_visitor = tls_test::connect_loopback();
  auto service_y = tls_test::connect_loopback();
  ConnId c = ConnId::random();
  s.set.start(c, std::move(x_visitor.server), std::move(service_y.client));
  CHECK(s.set.size() == 3);
  bool drained = false;
  s.set.when_drained([&] { drained = true; });
  s.set.abort_all("stopping");
  CHECK(s.set.size() == 0);
  bool ended = s.run_until([&] { return drained; },
                           [&] {
                             one.tls.step();
                             two.tls.step();
                           });
  REQUIRE(ended);
  REQUIRE(s.reports.size() == 3);
  for (const ConnId& id : {a, b, c}) {
    const SetReport* r = s.report_for(id);
    REQUIRE(r);
    CHECK(r->outcome.reset);
    CHECK(r->outcome.reason == "stopping");
  }
  REQUIRE(s.run_until([&] { return one.tls.read_ended() && two.tls.read_ended(); },
                      [&] {
                        one.tls.step();
                        two.tls.step();
                      }));
  CHECK(one.tls.read_status() == IoStatus::reset);
  CHECK(two.tls.read_status() == IoStatus::reset);
}

namespace {

double thread_cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_THREAD, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

struct Speed {
  double wall_mbs = 0;  // 10^6 bytes per second of wall time
  double cpu_mbs = 0;   // 10^6 bytes per second of the relay's thread's CPU time
};

// Moves `size` bytes one way through a relay on `loop` (this thread), the two ends driven by a
// thread of their own.
template <typename Step, typename Received>
Speed measure(EventLoop& loop, size_t size, Step step, Received received, std::vector<int> fds) {
  std::atomic<bool> done{false};
  auto start = Clock::now();
  double cpu_before = thread_cpu_seconds();
  std::thread ends([&] {
    while (received() < size) {
      step();
      std::vector<pollfd> wait;
      for (int fd : fds) wait.push_back({fd, POLLIN | POLLOUT, 0});
      ::poll(wait.data(), wait.size(), 1);
    }
    done = true;
  });
  while (!done) loop.run_once(5);
  double cpu = thread_cpu_seconds() - cpu_before;
  ends.join();
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return {static_cast<double>(size) / seconds / 1e6, static_cast<double>(size) / cpu / 1e6};
}

}  // namespace

TEST_CASE("bench: tls relay throughput against the plain splice relay", "[.][bench]") {
  const size_t size = 64 * kMiB;
  const std::string payload = tls_test::random_text(size, 20);
  for (int run = 0; run < 3; ++run) {
    Speed plain;
    {
      EventLoop loop;
      tunnel::PipePool pool;
      auto xv = tls_test::connect_loopback();
      auto sy = tls_test::connect_loopback();
      PlainPeer x, y;
      x.fd = std::move(xv.client);
      y.fd = std::move(sy.server);
      x.reading = false;
      x.send(payload);
      tunnel::Relay relay(loop, pool, std::move(xv.server), std::move(sy.client),
                          [](const RelayOutcome&) {});
      plain = measure(
          loop, size,
          [&] {
            x.step();
            y.step();
          },
          [&] { return y.in.size(); }, {x.fd.get(), y.fd.get()});
    }
    Speed to_tls, from_tls;
    for (bool into_tls : {true, false}) {
      Rig r(TlsSide::service);
      if (into_tls) {
        r.e.plain.send(payload);
      } else {
        r.e.tls.send(payload);
      }
      r.e.plain.reading = !into_tls;
      Speed speed = measure(
          r.loop, size,
          [&] {
            r.e.plain.step();
            r.e.tls.step();
          },
          [&] { return into_tls ? r.e.tls.in.size() : r.e.plain.in.size(); },
          {r.e.plain.fd.get(), r.e.tls.fd.get()});
      (into_tls ? to_tls : from_tls) = speed;
      CHECK(diff(payload, into_tls ? r.e.tls.in : r.e.plain.in) == "");
    }
    WARN("64 MiB one way, MB/s wall (MB per CPU-second of the relay's thread): plain splice relay "
         << plain.wall_mbs << " (" << plain.cpu_mbs << "); TLS relay plain->TLS " << to_tls.wall_mbs
         << " (" << to_tls.cpu_mbs << "), TLS->plain " << from_tls.wall_mbs << " ("
         << from_tls.cpu_mbs << ")");
  }
}
