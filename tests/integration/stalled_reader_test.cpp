// Failure behaviour (docs/ARCHITECTURE.md), the row "one direction ended, the other stalled by a
// slow or absent reader", against the real daemons: no CPU spent while the target does not read,
// then every byte and the FIN.
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
#include <future>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/daemons.hpp"
#include "support/echo_tunnel.hpp"
#include "support/payload.hpp"
#include "support/report.hpp"
#include "support/scripted_target.hpp"
#include "support/socket_io.hpp"
#include "support/transfer.hpp"
#include "support/wait.hpp"

using namespace tunnel::test;
using namespace std::chrono_literals;

namespace {

// utime + stime of a process, from /proc/<pid>/stat.
Millis cpu_time(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  const std::string stat{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  // The command name (field 2) may hold spaces: count the fields after its closing parenthesis.
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) throw std::runtime_error("unreadable /proc/PID/stat: " + stat);
  std::istringstream rest(stat.substr(paren + 1));
  std::vector<std::string> fields;
  for (std::string f; rest >> f;) fields.push_back(f);
  // fields[0] is field 3 (state), so utime (14) and stime (15) are fields[11] and fields[12].
  if (fields.size() < 13) throw std::runtime_error("short /proc/PID/stat: " + stat);
  const long long ticks = std::stoll(fields[11]) + std::stoll(fields[12]);
  return Millis(ticks * 1000 / ::sysconf(_SC_CLK_TCK));
}

// One external connection of the sweep: it sends `size` bytes of the stream `seed` and its FIN on
// a thread of its own, which may block once every buffer on the way is full.
struct Upload {
  uint64_t size = 0;
  uint64_t seed = 0;
  Socket socket;
  std::atomic<uint64_t> progress{0};
  std::atomic<bool> done{false};
  SendReport sent;  // read only once `done`
  std::promise<ReceiveReport> received;
  std::jthread sender;

  void start() {
    sender = std::jthread([this] {
      sent.checksum = fnv1a("");
      PayloadStream stream(seed);
      std::string chunk;
      while (sent.sent < size) {
        stream.next(chunk, static_cast<size_t>(std::min<uint64_t>(64 * 1024, size - sent.sent)));
        int error = 0;
        if (!try_send_all(socket, chunk, 60s, error)) {
          sent.error = "send failed after " + std::to_string(sent.sent) + " bytes, errno " +
                       std::to_string(error);
          break;
        }
        sent.checksum = fnv1a(chunk, sent.checksum);
        sent.sent += chunk.size();
        progress = sent.sent;
      }
      if (sent.error.empty() && ::shutdown(socket.fd(), SHUT_WR) != 0)
        sent.error = "shutdown(SHUT_WR) failed";
      done = true;
    });
  }
};

// Sets the promise when the test leaves its scope, however it leaves it, so that no handler waits
// on it after the test.
struct SetOnExit {
  std::promise<void>& promise;
  bool set = false;
  void now() {
    if (!set) promise.set_value();
    set = true;
  }
  ~SetOnExit() { now(); }
};

}  // namespace

TEST_CASE(
    "one direction ended and the other stalled by a target that does not read: both daemons "
    "sleep, then every byte and the FIN arrive") {
  // Whether a daemon is left with a hung-up side it cannot read (its FIN in, ours out, unread
  // bytes whose flow waits for the target) depends on the size and on every socket buffer on the
  // way, which autotuning sizes differently from run to run: so many sizes run at once, each on
  // its own connection through one pair of daemons, in steps finer than those buffers.
  std::vector<uint64_t> sizes = {1 << 20, 2 << 20, 3 << 20};
  for (uint64_t size = 7 << 19; size <= 16 << 20; size += 1 << 19) sizes.push_back(size);
  std::vector<std::unique_ptr<Upload>> uploads;
  for (size_t i = 0; i < sizes.size(); ++i) {
    uploads.push_back(std::make_unique<Upload>());
    uploads.back()->size = sizes[i];
    uploads.back()->seed = 0x57a11ed + i;
  }

  std::promise<void> may_read;
  std::shared_future<void> reading_allowed = may_read.get_future().share();
  ScriptedTarget target([&](Socket& c, size_t index) {
    if (index >= uploads.size()) throw std::runtime_error("unexpected connection");
    shutdown_write(c);
    reading_allowed.wait_for(60s);  // bounded, in case the test fails before it lets us read
    uploads[index]->received.set_value(receive_stream(c, uploads[index]->seed, 20s));
  });
  Server server;
  Client client(server.port_b(), target.address());
  wait_session(server, client);
  // Declared after the uploads: lets the target read before their senders are joined.
  SetOnExit let_target_read{may_read};

  for (size_t i = 0; i < uploads.size(); ++i) {
    Upload& upload = *uploads[i];
    upload.socket = connect_tcp(server.port_a());
    // One at a time, so that the target's connection `i` is this one.
    target.wait_for_accepted(i + 1, 10s);
    // The target's FIN comes first: that direction has then ended in both daemons.
    ReadResult first = read_to_end(upload.socket, 10s);
    INFO("connection " << i << " before sending: " << first.describe());
    REQUIRE(first.data.empty());
    REQUIRE(first.end == End::eof);
    upload.start();
  }

  // Until every sender has sent all and its FIN, or none has moved for half a second.
  std::vector<uint64_t> last(uploads.size(), 0);
  auto last_change = Clock::now();
  wait_until(
      [&] {
        bool all_done = true;
        for (size_t i = 0; i < uploads.size(); ++i) {
          all_done = all_done && uploads[i]->done;
          if (uploads[i]->progress != last[i]) {
            last[i] = uploads[i]->progress;
            last_change = Clock::now();
          }
        }
        return all_done || Clock::now() - last_change > 500ms;
      },
      60s, "the external senders to finish or stall");
  std::string before;
  for (const auto& upload : uploads) {
    before += " " + std::to_string(upload->size >> 10) + " KiB: " +
              (upload->done ? "all and FIN;" : std::to_string(upload->progress >> 10) + " KiB;");
  }
  MEASURED("stalled reader: sent before the target read anything:" << before);

  const Millis server_before = cpu_time(server.pid());
  const Millis client_before = cpu_time(client.pid());
  const auto wall_start = Clock::now();
  std::this_thread::sleep_for(2s);  // proving that nothing happens takes a fixed wait
  const long long wall = ms_since(wall_start);
  const long long server_cpu = (cpu_time(server.pid()) - server_before).count();
  const long long client_cpu = (cpu_time(client.pid()) - client_before).count();
  MEASURED("stalled reader: over " << wall << " ms the server used " << server_cpu
                                   << " ms of CPU, the client " << client_cpu << " ms");
  {
    INFO("over " << wall << " ms while the target read nothing: server used " << server_cpu
                 << " ms of CPU, client " << client_cpu << " ms; sent:" << before);
    CHECK(server_cpu < 200);
    CHECK(client_cpu < 200);
  }

  let_target_read.now();
  for (size_t i = 0; i < uploads.size(); ++i) {
    Upload& upload = *uploads[i];
    INFO("connection " << i << ", " << upload.size << " bytes");
    auto at_target = upload.received.get_future();
    const ReceiveReport got = get_within(at_target, 30s, "the target to read until the end");
    wait_until([&] { return upload.done.load(); }, 10s, "the external sender to finish");
    INFO("external sender: " << upload.sent.sent << " bytes sent " << upload.sent.error);
    CHECK(upload.sent.error.empty());
    INFO("at the target: " << got.describe());
    CHECK(got.received == upload.size);
    CHECK_FALSE(got.first_mismatch);
    CHECK(got.checksum == upload.sent.checksum);
    CHECK(got.end == End::eof);
  }
  CHECK(target.errors().empty());
}
