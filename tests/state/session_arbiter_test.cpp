// SessionArbiter, the server's answer to "who is the client": one session at a time, a newcomer
// probes the current one (docs/PROTOCOL.md, "A second control connection"), heartbeat, FAIL,
// shutdown. Control connections are socketpairs; the test holds the client ends and speaks protocol
// lines.
#include "session_arbiter.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "state_support.hpp"
#include "tunnel/protocol.hpp"

using namespace std::chrono_literals;
using state_tests::ManualLoop;
using tunnel::server::ArbiterState;
using tunnel::server::SessionArbiter;

namespace {

using Client = std::shared_ptr<state_tests::LinePeer>;

// What the arbiter told its owner, in order: "online", "lost", "fail <id> <reason>".
struct Owner {
  std::vector<std::string> calls;
  int count(std::string_view what) const {
    return static_cast<int>(std::count(calls.begin(), calls.end(), what));
  }
  SessionArbiter::Events events() {
    return {[this](tunnel::server::Session&) { calls.push_back("online"); },
            [this](tunnel::server::Session&) { calls.push_back("lost"); },
            [this](tunnel::server::Session&, const tunnel::ConnId& id, std::string_view reason) {
              calls.push_back("fail " + id.hex() + " " + std::string(reason));
            },
            [this](tunnel::server::Session&, const std::string& service) {
              calls.push_back("serve " + service);
            },
            [this](tunnel::server::Session&, size_t wanted) {
              calls.push_back("pool " + std::to_string(wanted));
            }};
  }
};

// A loop on a manual clock, the owner's record and the arbiter under test (1 s heartbeat interval,
// 3 s heartbeat timeout, 1 s probe timeout). offer() hands the arbiter a new control connection.
struct Fixture {
  ManualLoop ml;
  Owner owner;
  uint64_t session_numbers = 0;
  SessionArbiter arbiter{
      ml.loop,         "default",     tunnel::HeartbeatSettings{1s, 3s}, tunnel::Duration(1s),
      session_numbers, owner.events()};
  std::vector<Client> clients;

  Client offer(std::string name) {
    auto pair = state_tests::socket_pair();
    arbiter.offer(state_tests::plain(std::move(pair.ours)), name);
    clients.push_back(std::make_shared<state_tests::LinePeer>(name, std::move(pair.theirs)));
    return clients.back();
  }
  std::string state() const { return std::string(tunnel::server::to_string(arbiter.state())); }
  // Everything a failure message needs: the arbiter's state, what the owner heard, what each
  // client end read.
  std::string report() const {
    std::string out = "arbiter state: " + state() + "\nowner heard:";
    for (const auto& c : owner.calls) out += " " + c + ";";
    for (const auto& c : clients) {
      out += '\n';
      out += c->transcript();
    }
    return out;
  }
};

// Pumps the loop until `condition` holds; if it never does, fails saying what was awaited and
// what happened instead.
#define REQUIRE_EVENTUALLY(f, condition)                          \
  do {                                                            \
    bool held = (f).ml.pump_until([&] { return (condition); });   \
    INFO("waited in vain for: " #condition "\n" << (f).report()); \
    REQUIRE(held);                                                \
  } while (false)

}  // namespace

TEST_CASE("the first control connection becomes the session: OK, online, on_online once",
          "[arbiter]") {
  Fixture f;
  auto client = f.offer("first");
  REQUIRE_EVENTUALLY(f, client->got("OK"));
  CHECK(f.state() == "online");
  CHECK(f.arbiter.online());
  CHECK(f.owner.calls == std::vector<std::string>{"online"});
  CHECK(f.arbiter.sessions_opened() == 1);
}

TEST_CASE("a newcomer while the session answers its probe gets ERR busy and the session stays",
          "[arbiter]") {
  Fixture f;
  auto first = f.offer("first");
  REQUIRE_EVENTUALLY(f, first->got("OK"));
  auto second = f.offer("second");
  CHECK(f.state() == "probing");
  REQUIRE_EVENTUALLY(f, first->got("PING probe-1"));
  CHECK_FALSE(second->got_prefix("OK"));  // no answer before the probe decides
  first->say("PONG probe-1\n");
  REQUIRE_EVENTUALLY(f, second->saw_close());
  CHECK(second->got_prefix("ERR busy "));
  CHECK_FALSE(second->got_prefix("OK"));
  CHECK(f.state() == "online");
  CHECK(f.owner.calls == std::vector<std::string>{"online"});
  CHECK(f.arbiter.refused_busy() == 1);
  CHECK(f.arbiter.sessions_opened() == 1);
  // The first session is untouched: it still hears what the server sends.
  auto id = tunnel::ConnId::random();
  f.arbiter.session()->send_line(tunnel::protocol::new_conn(id));
  REQUIRE_EVENTUALLY(f, first->got("NEW " + id.hex()));
  CHECK_FALSE(first->saw_close());
}

TEST_CASE("a newcomer while the session stays silent replaces it after the probe timeout",
          "[arbiter]") {
  Fixture f;
  auto first = f.offer("first");
  REQUIRE_EVENTUALLY(f, first->got("OK"));
  auto second = f.offer("second");
  REQUIRE_EVENTUALLY(f, first->got("PING probe-1"));
  f.ml.advance(999ms);
  f.ml.settle();
  CHECK(f.state() == "probing");  // not before the probe timeout
  CHECK_FALSE(second->got_prefix("OK"));
  f.ml.advance(2ms);
  REQUIRE_EVENTUALLY(f, first->saw_close() && second->got("OK"));
  CHECK(f.owner.calls == std::vector<std::string>{"online", "lost", "online"});
  CHECK(f.state() == "online");
  CHECK(f.arbiter.sessions_opened() == 2);
  CHECK(f.arbiter.refused_busy() == 0);
  CHECK_FALSE(second->saw_close());
}

TEST_CASE("newcomers share one probe and beyond kMaxNewcomers are refused at once", "[arbiter]") {
  Fixture f;
  auto first = f.offer("first");
  REQUIRE_EVENTUALLY(f, first->got("OK"));
  std::vector<Client> waiting;
  for (size_t i = 0; i < SessionArbiter::kMaxNewcomers; ++i)
    waiting.push_back(f.offer("waiting-" + std::to_string(i)));
  CHECK(f.arbiter.refused_busy() == 0);
  auto extra = f.offer("one too many");
  CHECK(f.arbiter.refused_busy() == 1);
  REQUIRE_EVENTUALLY(f, extra->saw_close());
  CHECK(extra->got_prefix("ERR busy "));
  f.ml.settle();
  first->poll();
  CHECK(first->lines == std::vector<std::string>{"OK", "PING probe-1"});  // one probe for all

  // The silent session loses; the first newcomer takes the place, the others get ERR busy.
  f.ml.advance(1001ms);
  REQUIRE_EVENTUALLY(f, waiting.front()->got("OK"));
  for (size_t i = 1; i < waiting.size(); ++i) {
    REQUIRE_EVENTUALLY(f, waiting[i]->saw_close());
    CHECK(waiting[i]->got_prefix("ERR busy "));
  }
  CHECK(f.owner.calls == std::vector<std::string>{"online", "lost", "online"});
  CHECK(f.arbiter.refused_busy() == SessionArbiter::kMaxNewcomers);
}

TEST_CASE("the session closing is lost once and leaves no session", "[arbiter]") {
  Fixture f;
  auto client = f.offer("first");
  REQUIRE_EVENTUALLY(f, client->got("OK"));
  client->fd.reset();
  REQUIRE_EVENTUALLY(f, f.owner.count("lost") > 0);
  CHECK(f.state() == "no-session");
  CHECK_FALSE(f.arbiter.online());
  f.ml.advance(10s);
  f.ml.settle();
  CHECK(f.owner.calls == std::vector<std::string>{"online", "lost"});
}

TEST_CASE("the session closing during a probe hands its place to the waiting newcomer",
          "[arbiter]") {
  Fixture f;
  auto first = f.offer("first");
  REQUIRE_EVENTUALLY(f, first->got("OK"));
  auto second = f.offer("second");
  REQUIRE_EVENTUALLY(f, first->got("PING probe-1"));
  first->fd.reset();
  REQUIRE_EVENTUALLY(f, second->got("OK"));
  CHECK(f.owner.calls == std::vector<std::string>{"online", "lost", "online"});
  CHECK(f.state() == "online");
  // The dead session's probe has nothing left to decide.
  f.ml.advance(1500ms);
  f.ml.settle();
  CHECK(f.owner.calls == std::vector<std::string>{"online", "lost", "online"});
  CHECK_FALSE(second->saw_close());
}

TEST_CASE("the session pings every interval and is lost after the heartbeat timeout of silence",
          "[arbiter]") {
  Fixture f;
  auto client = f.offer("first");
  REQUIRE_EVENTUALLY(f, client->got("OK"));
  // A client that talks (any line counts) stays; the server answers its PING.
  for (int second = 1; second <= 5; ++second) {
    f.ml.advance(1s);
    REQUIRE_EVENTUALLY(f, client->got("PING hb-" + std::to_string(second)));
    client->say("PING c" + std::to_string(second) + "\n");
    REQUIRE_EVENTUALLY(f, client->got("PONG c" + std::to_string(second)));
  }
  CHECK(f.owner.count("lost") == 0);
  // Now silent: lost at 3 s, not before.
  f.ml.advance(2s);
  f.ml.settle();
  CHECK(f.owner.count("lost") == 0);
  f.ml.advance(1s);
  REQUIRE_EVENTUALLY(f, client->saw_close());
  CHECK(f.owner.calls == std::vector<std::string>{"online", "lost"});
  CHECK(f.state() == "no-session");
}

TEST_CASE("FAIL <id> <reason> from the client reaches on_fail with that id and reason",
          "[arbiter]") {
  Fixture f;
  auto client = f.offer("first");
  REQUIRE_EVENTUALLY(f, client->got("OK"));
  auto id = tunnel::ConnId::random();
  client->say(tunnel::protocol::fail(id, "connection-refused"));
  REQUIRE_EVENTUALLY(f, f.owner.calls.size() > 1);
  CHECK(f.owner.calls ==
        std::vector<std::string>{"online", "fail " + id.hex() + " connection-refused"});
  CHECK(f.state() == "online");
}

// Regression: the loss of a session whose send failed is reported by a zero-delay timer; a control
// hello in the same batch must report it first, and the timer must not report it a second time.
TEST_CASE("a send failure then a control hello in the same batch: on_lost once, before on_online",
          "[arbiter][regression]") {
  Fixture f;
  auto first = f.offer("first");
  REQUIRE_EVENTUALLY(f, first->got("OK"));
  first->fd.reset();  // the next send gets EPIPE
  f.arbiter.session()->send_line(tunnel::protocol::new_conn(tunnel::ConnId::random()));
  auto second = f.offer("second");  // same batch: the loop has not run
  CHECK(f.owner.calls == std::vector<std::string>{"online", "lost", "online"});
  REQUIRE_EVENTUALLY(f, second->got("OK"));
  f.ml.settle();
  f.ml.advance(500ms);
  f.ml.settle();
  CHECK(f.owner.calls == std::vector<std::string>{"online", "lost", "online"});
  CHECK(f.state() == "online");
  CHECK(f.arbiter.sessions_opened() == 2);
}

// A session lost while newcomers wait on its probe seats the first of them, also when the loss is
// found by a later hello (a failed send): the waiting newcomer is not left without an answer.
TEST_CASE("a hello that finds the session dead seats the newcomer already waiting on its probe",
          "[arbiter][regression]") {
  Fixture f;
  auto first = f.offer("first");
  REQUIRE_EVENTUALLY(f, first->got("OK"));
  auto waiting = f.offer("waiting");
  REQUIRE_EVENTUALLY(f, first->got("PING probe-1"));
  first->fd.reset();
  f.arbiter.session()->send_line(tunnel::protocol::new_conn(tunnel::ConnId::random()));
  auto late = f.offer("late");  // same batch: finds the session dead
  CHECK(f.owner.calls == std::vector<std::string>{"online", "lost", "online"});
  REQUIRE_EVENTUALLY(f, waiting->got("OK") && late->saw_close());
  CHECK(late->got_prefix("ERR busy "));
  f.ml.advance(1001ms);  // past the dead session's probe timeout: nothing more happens
  f.ml.settle();
  CHECK(f.owner.calls == std::vector<std::string>{"online", "lost", "online"});
  CHECK(f.state() == "online");
  CHECK_FALSE(waiting->saw_close());
}

TEST_CASE("close() ends the session and turns later control connections away with ERR busy",
          "[arbiter]") {
  Fixture f;
  auto first = f.offer("first");
  REQUIRE_EVENTUALLY(f, first->got("OK"));
  f.arbiter.close();
  CHECK(f.state() == "no-session");
  REQUIRE_EVENTUALLY(f, first->saw_close());
  auto later = f.offer("later");
  REQUIRE_EVENTUALLY(f, later->saw_close());
  CHECK(later->got_prefix("ERR busy "));
  CHECK_FALSE(later->got_prefix("OK"));
  CHECK(f.owner.count("online") == 1);
  CHECK(f.arbiter.refused_busy() == 1);
  CHECK(f.state() == "no-session");
}
