// Timers: TimerQueue on its own with explicit clock values (order, ties, lazy cancel, callbacks
// that change the queue, thousands of entries), and Timer through a real EventLoop.
#include "tunnel/timer.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tunnel/event_loop.hpp"
#include "tunnel/timer_queue.hpp"

using namespace std::chrono_literals;
using tunnel::Clock;
using tunnel::EventLoop;
using tunnel::Timer;
using tunnel::TimerId;
using tunnel::TimerQueue;

namespace {

// A fixed origin far from zero, so the queue never sees the real clock.
const Clock::time_point t0 = Clock::time_point(1000h);

// Turns the loop until `done` holds or `limit` passes; returns whether `done` held.
template <typename Pred>
bool run_until(EventLoop& loop, Pred done, Clock::duration limit = 2s) {
  auto deadline = Clock::now() + limit;
  while (!done()) {
    if (Clock::now() >= deadline) return false;
    loop.run_once(10);
  }
  return true;
}

}  // namespace

// --- TimerQueue ---

TEST_CASE("timer queue: callbacks run earliest deadline first and only once they are due") {
  TimerQueue q;
  std::vector<int> fired;
  q.schedule(t0 + 30ms, [&] { fired.push_back(30); });
  q.schedule(t0 + 10ms, [&] { fired.push_back(10); });
  q.schedule(t0 + 20ms, [&] { fired.push_back(20); });
  CHECK(q.size() == 3);

  q.run_expired(t0 + 9ms);
  CHECK(fired.empty());
  q.run_expired(t0 + 20ms);  // at the deadline counts as due
  CHECK(fired == std::vector<int>{10, 20});
  q.run_expired(t0 + 1h);
  CHECK(fired == std::vector<int>{10, 20, 30});
  CHECK(q.size() == 0);
  q.run_expired(t0 + 2h);
  CHECK(fired.size() == 3);
}

TEST_CASE("timer queue: equal deadlines run in the order they were scheduled") {
  TimerQueue q;
  std::vector<int> fired;
  for (int i = 0; i < 50; ++i) q.schedule(t0 + 5ms, [&fired, i] { fired.push_back(i); });
  q.run_expired(t0 + 5ms);
  REQUIRE(fired.size() == 50);
  for (int i = 0; i < 50; ++i) CHECK(fired[static_cast<size_t>(i)] == i);
}

TEST_CASE("timer queue: ids are distinct and never zero") {
  TimerQueue q;
  std::vector<TimerId> ids;
  for (int i = 0; i < 100; ++i) ids.push_back(q.schedule(t0, [] {}));
  for (size_t i = 0; i < ids.size(); ++i) {
    CHECK(ids[i] != 0);
    for (size_t j = i + 1; j < ids.size(); ++j) CHECK(ids[i] != ids[j]);
  }
}

TEST_CASE("timer queue: next_timeout_ms counts to the earliest live deadline rounded up") {
  TimerQueue q;
  CHECK(q.next_timeout_ms(t0) == -1);
  auto late = q.schedule(t0 + 50ms, [] {});
  auto early = q.schedule(t0 + 10ms, [] {});
  CHECK(q.next_timeout_ms(t0) == 10);
  CHECK(q.next_timeout_ms(t0 + 9ms + 100us) == 1);  // 0.9 ms left must not become 0 (a spin)
  CHECK(q.next_timeout_ms(t0 + 10ms) == 0);
  CHECK(q.next_timeout_ms(t0 + 1s) == 0);
  q.cancel(early);
  CHECK(q.next_timeout_ms(t0) == 50);
  q.cancel(late);
  CHECK(q.next_timeout_ms(t0) == -1);
}

TEST_CASE("timer queue: a far deadline gives a bounded positive timeout") {
  TimerQueue q;
  q.schedule(t0 + 24h * 365 * 100, [] {});
  int ms = q.next_timeout_ms(t0);
  CHECK(ms > 0);
  CHECK(ms <= 1'000'000'000);
}

TEST_CASE("timer queue: a cancelled timer never runs and leaves the count") {
  TimerQueue q;
  int a = 0, b = 0;
  auto ia = q.schedule(t0 + 1ms, [&] { ++a; });
  q.schedule(t0 + 2ms, [&] { ++b; });
  q.cancel(ia);
  CHECK(q.size() == 1);
  q.run_expired(t0 + 1s);
  CHECK(a == 0);
  CHECK(b == 1);
}

TEST_CASE("timer queue: cancelling an unknown or fired or already cancelled id is harmless") {
  TimerQueue q;
  int runs = 0;
  auto id = q.schedule(t0, [&] { ++runs; });
  q.run_expired(t0);
  q.cancel(id);
  q.cancel(id);
  q.cancel(0);
  q.cancel(123456);
  auto other = q.schedule(t0, [&] { ++runs; });
  q.cancel(other);
  q.cancel(other);
  q.run_expired(t0 + 1s);
  CHECK(runs == 1);
  CHECK(q.size() == 0);
}

TEST_CASE("timer queue: a callback may cancel a timer that is due in the same run") {
  TimerQueue q;
  std::vector<std::string> fired;
  TimerId second = 0;
  q.schedule(t0 + 1ms, [&] {
    fired.push_back("first");
    q.cancel(second);
  });
  second = q.schedule(t0 + 2ms, [&] { fired.push_back("second"); });
  q.schedule(t0 + 3ms, [&] { fired.push_back("third"); });
  q.run_expired(t0 + 10ms);
  CHECK(fired == std::vector<std::string>{"first", "third"});
}

TEST_CASE("timer queue: a callback may schedule others; due ones run in the same pass") {
  TimerQueue q;
  std::vector<std::string> fired;
  q.schedule(t0 + 1ms, [&] {
    fired.push_back("first");
    q.schedule(t0 + 2ms, [&] { fired.push_back("added, due"); });
    q.schedule(t0 + 1h, [&] { fired.push_back("added, later"); });
  });
  q.schedule(t0 + 3ms, [&] { fired.push_back("third"); });
  q.run_expired(t0 + 10ms);
  CHECK(fired == std::vector<std::string>{"first", "added, due", "third"});
  CHECK(q.size() == 1);
  CHECK(q.next_timeout_ms(t0 + 10ms) > 0);
}

TEST_CASE("timer queue: a callback that cancels itself or schedules a replacement is safe") {
  TimerQueue q;
  int runs = 0;
  TimerId self = 0;
  self = q.schedule(t0, [&] {
    ++runs;
    q.cancel(self);  // already being run: no effect
    if (runs < 5) self = q.schedule(t0 + std::chrono::milliseconds(runs), [] {});
  });
  q.run_expired(t0);
  CHECK(runs == 1);
  CHECK(q.size() == 1);
}

TEST_CASE("timer queue: thousands of timers with random deadlines fire in deadline order") {
  TimerQueue q;
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> offset(0, 100'000);
  std::vector<Clock::time_point> fired;
  const int count = 20000;
  for (int i = 0; i < count; ++i) {
    auto deadline = t0 + std::chrono::microseconds(offset(rng));
    q.schedule(deadline, [&fired, deadline] { fired.push_back(deadline); });
  }
  CHECK(q.size() == static_cast<size_t>(count));
  // Several passes, as a loop would make them.
  for (auto now = t0; now <= t0 + 100ms; now += 7ms) q.run_expired(now);
  q.run_expired(t0 + 1s);
  REQUIRE(fired.size() == static_cast<size_t>(count));
  CHECK(std::is_sorted(fired.begin(), fired.end()));
  CHECK(q.size() == 0);
  CHECK(q.next_timeout_ms(t0) == -1);
}

TEST_CASE("timer queue: mostly cancelled timers: the survivors still fire and the rest never do") {
  // Exercises the heap rebuild that keeps lazily cancelled entries from piling up.
  TimerQueue q;
  std::vector<int> fired;
  std::vector<TimerId> ids;
  const int count = 10000;
  for (int i = 0; i < count; ++i)
    ids.push_back(
        q.schedule(t0 + std::chrono::milliseconds(count - i), [&fired, i] { fired.push_back(i); }));
  for (int i = 0; i < count; ++i)
    if (i % 100 != 0) q.cancel(ids[static_cast<size_t>(i)]);
  CHECK(q.size() == count / 100);
  // Re-arming churn: schedule and cancel again and again, as connection timers do.
  for (int i = 0; i < 5000; ++i) q.cancel(q.schedule(t0 + 1ms, [&fired] { fired.push_back(-1); }));
  CHECK(q.size() == count / 100);
  CHECK(q.next_timeout_ms(t0) == 100);  // i = 9900 is the earliest survivor
  q.run_expired(t0 + 1h);
  REQUIRE(fired.size() == count / 100);
  for (size_t k = 0; k < fired.size(); ++k)
    CHECK(fired[k] == count - 100 * static_cast<int>(k + 1));
}

// --- Timer on a real EventLoop ---

TEST_CASE("timer: fires once after its delay through the loop") {
  EventLoop loop;
  int runs = 0;
  Timer timer(loop, [&] { ++runs; });
  CHECK_FALSE(timer.armed());
  auto start = Clock::now();
  timer.arm(30ms);
  CHECK(timer.armed());
  REQUIRE(run_until(loop, [&] { return runs > 0; }));
  auto elapsed = Clock::now() - start;
  CHECK(elapsed >= 30ms);
  CHECK(elapsed < 1s);
  CHECK_FALSE(timer.armed());
  for (int i = 0; i < 5; ++i) loop.run_once(10);
  CHECK(runs == 1);
}

TEST_CASE("timer: the loop sleeps until the next deadline rather than polling") {
  EventLoop loop;
  bool fired = false;
  Timer timer(loop, [&] { fired = true; });
  timer.arm(50ms);
  auto start = Clock::now();
  int rounds = 0;
  while (!fired && Clock::now() - start < 2s) {
    loop.run_once(-1);  // nothing else is registered: only the timer can wake it
    ++rounds;
  }
  CHECK(fired);
  CHECK(rounds <= 3);
}

TEST_CASE("timer: several timers fire in deadline order") {
  EventLoop loop;
  std::vector<int> order;
  Timer t40(loop, [&] { order.push_back(40); });
  Timer t10(loop, [&] { order.push_back(10); });
  Timer t25(loop, [&] { order.push_back(25); });
  t40.arm(40ms);
  t10.arm(10ms);
  t25.arm(25ms);
  REQUIRE(run_until(loop, [&] { return order.size() == 3; }));
  CHECK(order == std::vector<int>{10, 25, 40});
}

TEST_CASE("timer: cancel stops it; destroying an armed timer cancels it") {
  EventLoop loop;
  int cancelled_runs = 0, destroyed_runs = 0, witness_runs = 0;
  Timer cancelled(loop, [&] { ++cancelled_runs; });
  auto destroyed = std::make_unique<Timer>(loop, [&] { ++destroyed_runs; });
  Timer witness(loop, [&] { ++witness_runs; });
  cancelled.arm(10ms);
  destroyed->arm(10ms);
  witness.arm(30ms);
  cancelled.cancel();
  CHECK_FALSE(cancelled.armed());
  destroyed.reset();
  CHECK(loop.timers().size() == 1);
  REQUIRE(run_until(loop, [&] { return witness_runs > 0; }));
  CHECK(cancelled_runs == 0);
  CHECK(destroyed_runs == 0);
}

TEST_CASE("timer: arming again replaces the deadline and does not add a second one") {
  EventLoop loop;
  int runs = 0;
  Timer timer(loop, [&] { ++runs; });
  auto start = Clock::now();
  timer.arm(10ms);
  timer.arm(60ms);
  CHECK(loop.timers().size() == 1);
  REQUIRE(run_until(loop, [&] { return runs > 0; }));
  CHECK(Clock::now() - start >= 60ms);
  for (int i = 0; i < 5; ++i) loop.run_once(10);
  CHECK(runs == 1);

  // Pulling a deadline earlier works too.
  runs = 0;
  start = Clock::now();
  timer.arm(10s);
  timer.arm(10ms);
  REQUIRE(run_until(loop, [&] { return runs > 0; }));
  CHECK(Clock::now() - start < 5s);
}

TEST_CASE("timer: a callback may re-arm its own timer") {
  EventLoop loop;
  int runs = 0;
  std::unique_ptr<Timer> timer;
  timer = std::make_unique<Timer>(loop, [&] {
    ++runs;
    if (runs < 5) timer->arm(2ms);
  });
  timer->arm(2ms);
  REQUIRE(run_until(loop, [&] { return runs == 5; }));
  CHECK_FALSE(timer->armed());
  for (int i = 0; i < 3; ++i) loop.run_once(10);
  CHECK(runs == 5);
}

TEST_CASE("timer: a callback may cancel and arm and destroy other timers") {
  EventLoop loop;
  std::vector<std::string> fired;
  std::unique_ptr<Timer> victim, doomed, late;
  victim = std::make_unique<Timer>(loop, [&] { fired.push_back("victim"); });
  doomed = std::make_unique<Timer>(loop, [&] { fired.push_back("doomed"); });
  late = std::make_unique<Timer>(loop, [&] { fired.push_back("late"); });
  Timer killer(loop, [&] {
    fired.push_back("killer");
    victim->cancel();  // due in the same pass
    doomed.reset();    // due in the same pass, and gone
    late->arm(5ms);    // was far away, now soon
  });
  killer.arm(20ms);
  victim->arm(20ms);
  doomed->arm(20ms);
  late->arm(10s);
  REQUIRE(run_until(loop, [&] { return fired.size() >= 2; }));
  for (int i = 0; i < 3; ++i) loop.run_once(10);
  CHECK(fired == std::vector<std::string>{"killer", "late"});
}

TEST_CASE("timer: thousands of timers on one loop each fire once and in order") {
  EventLoop loop;
  const int count = 5000;
  std::vector<int> order;
  std::vector<std::unique_ptr<Timer>> timers;
  for (int i = 0; i < count; ++i) {
    timers.push_back(std::make_unique<Timer>(loop, [&order, i] { order.push_back(i); }));
  }
  // Deadlines spread over 0..49 ms, each later than the one before (arming order is by index, so
  // the loop's clock only adds to that); every third one is cancelled afterwards.
  for (int i = 0; i < count; ++i)
    timers[static_cast<size_t>(i)]->arm(std::chrono::microseconds(i * 10));
  int expected = 0;
  for (int i = 0; i < count; ++i) {
    if (i % 3 == 0)
      timers[static_cast<size_t>(i)]->cancel();
    else
      ++expected;
  }
  REQUIRE(run_until(loop, [&] { return order.size() >= static_cast<size_t>(expected); }));
  loop.run_once(20);
  CHECK(order.size() == static_cast<size_t>(expected));
  CHECK(std::is_sorted(order.begin(), order.end()));
  for (int i : order) CHECK(i % 3 != 0);
  CHECK(loop.timers().size() == 0);
}

// ---- PeriodicTimer ----

TEST_CASE("periodic timer: fires again and again at its interval until stopped") {
  EventLoop loop;
  int ticks = 0;
  tunnel::PeriodicTimer periodic(loop, 20ms, [&] { ++ticks; });
  loop.run_once(50);
  CHECK(ticks == 0);  // not started: nothing fires
  const auto started = Clock::now();
  periodic.start();
  REQUIRE(run_until(loop, [&] { return ticks >= 3; }));
  CHECK(Clock::now() - started >= 60ms);  // three periods, never early
  periodic.stop();
  const int at_stop = ticks;
  for (int i = 0; i < 5; ++i) loop.run_once(10);
  CHECK(ticks == at_stop);
  CHECK(loop.timers().size() == 0);
}

TEST_CASE("periodic timer: the callback may stop it, and destruction cancels it") {
  EventLoop loop;
  int ticks = 0;
  {
    tunnel::PeriodicTimer* self = nullptr;
    tunnel::PeriodicTimer periodic(loop, 10ms, [&] {
      if (++ticks == 2) self->stop();
    });
    self = &periodic;
    periodic.start();
    REQUIRE(run_until(loop, [&] { return ticks == 2; }));
    for (int i = 0; i < 5; ++i) loop.run_once(10);
    CHECK(ticks == 2);
    periodic.start();
  }
  CHECK(loop.timers().size() == 0);  // destroyed while armed: nothing left behind
}
