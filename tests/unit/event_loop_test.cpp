// EventLoop and Channel on real descriptors (socketpairs and pipes): readiness, interest changes,
// hang-ups and errors, deferred work, stop, and channels closed while their events are in flight.
#include "tunnel/event_loop.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "tunnel/channel.hpp"
#include "tunnel/fd.hpp"
#include "tunnel/poller.hpp"
#include "tunnel/timer.hpp"

using namespace std::chrono_literals;
using tunnel::Channel;
using tunnel::Clock;
using tunnel::EventLoop;
using tunnel::Fd;
using tunnel::kError;
using tunnel::kHangup;
using tunnel::kReadable;
using tunnel::kWritable;

namespace {

struct FdPair {
  Fd first;
  Fd second;
};

FdPair socket_pair() {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  return {Fd(sv[0]), Fd(sv[1])};
}

// first: read end, second: write end.
FdPair pipe_pair() {
  int p[2];
  REQUIRE(::pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
  return {Fd(p[0]), Fd(p[1])};
}

void write_all(int fd, std::string_view bytes) {
  REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
}

// Records every dispatch of one channel.
struct Recorder {
  std::vector<uint32_t> events;
  Channel::Handler handler() {
    return [this](uint32_t e) { events.push_back(e); };
  }
  size_t count() const { return events.size(); }
  uint32_t last() const { return events.empty() ? 0 : events.back(); }
};

bool process_has_fd(int fd) {
  return ::fcntl(fd, F_GETFD) != -1;
}

}  // namespace

TEST_CASE("event loop: the poller is epoll on Linux") {
  EventLoop loop;
  CHECK(std::string(loop.poller().name()) == "epoll");
}

TEST_CASE("channel: readable fires when bytes arrive and not before") {
  EventLoop loop;
  auto pair = socket_pair();
  Recorder rec;
  Channel channel(loop, std::move(pair.first), kReadable, rec.handler());
  loop.run_once(0);
  CHECK(rec.count() == 0);

  write_all(pair.second.get(), "x");
  loop.run_once(1000);
  REQUIRE(rec.count() == 1);
  CHECK((rec.last() & kReadable) != 0);
  CHECK((rec.last() & (kHangup | kError)) == 0);
}

TEST_CASE("channel: readiness is level-triggered: unread bytes wake the loop every round") {
  EventLoop loop;
  auto pair = socket_pair();
  Recorder rec;
  Channel channel(loop, std::move(pair.first), kReadable, rec.handler());
  write_all(pair.second.get(), "abc");
  for (int i = 0; i < 3; ++i) loop.run_once(1000);
  CHECK(rec.count() == 3);

  char buf[8];
  REQUIRE(::read(channel.fd(), buf, sizeof buf) == 3);
  loop.run_once(0);
  CHECK(rec.count() == 3);
}

TEST_CASE("channel: a connected socket is writable at once; interest 0 silences it") {
  EventLoop loop;
  auto pair = socket_pair();
  Recorder rec;
  Channel channel(loop, std::move(pair.first), kWritable, rec.handler());
  loop.run_once(1000);
  REQUIRE(rec.count() == 1);
  CHECK((rec.last() & kWritable) != 0);
  CHECK((rec.last() & kReadable) == 0);

  channel.set_interest(0);
  CHECK(channel.interest() == 0);
  loop.run_once(0);
  CHECK(rec.count() == 1);
}

TEST_CASE("channel: set_interest switches between readable and writable") {
  EventLoop loop;
  auto pair = socket_pair();
  Recorder rec;
  Channel channel(loop, std::move(pair.first), 0, rec.handler());
  write_all(pair.second.get(), "data");
  loop.run_once(0);
  CHECK(rec.count() == 0);

  channel.set_interest(kReadable);
  loop.run_once(1000);
  REQUIRE(rec.count() == 1);
  CHECK(rec.last() == kReadable);

  channel.set_interest(kReadable | kWritable);
  loop.run_once(1000);
  REQUIRE(rec.count() == 2);
  CHECK(rec.last() == (kReadable | kWritable));

  channel.set_interest(kWritable);
  loop.run_once(1000);
  REQUIRE(rec.count() == 3);
  CHECK(rec.last() == kWritable);
}

TEST_CASE("channel: a full socket stops being writable until the peer reads") {
  EventLoop loop;
  auto pair = socket_pair();
  Recorder rec;
  Channel channel(loop, std::move(pair.first), kWritable, rec.handler());
  std::string chunk(64 * 1024, 'f');
  while (::send(channel.fd(), chunk.data(), chunk.size(), MSG_DONTWAIT) > 0) {
  }
  REQUIRE(errno == EAGAIN);
  loop.run_once(0);
  CHECK(rec.count() == 0);

  std::vector<char> sink(1 << 20);
  while (::read(pair.second.get(), sink.data(), sink.size()) > 0) {
  }
  loop.run_once(1000);
  CHECK(rec.count() == 1);
}

TEST_CASE("channel: a closed peer is reported as readable end of stream") {
  EventLoop loop;
  auto pair = socket_pair();
  Recorder rec;
  Channel channel(loop, std::move(pair.first), kReadable, rec.handler());
  pair.second.reset();
  loop.run_once(1000);
  REQUIRE(rec.count() == 1);
  CHECK((rec.last() & kReadable) != 0);
  char c;
  CHECK(::read(channel.fd(), &c, 1) == 0);
}

TEST_CASE("channel: a hang-up is reported even when nothing was asked for") {
  EventLoop loop;
  SECTION("socketpair peer closed") {
    auto pair = socket_pair();
    Recorder rec;
    Channel channel(loop, std::move(pair.first), 0, rec.handler());
    pair.second.reset();
    loop.run_once(1000);
    REQUIRE(rec.count() >= 1);
    CHECK((rec.last() & kHangup) != 0);
  }
  SECTION("pipe write end closed, seen on the read end") {
    auto pipe = pipe_pair();
    Recorder rec;
    Channel channel(loop, std::move(pipe.first), 0, rec.handler());
    pipe.second.reset();
    loop.run_once(1000);
    REQUIRE(rec.count() >= 1);
    CHECK((rec.last() & kHangup) != 0);
  }
}

TEST_CASE("channel: an error is reported even when nothing was asked for") {
  // A pipe whose read end is gone: writing would fail with EPIPE, which epoll reports as an error.
  EventLoop loop;
  auto pipe = pipe_pair();
  Recorder rec;
  Channel channel(loop, std::move(pipe.second), 0, rec.handler());
  pipe.first.reset();
  loop.run_once(1000);
  REQUIRE(rec.count() >= 1);
  CHECK((rec.last() & kError) != 0);
}

TEST_CASE("channel: a pipe read end becomes readable when the write end writes") {
  EventLoop loop;
  auto pipe = pipe_pair();
  Recorder rec;
  Channel channel(loop, std::move(pipe.first), kReadable, rec.handler());
  loop.run_once(0);
  CHECK(rec.count() == 0);
  write_all(pipe.second.get(), "ping");
  loop.run_once(1000);
  REQUIRE(rec.count() == 1);
  CHECK(rec.last() == kReadable);
}

TEST_CASE("channel: close unregisters and closes the descriptor; the object stays usable") {
  EventLoop loop;
  auto pair = socket_pair();
  Recorder rec;
  Channel channel(loop, std::move(pair.first), kReadable, rec.handler());
  int fd = channel.fd();
  write_all(pair.second.get(), "x");  // ready, but closed before the loop looks
  channel.close();
  CHECK(channel.fd() == -1);
  CHECK_FALSE(process_has_fd(fd));
  channel.close();  // twice is harmless
  channel.set_interest(kWritable);
  loop.run_once(0);
  CHECK(rec.count() == 0);
}

TEST_CASE("channel: destruction unregisters and closes the descriptor") {
  EventLoop loop;
  auto pair = socket_pair();
  Recorder rec;
  auto channel = std::make_unique<Channel>(loop, std::move(pair.first), kReadable, rec.handler());
  int fd = channel->fd();
  channel.reset();
  CHECK_FALSE(process_has_fd(fd));
  // The same descriptor number can be registered again by a new owner.
  auto again = socket_pair();
  Recorder rec2;
  Channel reused(loop, std::move(again.first), kReadable, rec2.handler());
  write_all(again.second.get(), "x");
  loop.run_once(1000);
  CHECK(rec.count() == 0);
  CHECK(rec2.count() == 1);
}

TEST_CASE("channel: release hands over an open descriptor and stops the events") {
  EventLoop loop;
  auto pair = socket_pair();
  Recorder rec;
  Channel channel(loop, std::move(pair.first), kReadable, rec.handler());
  Fd taken = channel.release();
  CHECK(channel.fd() == -1);
  REQUIRE(taken);
  CHECK(process_has_fd(taken.get()));
  write_all(pair.second.get(), "x");
  loop.run_once(0);
  CHECK(rec.count() == 0);
  // The new owner can register it on the loop again.
  Recorder rec2;
  Channel second(loop, std::move(taken), kReadable, rec2.handler());
  loop.run_once(1000);
  CHECK(rec2.count() == 1);
}

TEST_CASE("channel: an empty Fd is not registered and never dispatched") {
  EventLoop loop;
  Recorder rec;
  Channel channel(loop, Fd(), kReadable, rec.handler());
  CHECK(channel.fd() == -1);
  channel.set_interest(kWritable);
  loop.run_once(0);
  CHECK(rec.count() == 0);
}

TEST_CASE("channel: a descriptor epoll cannot watch is refused with an exception") {
  // Files without readiness (here /dev/null) are refused by epoll with EPERM.
  EventLoop loop;
  Fd file(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  REQUIRE(file);
  CHECK_THROWS_AS(Channel(loop, std::move(file), kReadable, [](uint32_t) {}), std::system_error);
}

TEST_CASE("event loop: a channel closed by a handler gets no event from the same batch") {
  // Both sockets are ready before the round, so their events arrive in one batch. Whichever handler
  // runs first closes the other channel: the other must then not be called.
  EventLoop loop;
  auto p1 = socket_pair();
  auto p2 = socket_pair();
  int calls1 = 0, calls2 = 0;
  std::unique_ptr<Channel> c1, c2;
  char byte;
  c1 = std::make_unique<Channel>(loop, std::move(p1.first), kReadable, [&](uint32_t) {
    ++calls1;
    if (c1->fd() < 0) FAIL("channel 1 was closed by channel 2's handler, then dispatched");
    REQUIRE(::read(c1->fd(), &byte, 1) == 1);
    c2->close();
  });
  c2 = std::make_unique<Channel>(loop, std::move(p2.first), kReadable, [&](uint32_t) {
    ++calls2;
    if (c2->fd() < 0) FAIL("channel 2 was closed by channel 1's handler, then dispatched");
    REQUIRE(::read(c2->fd(), &byte, 1) == 1);
    c1->close();
  });
  write_all(p1.second.get(), "1");
  write_all(p2.second.get(), "2");
  loop.run_once(1000);
  CHECK(calls1 + calls2 == 1);
  loop.run_once(0);
  CHECK(calls1 + calls2 == 1);
  CHECK((c1->fd() == -1) != (c2->fd() == -1));  // exactly one was closed
}

TEST_CASE("event loop: a channel destroyed by a handler gets no event from the same batch") {
  // As above, but the other channel object is freed: delivering its event would be a
  // use-after-free (caught by the sanitizer build).
  EventLoop loop;
  std::vector<FdPair> pairs;
  for (int i = 0; i < 8; ++i) pairs.push_back(socket_pair());
  std::vector<std::unique_ptr<Channel>> channels(pairs.size());
  int calls = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    channels[i] =
        std::make_unique<Channel>(loop, std::move(pairs[i].first), kReadable, [&, i](uint32_t) {
          ++calls;
          // The first one to run destroys all the others.
          for (size_t j = 0; j < channels.size(); ++j)
            if (j != i) channels[j].reset();
        });
    write_all(pairs[i].second.get(), "x");
  }
  loop.run_once(1000);
  CHECK(calls == 1);
}

TEST_CASE("event loop: a handler may close its own channel") {
  EventLoop loop;
  auto pair = socket_pair();
  int calls = 0;
  std::unique_ptr<Channel> channel;
  channel = std::make_unique<Channel>(loop, std::move(pair.first), kReadable, [&](uint32_t) {
    ++calls;
    channel->close();
  });
  write_all(pair.second.get(), "x");
  loop.run_once(1000);
  loop.run_once(0);
  CHECK(calls == 1);
  CHECK(channel->fd() == -1);
}

TEST_CASE("event loop: a descriptor number reused by a handler does not inherit stale events") {
  // Both channels are ready in one batch. The first handler closes both and registers a fresh
  // socket, which gets one of the freed numbers: the second, stale event must reach nobody.
  EventLoop loop;
  auto p1 = socket_pair();
  auto p2 = socket_pair();
  const int old_fds[2] = {p1.first.get(), p2.first.get()};
  int calls = 0;
  Recorder late;
  std::unique_ptr<Channel> replacement;
  FdPair fresh;
  std::unique_ptr<Channel> c1, c2;
  auto handler = [&](uint32_t) {
    ++calls;
    if (replacement) FAIL("a closed channel was dispatched");
    c1->close();
    c2->close();
    fresh = socket_pair();
    replacement =
        std::make_unique<Channel>(loop, std::move(fresh.first), kReadable, late.handler());
  };
  c1 = std::make_unique<Channel>(loop, std::move(p1.first), kReadable, handler);
  c2 = std::make_unique<Channel>(loop, std::move(p2.first), kReadable, handler);
  write_all(p1.second.get(), "1");
  write_all(p2.second.get(), "2");
  loop.run_once(1000);
  REQUIRE(replacement);
  CHECK((replacement->fd() == old_fds[0] || replacement->fd() == old_fds[1]));
  CHECK(calls == 1);
  CHECK(late.count() == 0);  // nothing was written to the fresh socket
}

TEST_CASE("event loop: deferred work runs after the batch and before the next poll") {
  EventLoop loop;
  auto pair = socket_pair();
  std::vector<std::string> order;
  Channel channel(loop, std::move(pair.first), kReadable, [&](uint32_t) {
    order.push_back("handler");
    loop.defer([&] { order.push_back("deferred"); });
    order.push_back("handler end");
  });
  write_all(pair.second.get(), "x");
  loop.run_once(1000);
  CHECK(order == std::vector<std::string>{"handler", "handler end", "deferred"});
}

TEST_CASE("event loop: deferred work runs in order and work it defers runs in the same round") {
  EventLoop loop;
  std::vector<int> order;
  loop.defer([&] {
    order.push_back(1);
    loop.defer([&] {
      order.push_back(3);
      loop.defer([&] { order.push_back(4); });
    });
  });
  loop.defer([&] { order.push_back(2); });
  loop.run_once(0);
  CHECK(order == std::vector<int>{1, 2, 3, 4});
  loop.run_once(0);
  CHECK(order.size() == 4);
}

TEST_CASE("event loop: pending deferred work keeps run_once from blocking") {
  // Deferred work queued outside a round (e.g. by set-up code) runs on the next round at once,
  // even with nothing ready and no timeout given.
  EventLoop loop;
  bool ran = false;
  loop.defer([&] { ran = true; });
  auto start = Clock::now();
  loop.run_once(-1);
  CHECK(ran);
  CHECK(Clock::now() - start < 500ms);
}

TEST_CASE("event loop: deferred destruction of a channel from its own handler is safe") {
  EventLoop loop;
  auto pair = socket_pair();
  int calls = 0;
  std::unique_ptr<Channel> channel;
  channel = std::make_unique<Channel>(loop, std::move(pair.first), kReadable, [&](uint32_t) {
    ++calls;
    loop.defer([&] { channel.reset(); });
  });
  write_all(pair.second.get(), "x");
  loop.run_once(1000);
  CHECK(channel == nullptr);
  loop.run_once(0);
  CHECK(calls == 1);
}

TEST_CASE("event loop: destroy_later frees a channel after the batch, not inside its handler") {
  EventLoop loop;
  auto pair = socket_pair();
  int calls = 0;
  bool alive_after_handover = false;
  std::unique_ptr<Channel> channel;
  Channel* raw = nullptr;
  channel = std::make_unique<Channel>(loop, std::move(pair.first), kReadable, [&](uint32_t) {
    ++calls;
    char got;
    REQUIRE(::recv(raw->fd(), &got, 1, 0) ==
            1);  // an unread byte would turn the close into a reset
    raw->close();
    loop.destroy_later(std::move(channel));
    alive_after_handover = raw->fd() == -1;  // still a valid object: the handler may go on
  });
  raw = channel.get();
  write_all(pair.second.get(), "x");
  loop.run_once(1000);
  CHECK(calls == 1);
  CHECK(alive_after_handover);
  CHECK(channel == nullptr);
  // The peer sees the close: the descriptor was closed in the handler, the object freed after.
  char byte;
  CHECK(::recv(pair.second.get(), &byte, 1, 0) == 0);
}

TEST_CASE(
    "event loop: objects retired by deferred work or by destructors are freed in the same round") {
  struct Noisy {
    Noisy(EventLoop& l, int& f) : loop(l), freed(f) {}
    EventLoop& loop;
    int& freed;
    std::unique_ptr<Noisy> child;
    Noisy(const Noisy&) = delete;
    Noisy& operator=(const Noisy&) = delete;
    ~Noisy() {
      ++freed;
      if (child) loop.destroy_later(std::move(child));  // retiring during retirement
    }
  };
  EventLoop loop;
  int freed = 0;
  auto parent = std::make_unique<Noisy>(loop, freed);
  parent->child = std::make_unique<Noisy>(loop, freed);
  loop.defer([&] { loop.destroy_later(std::move(parent)); });
  CHECK(freed == 0);
  loop.run_once(0);
  CHECK(freed == 2);
}

TEST_CASE("event loop: a handler that throws costs one event; its channel and timer stay usable") {
  // The loop catches and counts the exception. The channel's "dispatching" mark must be cleared on
  // the way out, or destroying it later (outside any handler) would trip the lifetime assertion.
  EventLoop loop;
  auto pair = socket_pair();
  auto channel = std::make_unique<Channel>(loop, std::move(pair.first), kReadable, [](uint32_t) {
    throw std::runtime_error("handler failed");
  });
  auto timer =
      std::make_unique<tunnel::Timer>(loop, [] { throw std::runtime_error("timer failed"); });
  timer->arm(0s);
  write_all(pair.second.get(), "x");
  loop.run_once(1000);
  CHECK(loop.internal_errors() == 2);
  channel.reset();  // not inside its handler: must not assert
  timer.reset();
  loop.run_once(0);
  CHECK(loop.internal_errors() == 2);
}

TEST_CASE("event loop: a pending destroy_later keeps run_once from blocking") {
  EventLoop loop;
  loop.destroy_later(std::make_unique<int>(7));
  auto start = Clock::now();
  loop.run_once(5000);
  CHECK(Clock::now() - start < 1s);
}

TEST_CASE("event loop: on a manual clock, timers fire only when the test advances time") {
  EventLoop loop;
  loop.use_manual_clock();
  int fired = 0;
  tunnel::Timer timer(loop, [&] { ++fired; });
  timer.arm(10s);
  auto start = Clock::now();
  loop.run_once(20);  // waits for I/O at most 20 ms of real time; the 10 s deadline is not near
  CHECK(Clock::now() - start < 2s);
  CHECK(fired == 0);
  loop.advance(9s);
  CHECK(fired == 0);
  loop.advance(1s);
  CHECK(fired == 1);
  timer.arm(0s);  // due now on the manual clock: run_once runs it without waiting
  loop.run_once(5000);
  CHECK(fired == 2);
  CHECK(Clock::now() - start < 2s);
}

TEST_CASE("event loop: rounds counts poll rounds, so a test can see that an idle loop sleeps") {
  EventLoop loop;
  auto before = loop.rounds();
  loop.run_once(0);
  loop.run_once(0);
  CHECK(loop.rounds() - before == 2);
}

TEST_CASE("event loop: run_once with a timeout and nothing to do returns after about that long") {
  EventLoop loop;
  auto start = Clock::now();
  loop.run_once(30);
  auto elapsed = Clock::now() - start;
  CHECK(elapsed >= 25ms);
  CHECK(elapsed < 1s);
}

TEST_CASE("event loop: run returns after stop is called from a handler") {
  EventLoop loop;
  auto pair = socket_pair();
  int calls = 0;
  Channel channel(loop, std::move(pair.first), kReadable, [&](uint32_t) {
    ++calls;
    loop.stop();
  });
  write_all(pair.second.get(), "x");
  loop.run();
  CHECK(calls == 1);
}

TEST_CASE("event loop: run returns after stop is called from a timer and can run again") {
  EventLoop loop;
  int fired = 0;
  tunnel::Timer timer(loop, [&] {
    ++fired;
    loop.stop();
  });
  timer.arm(5ms);
  loop.run();
  CHECK(fired == 1);
  timer.arm(5ms);
  loop.run();
  CHECK(fired == 2);
}

TEST_CASE("event loop: many channels are each dispatched once per round") {
  // More ready descriptors than one epoll_wait call starts with.
  EventLoop loop;
  const int count = 300;
  std::vector<FdPair> pairs;
  std::vector<std::unique_ptr<Channel>> channels;
  std::vector<int> calls(count, 0);
  for (int i = 0; i < count; ++i) {
    pairs.push_back(socket_pair());
    channels.push_back(std::make_unique<Channel>(loop, std::move(pairs.back().first), kReadable,
                                                 [&calls, i](uint32_t) { ++calls[i]; }));
    write_all(pairs.back().second.get(), "x");
  }
  // Within a few rounds every channel has been seen; level-triggered, so each round sees all
  // that the poller returned.
  for (int round = 0; round < 4; ++round) loop.run_once(1000);
  for (int i = 0; i < count; ++i) {
    INFO("channel " << i);
    CHECK(calls[static_cast<size_t>(i)] >= 1);
  }
}
