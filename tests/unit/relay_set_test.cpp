// RelaySet over real loopback sockets: membership by id, live and final byte totals, abort and
// abort_all, when_drained, and the pipe pool trimmed on the loop's (manual) clock.
#include "tunnel/relay_set.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "tunnel/address.hpp"
#include "tunnel/socket.hpp"

using namespace std::chrono_literals;
using tunnel::Clock;
using tunnel::ConnId;
using tunnel::Duration;
using tunnel::EventLoop;
using tunnel::Fd;
using tunnel::RelayOutcome;
using tunnel::RelaySet;

namespace {

bool fd_is_open(int fd) {
  return ::fcntl(fd, F_GETFD) != -1;
}

// One relay's four sockets over 127.0.0.1: X <-> visitor side [relay] service side <-> Y.
struct Ends {
  Fd x, y;              // the test's ends
  Fd visitor, service;  // the relay's, until start() takes them
  int visitor_fd = -1;  // kept to check that the relay closed them
  int service_fd = -1;
};

class Loopback {
 public:
  Loopback() {
    auto where = tunnel::resolve(tunnel::HostPort{"127.0.0.1", 0}, false).front();
    std::error_code ec;
    listener_ = tunnel::listen_tcp(where, 64, ec);
    REQUIRE_FALSE(ec);
    address_ = tunnel::local_address(listener_.get());
  }

  // {connecting end, accepted end}, both connected and non-blocking.
  std::pair<Fd, Fd> connect() {
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

  Ends ends() {
    auto [x, visitor] = connect();
    auto [service, y] = connect();
    Ends e{std::move(x), std::move(y), std::move(visitor), std::move(service)};
    e.visitor_fd = e.visitor.get();
    e.service_fd = e.service.get();
    return e;
  }

 private:
  Fd listener_;
  tunnel::SocketAddress address_;
};

// What a test end has read so far, and how its stream ended.
struct Received {
  std::string bytes;
  bool eof = false;
  int error = 0;
  bool ended() const { return eof || error != 0; }
};

void read_available(int fd, Received& r) {
  char buffer[64 * 1024];
  while (!r.ended()) {
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n > 0) {
      r.bytes.append(buffer, static_cast<size_t>(n));
    } else if (n == 0) {
      r.eof = true;
    } else {
      if (errno != EAGAIN) r.error = errno;
      return;
    }
  }
}

// For payloads the socket buffers take at once (a few hundred KiB at most on loopback).
void send_now(int fd, std::string_view data) {
  while (!data.empty()) {
    long n = tunnel::send_nosignal(fd, data.data(), data.size());
    if (n < 0 && errno == EAGAIN) {
      pollfd writable{fd, POLLOUT, 0};
      REQUIRE(::poll(&writable, 1, 2000) == 1);
      continue;
    }
    REQUIRE(n > 0);
    data.remove_prefix(static_cast<size_t>(n));
  }
}

struct Report {
  ConnId id;
  RelayOutcome outcome;
  Duration lasted;
};

bool set_clock(EventLoop& loop, bool manual) {
  if (manual) loop.use_manual_clock();
  return manual;
}

// A loop, a set, and the record of what the set told.
struct Fixture {
  EventLoop loop;
  const bool manual_clock;  // set before the set's trimmer is armed
  std::vector<Report> reports;
  std::vector<std::string> events;  // "ended" and "drained", in the order they were told
  bool inside_set_call = false;     // on_ended must never run inside start or abort
  RelaySet set;
  Loopback loopback;

  explicit Fixture(bool manual = false)
      : manual_clock(set_clock(loop, manual)),
        set(loop, [this](const ConnId& id, const RelayOutcome& outcome, Duration lasted) {
          CHECK_FALSE(inside_set_call);
          CHECK_FALSE(set.contains(id));
          reports.push_back({id, outcome, lasted});
          events.push_back("ended");
        }) {}

  ConnId start(Ends& e) {
    ConnId id = ConnId::random();
    inside_set_call = true;
    set.start(id, std::move(e.visitor), std::move(e.service));
    inside_set_call = false;
    return id;
  }

  void abort(const ConnId& id, const std::string& reason) {
    inside_set_call = true;
    set.abort(id, reason);
    inside_set_call = false;
  }

  void abort_all(const std::string& reason) {
    inside_set_call = true;
    set.abort_all(reason);
    inside_set_call = false;
  }

  // Runs loop rounds (and `step` after each) until `done` holds or 5 s pass.
  template <typename Done, typename Step>
  bool run_until(Done done, Step step) {
    const auto deadline = Clock::now() + 5s;
    while (!done()) {
      if (Clock::now() >= deadline) return false;
      loop.run_once(1);
      step();
    }
    return true;
  }
  template <typename Done>
  bool run_until(Done done) {
    return run_until(done, [] {});
  }

  const Report* report_for(const ConnId& id) const {
    for (const auto& r : reports)
      if (r.id == id) return &r;
    return nullptr;
  }
};

// Both directions carry `to_service` and `to_visitor` and end with FINs.
void relay_cleanly(Fixture& f, Ends& e, const std::string& to_service,
                   const std::string& to_visitor) {
  send_now(e.x.get(), to_service);
  send_now(e.y.get(), to_visitor);
  REQUIRE(::shutdown(e.x.get(), SHUT_WR) == 0);
  REQUIRE(::shutdown(e.y.get(), SHUT_WR) == 0);
  Received at_x, at_y;
  REQUIRE(f.run_until([&] { return at_x.ended() && at_y.ended(); },
                      [&] {
                        read_available(e.x.get(), at_x);
                        read_available(e.y.get(), at_y);
                      }));
  CHECK(at_y.eof);
  CHECK(at_y.bytes == to_service);
  CHECK(at_x.eof);
  CHECK(at_x.bytes == to_visitor);
}

}  // namespace

TEST_CASE("relay set: start, contains and size follow the relays by id") {
  Fixture f;
  CHECK(f.set.size() == 0);
  Ends e1 = f.loopback.ends(), e2 = f.loopback.ends();
  const ConnId id1 = f.start(e1);
  const ConnId id2 = f.start(e2);
  CHECK(f.set.size() == 2);
  CHECK(f.set.contains(id1));
  CHECK(f.set.contains(id2));
  CHECK_FALSE(f.set.contains(ConnId::random()));
  CHECK(f.reports.empty());

  relay_cleanly(f, e1, "to the service", "to the visitor");
  REQUIRE(f.run_until([&] { return f.reports.size() == 1; }));
  CHECK_FALSE(f.set.contains(id1));
  CHECK(f.set.contains(id2));
  CHECK(f.set.size() == 1);
  // The relay that ended has been destroyed, its sockets with it.
  CHECK_FALSE(fd_is_open(e1.visitor_fd));
  CHECK_FALSE(fd_is_open(e1.service_fd));
  CHECK(fd_is_open(e2.visitor_fd));
}

TEST_CASE("relay set: live byte totals sum the running relays and on_ended gets each relay's") {
  Fixture f;
  Ends e1 = f.loopback.ends(), e2 = f.loopback.ends();
  const ConnId id1 = f.start(e1);
  const ConnId id2 = f.start(e2);
  const std::string up1(100000, 'a'), down1(7000, 'b'), up2(30000, 'c'), down2(500, 'd');
  send_now(e1.x.get(), up1);
  send_now(e1.y.get(), down1);
  send_now(e2.x.get(), up2);
  send_now(e2.y.get(), down2);
  Received x1, y1, x2, y2;
  auto read_all = [&] {
    read_available(e1.x.get(), x1);
    read_available(e1.y.get(), y1);
    read_available(e2.x.get(), x2);
    read_available(e2.y.get(), y2);
  };
  REQUIRE(f.run_until(
      [&] {
        return y1.bytes.size() == up1.size() && x1.bytes.size() == down1.size() &&
               y2.bytes.size() == up2.size() && x2.bytes.size() == down2.size();
      },
      read_all));
  CHECK(f.set.live_bytes_to_service() == up1.size() + up2.size());
  CHECK(f.set.live_bytes_to_visitor() == down1.size() + down2.size());

  REQUIRE(::shutdown(e1.x.get(), SHUT_WR) == 0);
  REQUIRE(::shutdown(e1.y.get(), SHUT_WR) == 0);
  REQUIRE(f.run_until([&] { return f.reports.size() == 1; }, read_all));
  const Report* r1 = f.report_for(id1);
  REQUIRE(r1 != nullptr);
  CHECK_FALSE(r1->outcome.reset);
  CHECK(r1->outcome.reason == "closed");
  CHECK(r1->outcome.bytes_to_service == up1.size());
  CHECK(r1->outcome.bytes_to_visitor == down1.size());
  // Only the relay still running counts now.
  CHECK(f.set.live_bytes_to_service() == up2.size());
  CHECK(f.set.live_bytes_to_visitor() == down2.size());

  REQUIRE(::shutdown(e2.x.get(), SHUT_WR) == 0);
  REQUIRE(::shutdown(e2.y.get(), SHUT_WR) == 0);
  REQUIRE(f.run_until([&] { return f.reports.size() == 2; }, read_all));
  const Report* r2 = f.report_for(id2);
  REQUIRE(r2 != nullptr);
  CHECK(r2->outcome.bytes_to_service == up2.size());
  CHECK(r2->outcome.bytes_to_visitor == down2.size());
  CHECK(f.set.live_bytes_to_service() == 0);
  CHECK(f.set.live_bytes_to_visitor() == 0);
  CHECK(f.set.size() == 0);
}

TEST_CASE("relay set: on_ended tells how long the relay lasted on the loop's clock") {
  Fixture f(true);
  Ends e = f.loopback.ends();
  const ConnId id = f.start(e);
  f.loop.advance(1500ms);
  relay_cleanly(f, e, "ping", "pong");
  REQUIRE(f.run_until([&] { return f.reports.size() == 1; }));
  CHECK(f.reports[0].id == id);
  CHECK(f.reports[0].lasted == 1500ms);
}

TEST_CASE("relay set: abort removes the relay at once, resets both sides, and reports it once") {
  Fixture f;
  Ends e1 = f.loopback.ends(), e2 = f.loopback.ends();
  const ConnId id1 = f.start(e1);
  const ConnId id2 = f.start(e2);
  send_now(e1.x.get(), "hello");
  Received at_y;
  REQUIRE(f.run_until([&] { return at_y.bytes == "hello"; },
                      [&] { read_available(e1.y.get(), at_y); }));

  f.abort(id1, "the server disowned this id");
  CHECK_FALSE(f.set.contains(id1));
  CHECK(f.set.contains(id2));
  CHECK(f.set.size() == 1);
  CHECK(f.reports.empty());  // from the loop, not inside abort

  Received at_x;
  REQUIRE(f.run_until([&] { return f.reports.size() == 1 && at_x.ended() && at_y.ended(); },
                      [&] {
                        read_available(e1.x.get(), at_x);
                        read_available(e1.y.get(), at_y);
                      }));
  CHECK(f.reports[0].id == id1);
  CHECK(f.reports[0].outcome.reset);
  CHECK(f.reports[0].outcome.reason == "the server disowned this id");
  CHECK(f.reports[0].outcome.bytes_to_service == 5);
  CHECK(at_x.error == ECONNRESET);
  CHECK(at_y.error == ECONNRESET);
  CHECK_FALSE(fd_is_open(e1.visitor_fd));
  CHECK_FALSE(fd_is_open(e1.service_fd));

  f.abort(id1, "again");  // no longer in the set: nothing happens
  f.abort(ConnId::random(), "unknown");
  for (int i = 0; i < 10; ++i) f.loop.run_once(1);
  CHECK(f.reports.size() == 1);
  CHECK(f.set.contains(id2));
}

TEST_CASE("relay set: abort of a relay that has just ended by itself still reports it once") {
  // The relay sees both FINs in one batch and finishes; the set hears of it after the batch. An
  // abort in between (here, deferred work queued before that batch) finds the relay finished: it
  // leaves the set at once and is reported once, as the clean end it was.
  Fixture f;
  Ends e = f.loopback.ends();
  const ConnId id = f.start(e);
  REQUIRE(::shutdown(e.x.get(), SHUT_WR) == 0);
  REQUIRE(::shutdown(e.y.get(), SHUT_WR) == 0);
  pollfd both_ends[2] = {{e.visitor_fd, POLLIN, 0}, {e.service_fd, POLLIN, 0}};
  const auto deadline = Clock::now() + 5s;
  while ((both_ends[0].revents & POLLIN) == 0 || (both_ends[1].revents & POLLIN) == 0) {
    REQUIRE(Clock::now() < deadline);
    REQUIRE(::poll(both_ends, 2, 100) >= 0);
  }
  bool gone_at_once = false;
  f.loop.defer([&] {
    f.abort(id, "late");
    gone_at_once = !f.set.contains(id);
  });
  f.loop.run_once(1000);
  CHECK(gone_at_once);
  REQUIRE(f.reports.size() == 1);
  CHECK_FALSE(f.reports[0].outcome.reset);
  CHECK(f.reports[0].outcome.reason == "closed");
  for (int i = 0; i < 10; ++i) f.loop.run_once(1);
  CHECK(f.reports.size() == 1);
  CHECK(f.set.size() == 0);
}

TEST_CASE("relay set: abort_all empties the set at once and each relay is reported once") {
  Fixture f;
  std::vector<Ends> ends;
  std::vector<ConnId> ids;
  for (int i = 0; i < 5; ++i) {
    ends.push_back(f.loopback.ends());
    ids.push_back(f.start(ends.back()));
  }
  f.abort_all("shutting down");
  CHECK(f.set.size() == 0);
  for (const auto& id : ids) CHECK_FALSE(f.set.contains(id));
  CHECK(f.reports.empty());
  REQUIRE(f.run_until([&] { return f.reports.size() == ids.size(); }));
  for (int i = 0; i < 10; ++i) f.loop.run_once(1);
  CHECK(f.reports.size() == ids.size());
  for (const auto& id : ids) {
    const Report* r = f.report_for(id);
    REQUIRE(r != nullptr);
    CHECK(r->outcome.reset);
    CHECK(r->outcome.reason == "shutting down");
  }
  for (const auto& e : ends) {
    CHECK_FALSE(fd_is_open(e.visitor_fd));
    CHECK_FALSE(fd_is_open(e.service_fd));
  }
}

TEST_CASE("relay set: when_drained on an empty set calls back at once") {
  Fixture f;
  int calls = 0;
  f.set.when_drained([&] { ++calls; });
  CHECK(calls == 1);
}

TEST_CASE("relay set: when_drained calls back right after the last relay's on_ended") {
  Fixture f;
  Ends e1 = f.loopback.ends(), e2 = f.loopback.ends();
  f.start(e1);
  f.start(e2);
  int calls = 0;
  f.set.when_drained([&] {
    ++calls;
    f.events.push_back("drained");
  });
  CHECK(calls == 0);
  relay_cleanly(f, e1, "one", "1");
  REQUIRE(f.run_until([&] { return f.reports.size() == 1; }));
  CHECK(calls == 0);
  relay_cleanly(f, e2, "two", "2");
  REQUIRE(f.run_until([&] { return calls == 1; }));
  CHECK(f.events == std::vector<std::string>{"ended", "ended", "drained"});
  for (int i = 0; i < 10; ++i) f.loop.run_once(1);
  CHECK(calls == 1);
}

TEST_CASE("relay set: when_drained after abort_all waits for the aborted relays' reports") {
  Fixture f;
  Ends e1 = f.loopback.ends(), e2 = f.loopback.ends();
  f.start(e1);
  f.start(e2);
  int calls = 0;
  f.set.when_drained([&] {
    ++calls;
    f.events.push_back("drained");
  });
  f.abort_all("drain timeout");
  CHECK(calls == 0);  // from the loop, after on_ended
  REQUIRE(f.run_until([&] { return calls == 1; }));
  CHECK(f.events == std::vector<std::string>{"ended", "ended", "drained"});
}

TEST_CASE("relay set: a relay started from on_ended keeps the set from being drained") {
  EventLoop loop;
  Loopback loopback;
  Ends first = loopback.ends(), second = loopback.ends();
  int ended = 0, drained = 0;
  RelaySet* self = nullptr;
  RelaySet set(loop, [&](const ConnId&, const RelayOutcome&, Duration) {
    if (++ended == 1)
      self->start(ConnId::random(), std::move(second.visitor), std::move(second.service));
  });
  self = &set;
  set.start(ConnId::random(), std::move(first.visitor), std::move(first.service));
  set.when_drained([&] { ++drained; });
  set.abort_all("the first one goes");
  const auto deadline = Clock::now() + 5s;
  while (ended < 1 && Clock::now() < deadline) loop.run_once(1);
  REQUIRE(ended == 1);
  CHECK(set.size() == 1);
  CHECK(drained == 0);
  set.abort_all("the second one goes");
  while (drained == 0 && Clock::now() < deadline) loop.run_once(1);
  CHECK(ended == 2);
  CHECK(drained == 1);
}

TEST_CASE("relay set: its pipe pool is trimmed after a quiet trim interval") {
  Fixture f(true);
  Ends e = f.loopback.ends();
  f.start(e);
  relay_cleanly(f, e, std::string(256 * 1024, 'p'), std::string(64 * 1024, 'q'));
  REQUIRE(f.run_until([&] { return f.reports.size() == 1; }));
  REQUIRE(f.set.pipes().in_use() == 0);
  REQUIRE(f.set.pipes().idle() > 0);  // the relay spliced, and gave its pipes back

  // The first tick sees the relay's acquisitions and keeps the pipes; a quiet period later they go.
  f.loop.advance(tunnel::PipePool::kTrimInterval);
  CHECK(f.set.pipes().idle() > 0);
  f.loop.advance(tunnel::PipePool::kTrimInterval);
  CHECK(f.set.pipes().idle() == 0);
  // And it goes on ticking.
  f.set.pipes().release(f.set.pipes().acquire());
  f.loop.advance(tunnel::PipePool::kTrimInterval);
  CHECK(f.set.pipes().idle() == 1);
  f.loop.advance(tunnel::PipePool::kTrimInterval);
  CHECK(f.set.pipes().idle() == 0);
}
