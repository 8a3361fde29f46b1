// Failure behaviour (docs/ARCHITECTURE.md), row "SIGTERM / SIGINT": stop accepting, let active
// relays finish, exit 0; a second signal aborts at once. Transfers are held in the middle so that
// the signal surely finds them.
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <future>
#include <optional>
#include <thread>

#include "ops_support.hpp"
#include "support/daemons.hpp"
#include "support/echo_tunnel.hpp"
#include "support/payload.hpp"
#include "support/report.hpp"
#include "support/scripted_target.hpp"
#include "support/socket_io.hpp"

using namespace tunnel::test;
using namespace tunnel::test::ops;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint64_t kHead = 256 * 1024;
constexpr Millis kStall{30000};

// One echo transfer through A in two parts: a head, echoed back to prove that the relay runs, and
// the rest only once released, so that a signal can be sent while every transfer is mid-way.
class GatedTransfer {
 public:
  GatedTransfer(uint16_t port_a, uint64_t seed, uint64_t size, std::shared_future<void> release)
      : seed_(seed), size_(size), release_(std::move(release)), socket_(connect_tcp(port_a)) {
    receiver_ = std::thread([this] { receive(); });
    sender_ = std::thread([this] { send(); });
  }
  ~GatedTransfer() {
    stop_ = true;
    ::shutdown(socket_.fd(), SHUT_RDWR);
    join();
  }
  GatedTransfer(const GatedTransfer&) = delete;
  GatedTransfer& operator=(const GatedTransfer&) = delete;

  uint64_t received() const { return received_.load(); }
  uint64_t size() const { return size_; }

  // Empty when every byte came back unchanged, followed by an orderly EOF; else what went wrong.
  std::string verdict() {
    join();
    std::string problems = send_error_;
    if (received_ != size_ || mismatch_ || end_ != End::eof) {
      problems += (problems.empty() ? "" : "; ") + std::to_string(received_.load()) + " of " +
                  std::to_string(size_) + " bytes back, then " + to_string(end_);
      if (mismatch_) problems += ", first wrong byte at " + std::to_string(*mismatch_);
    }
    return problems;
  }

 private:
  void join() {
    if (sender_.joinable()) sender_.join();
    if (receiver_.joinable()) receiver_.join();
  }

  void send() {
    PayloadStream stream(seed_);
    std::string chunk;
    uint64_t sent = 0;
    auto send_until = [&](uint64_t until) {
      while (sent < until) {
        stream.next(chunk, static_cast<size_t>(std::min<uint64_t>(256 * 1024, until - sent)));
        int error = 0;
        if (!try_send_all(socket_, chunk, kStall, error)) {
          send_error_ = "send failed after " + std::to_string(sent) +
                        " bytes: " + (error == ETIMEDOUT ? "stalled" : std::strerror(error));
          return false;
        }
        sent += chunk.size();
      }
      return true;
    };
    if (!send_until(std::min(kHead, size_))) return;
    while (release_.wait_for(50ms) != std::future_status::ready) {
      if (stop_) return;
    }
    if (!send_until(size_)) return;
    ::shutdown(socket_.fd(), SHUT_WR);
  }

  void receive() {
    PayloadChecker checker(seed_);
    while (true) {
      ReadResult r = read_some(socket_, 256 * 1024, kStall);
      if (r.end != End::complete) {
        end_ = r.end;
        break;
      }
      checker.check(r.data);
      received_ = checker.checked();
    }
    mismatch_ = checker.first_mismatch();
  }

  uint64_t seed_;
  uint64_t size_;
  std::shared_future<void> release_;
  Socket socket_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> received_{0};
  std::string send_error_;
  End end_ = End::timeout;
  std::optional<uint64_t> mismatch_;
  std::thread sender_;
  std::thread receiver_;
};

void wait_heads(const std::vector<std::unique_ptr<GatedTransfer>>& transfers) {
  wait_until(
      [&] {
        return std::all_of(transfers.begin(), transfers.end(), [](const auto& t) {
          return t->received() >= std::min(kHead, t->size());
        });
      },
      20s, "the head of every transfer to come back through the tunnel");
}

}  // namespace

TEST_CASE(
    "SIGTERM during 20 active transfers: all complete byte-exact, new connections refused, exit 0 "
    "drained") {
  EchoTunnel tunnel({"--drain-timeout", "60s"});
  std::promise<void> release;
  const std::shared_future<void> released = release.get_future().share();
  std::vector<std::unique_ptr<GatedTransfer>> transfers;
  uint64_t total = 0;
  for (uint64_t i = 0; i < 20; ++i) {
    const uint64_t size = (2 + (i * 3) % 7) * kMiB;  // 2..8 MiB
    total += size;
    transfers.push_back(
        std::make_unique<GatedTransfer>(tunnel.server.port_a(), 1000 + i, size, released));
  }
  wait_heads(transfers);

  const size_t mark = tunnel.server.mark();
  const auto signalled = Clock::now();
  tunnel.server.process().signal(SIGTERM);
  const std::string draining =
      tunnel.server.wait_for_line(Match::regex("event=draining active=[0-9]+"), 5s, mark);
  CHECK(field(draining, "active") == "20");
  // The listeners are closed before the drain starts: a new external connection is refused.
  const Reach late = probe_connect("127.0.0.1", tunnel.server.port_a(), 2s);
  CHECK(late == Reach::failed);

  release.set_value();
  for (size_t i = 0; i < transfers.size(); ++i) {
    const std::string verdict = transfers[i]->verdict();
    INFO("transfer " << i << " (" << transfers[i]->size() << " bytes): " << verdict);
    CHECK(verdict.empty());
  }
  const ExitStatus status = tunnel.server.process().wait_exit(30s);
  const long long drain_ms = ms_since(signalled);
  MEASURED("drain: 20 transfers (" << total / kMiB << " MiB each way) finished; server exited ("
                                   << status.describe() << ") " << drain_ms << " ms after SIGTERM");
  CHECK((status.exited && status.code == 0));
  CHECK(tunnel.server.log().find("event=stopping signal=TERM", mark).has_value());
  CHECK(tunnel.server.log().find("event=stopped reason=drained", mark).has_value());
}

TEST_CASE("second SIGTERM while draining: exits at once with code 0 and action=abort") {
  EchoTunnel tunnel({"--drain-timeout", "30s"});
  Socket a = connect_tcp(tunnel.server.port_a());
  const std::string held = "a relay that will not finish by itself\n";
  send_all(a, held);
  CHECK(read_exact(a, held.size(), 5s) == held);

  const size_t mark = tunnel.server.mark();
  tunnel.server.process().signal(SIGTERM);
  tunnel.server.wait_for_line("event=draining active=1", 5s, mark);
  const auto second = Clock::now();
  tunnel.server.process().signal(SIGTERM);
  const ExitStatus status = tunnel.server.process().wait_exit(10s);
  const long long exit_ms = ms_since(second);
  MEASURED("second signal: server exited (" << status.describe() << ") " << exit_ms
                                            << " ms after the second SIGTERM");
  CHECK((status.exited && status.code == 0));
  CHECK(exit_ms <= 2000);
  CHECK(tunnel.server.log().find("event=stopping signal=TERM action=abort", mark).has_value());
  CHECK(tunnel.server.log().find("event=stopped reason=second-signal", mark).has_value());
  ReadResult end = read_to_end(a, 2s);
  INFO("held A connection: " << end.describe());
  CHECK((end.end == End::eof || end.end == End::reset));
}

TEST_CASE("SIGTERM to the client during a transfer: the transfer finishes byte-exact, exit 0") {
  EchoTunnel tunnel({}, {"--drain-timeout", "30s"});
  std::promise<void> release;
  std::vector<std::unique_ptr<GatedTransfer>> transfers;
  transfers.push_back(std::make_unique<GatedTransfer>(tunnel.server.port_a(), 77, 4 * kMiB,
                                                      release.get_future().share()));
  wait_heads(transfers);

  const size_t mark = tunnel.client.mark();
  const size_t server_mark = tunnel.server.mark();
  const auto signalled = Clock::now();
  tunnel.client.process().signal(SIGTERM);
  tunnel.client.wait_for_line("event=draining active=1", 5s, mark);
  // The client gave up its control connection: the server sees it go.
  tunnel.server.wait_for_line("event=client-offline session=1", 5s, server_mark);

  release.set_value();
  const std::string verdict = transfers[0]->verdict();
  INFO("transfer: " << verdict);
  CHECK(verdict.empty());
  const ExitStatus status = tunnel.client.process().wait_exit(10s);
  MEASURED("client drain: 4 MiB transfer finished; client exited ("
           << status.describe() << ") " << ms_since(signalled) << " ms after SIGTERM");
  CHECK((status.exited && status.code == 0));
  CHECK(tunnel.client.log().find("event=stopped reason=drained", mark).has_value());
}
