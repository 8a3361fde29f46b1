// PipePool: a bounded set of non-blocking pipes for splice, reused while empty, closed when
// discarded, when too many sit idle or when a quiet period trims them; no descriptor outlives it.
#include "tunnel/pipe_pool.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include "tunnel/event_loop.hpp"
#include "tunnel/timer.hpp"

using namespace std::chrono_literals;
using tunnel::Clock;
using tunnel::Pipe;
using tunnel::PipePool;

namespace {

size_t open_fd_count() {
  size_t count = 0;
  DIR* dir = ::opendir("/proc/self/fd");
  REQUIRE(dir != nullptr);
  while (auto* entry = ::readdir(dir))
    if (entry->d_name[0] != '.') ++count;
  ::closedir(dir);
  return count - 1;  // the directory stream's own descriptor
}

bool fd_is_open(int fd) {
  return ::fcntl(fd, F_GETFD) != -1;
}

size_t pipe_max_size() {
  std::ifstream in("/proc/sys/fs/pipe-max-size");
  size_t value = 0;
  in >> value;
  return value;
}

}  // namespace

TEST_CASE(
    "pipe pool: an acquired pipe is open and non-blocking and close-on-exec and carries bytes") {
  PipePool pool(4);
  Pipe pipe = pool.acquire();
  REQUIRE(pipe);
  CHECK(pool.in_use() == 1);
  for (int fd : {pipe.read_end.get(), pipe.write_end.get()}) {
    CHECK((::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
    CHECK((::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
  }
  REQUIRE(::write(pipe.write_end.get(), "abc", 3) == 3);
  char buf[4];
  REQUIRE(::read(pipe.read_end.get(), buf, sizeof buf) == 3);
  CHECK(std::string(buf, 3) == "abc");
  CHECK(::read(pipe.read_end.get(), buf, sizeof buf) == -1);
  CHECK(errno == EAGAIN);
  pool.release(std::move(pipe));
}

TEST_CASE("pipe pool: capacity is what the kernel granted for the requested size") {
  SECTION("default 64 KiB") {
    PipePool pool(1);
    Pipe pipe = pool.acquire();
    REQUIRE(pipe);
    CHECK(pipe.capacity == 64 * 1024);
    CHECK(static_cast<int>(pipe.capacity) == ::fcntl(pipe.write_end.get(), F_GETPIPE_SZ));
    pool.release(std::move(pipe));
  }
  SECTION("one page") {
    PipePool pool(1, 4096);
    Pipe pipe = pool.acquire();
    REQUIRE(pipe);
    CHECK(pipe.capacity == 4096);
    pool.release(std::move(pipe));
  }
  SECTION("larger than the default, within pipe-max-size") {
    const size_t wanted = 256 * 1024;
    if (pipe_max_size() < wanted) return;
    PipePool pool(1, wanted);
    Pipe pipe = pool.acquire();
    REQUIRE(pipe);
    CHECK(pipe.capacity == wanted);
    CHECK(static_cast<int>(pipe.capacity) == ::fcntl(pipe.write_end.get(), F_GETPIPE_SZ));
    pool.release(std::move(pipe));
  }
}

TEST_CASE("pipe pool: no more than max_pipes are handed out at once") {
  PipePool pool(3);
  std::vector<Pipe> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(pool.acquire());
    REQUIRE(held.back());
  }
  CHECK(pool.in_use() == 3);
  Pipe fourth = pool.acquire();
  CHECK_FALSE(fourth);
  CHECK(pool.in_use() == 3);

  pool.release(std::move(held.back()));
  held.pop_back();
  CHECK(pool.in_use() == 2);
  Pipe again = pool.acquire();
  CHECK(again);
  CHECK(pool.in_use() == 3);
  CHECK_FALSE(pool.acquire());
  pool.release(std::move(again));
  for (auto& p : held) pool.release(std::move(p));
  CHECK(pool.in_use() == 0);
}

TEST_CASE("pipe pool: the bound counts idle pipes too") {
  PipePool pool(2);
  Pipe p1 = pool.acquire(), p2 = pool.acquire();
  pool.release(std::move(p1));
  pool.release(std::move(p2));
  CHECK(pool.idle() == 2);
  CHECK(pool.in_use() == 0);
  Pipe q1 = pool.acquire(), q2 = pool.acquire(), q3 = pool.acquire();
  CHECK(q1);
  CHECK(q2);
  CHECK_FALSE(q3);
  CHECK(pool.idle() == 0);
  pool.release(std::move(q1));
  pool.release(std::move(q2));
}

TEST_CASE("pipe pool: max_pipes 0 never hands out a pipe (forces the relay's buffer path)") {
  const size_t before = open_fd_count();
  PipePool pool(0);
  for (int i = 0; i < 10; ++i) CHECK_FALSE(pool.acquire());
  CHECK(pool.in_use() == 0);
  CHECK(pool.idle() == 0);
  CHECK(open_fd_count() == before);
}

TEST_CASE("pipe pool: a released pipe is reused rather than a new one made") {
  PipePool pool(4);
  Pipe first = pool.acquire();
  REQUIRE(first);
  const int read_fd = first.read_end.get(), write_fd = first.write_end.get();
  pool.release(std::move(first));
  CHECK(pool.idle() == 1);
  CHECK(pool.in_use() == 0);
  CHECK(fd_is_open(read_fd));

  const size_t fds = open_fd_count();
  Pipe second = pool.acquire();
  REQUIRE(second);
  CHECK(second.read_end.get() == read_fd);
  CHECK(second.write_end.get() == write_fd);
  CHECK(pool.idle() == 0);
  CHECK(pool.in_use() == 1);
  CHECK(open_fd_count() == fds);
  pool.release(std::move(second));
}

TEST_CASE("pipe pool: a discarded pipe is closed and never reused and its bytes go with it") {
  PipePool pool(1);
  Pipe dirty = pool.acquire();
  REQUIRE(dirty);
  REQUIRE(::write(dirty.write_end.get(), "stale", 5) == 5);
  const int read_fd = dirty.read_end.get(), write_fd = dirty.write_end.get();
  pool.discard(std::move(dirty));
  CHECK(pool.in_use() == 0);
  CHECK(pool.idle() == 0);
  CHECK_FALSE(fd_is_open(read_fd));
  CHECK_FALSE(fd_is_open(write_fd));

  // The slot it held is free again, and the next pipe starts empty.
  Pipe fresh = pool.acquire();
  REQUIRE(fresh);
  char buf[8];
  CHECK(::read(fresh.read_end.get(), buf, sizeof buf) == -1);
  CHECK(errno == EAGAIN);
  pool.release(std::move(fresh));
}

TEST_CASE("pipe pool: at most 256 idle pipes are kept; the rest are closed") {
  const size_t before = open_fd_count();
  {
    PipePool pool(300);
    std::vector<Pipe> held;
    for (int i = 0; i < 300; ++i) {
      held.push_back(pool.acquire());
      REQUIRE(held.back());
    }
    CHECK(open_fd_count() == before + 600);
    for (auto& p : held) pool.release(std::move(p));
    CHECK(pool.in_use() == 0);
    CHECK(pool.idle() == 256);
    CHECK(open_fd_count() == before + 512);

    // All 300 can be handed out again: 256 reused, 44 made anew.
    held.clear();
    for (int i = 0; i < 300; ++i) {
      held.push_back(pool.acquire());
      REQUIRE(held.back());
    }
    CHECK_FALSE(pool.acquire());
    for (auto& p : held) pool.release(std::move(p));
  }
  CHECK(open_fd_count() == before);
}

TEST_CASE("pipe pool: destroying the pool closes its idle pipes") {
  const size_t before = open_fd_count();
  {
    PipePool pool(8);
    std::vector<Pipe> held;
    for (int i = 0; i < 8; ++i) held.push_back(pool.acquire());
    for (auto& p : held) pool.release(std::move(p));
    CHECK(open_fd_count() == before + 16);
  }
  CHECK(open_fd_count() == before);
}

TEST_CASE("pipe pool: an empty Pipe tests false") {
  Pipe none;
  CHECK_FALSE(none);
  CHECK(none.capacity == 0);
}

TEST_CASE("pipe pool: trim_idle closes idle pipes only after a period without acquisitions") {
  const size_t before = open_fd_count();
  PipePool pool(8);
  std::vector<Pipe> held;
  for (int i = 0; i < 3; ++i) held.push_back(pool.acquire());
  for (auto& p : held) pool.release(std::move(p));
  REQUIRE(pool.idle() == 3);

  pool.trim_idle();  // pipes were taken since the last trim: traffic is recent, keep them
  CHECK(pool.idle() == 3);
  CHECK(open_fd_count() == before + 6);

  pool.trim_idle();  // a whole period without acquisitions: give them back to the kernel
  CHECK(pool.idle() == 0);
  CHECK(open_fd_count() == before);
  CHECK(pool.in_use() == 0);
}

TEST_CASE("pipe pool: trim_idle never touches pipes in use") {
  PipePool pool(4);
  Pipe busy = pool.acquire();
  Pipe spare = pool.acquire();
  REQUIRE(busy);
  REQUIRE(spare);
  pool.release(std::move(spare));
  pool.trim_idle();
  pool.trim_idle();
  CHECK(pool.idle() == 0);
  CHECK(pool.in_use() == 1);
  CHECK(fd_is_open(busy.read_end.get()));
  REQUIRE(::write(busy.write_end.get(), "x", 1) == 1);
  pool.discard(std::move(busy));
  CHECK(pool.in_use() == 0);
}

TEST_CASE("pipe pool: each acquisition between trims keeps the idle pipes one more period") {
  PipePool pool(2);
  pool.release(pool.acquire());
  for (int period = 0; period < 5; ++period) {
    pool.release(pool.acquire());  // steady traffic
    pool.trim_idle();
    CHECK(pool.idle() == 1);
  }
  pool.trim_idle();
  CHECK(pool.idle() == 0);
  // After a trim the pool still makes pipes on demand.
  Pipe again = pool.acquire();
  CHECK(again);
  pool.release(std::move(again));
}

TEST_CASE(
    "pipe pool: trimming on a periodic timer empties a quiet pool, and stops with the timer") {
  tunnel::EventLoop loop;
  PipePool pool(4);
  pool.release(pool.acquire());
  REQUIRE(pool.idle() == 1);
  {
    tunnel::PeriodicTimer trimmer(loop, 10ms, [&] { pool.trim_idle(); });
    trimmer.start();
    // The first tick sees the acquisition above and keeps the pipe; the second one trims it.
    auto deadline = Clock::now() + 2s;
    while (pool.idle() > 0 && Clock::now() < deadline) loop.run_once(50);
    CHECK(pool.idle() == 0);
    CHECK(Clock::now() < deadline);
  }
  CHECK(loop.timers().size() == 0);
  pool.release(pool.acquire());
  for (int i = 0; i < 5; ++i) loop.run_once(10);
  CHECK(pool.idle() == 1);  // nobody trims any more
}

TEST_CASE("pipe pool: trimming on a periodic timer keeps the pipes of a busy pool") {
  tunnel::EventLoop loop;
  PipePool pool(4);
  tunnel::PeriodicTimer trimmer(loop, 20ms, [&] { pool.trim_idle(); });
  trimmer.start();
  auto end = Clock::now() + 150ms;
  while (Clock::now() < end) {
    pool.release(pool.acquire());
    loop.run_once(5);
    CHECK(pool.idle() == 1);
  }
}
