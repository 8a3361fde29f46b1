// The server's connection table in-process: admit, announce, claim, FAIL, CLOSE, timeouts, client
// loss, max-pending and drain, over socketpairs, with a fake client link and a manual clock.
#include "connection_table.hpp"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "state_support.hpp"
#include "tunnel/protocol.hpp"

using namespace std::chrono_literals;
using namespace state_tests;
using tunnel::ConnId;
using tunnel::Fd;
using tunnel::server::ClientLink;
using tunnel::server::ConnectionTable;
using tunnel::server::ConnState;
using tunnel::server::FailureReason;
using tunnel::server::Service;

namespace {

// Plays one client's session: its number and name, and the lines the table sent it.
struct FakeClient final : ClientLink {
  explicit FakeClient(uint64_t n = 1, std::string client = "lan1", bool services = false)
      : session_number(n), client_name(std::move(client)), services_extension(services) {}
  uint64_t session_number;
  std::string client_name;
  bool services_extension;
  bool is_open = true;
  std::vector<std::string> lines;
  uint64_t number() const override { return session_number; }
  std::string_view name() const override { return client_name; }
  bool open() const override { return is_open; }
  bool speaks_services() const override { return services_extension; }
  const tunnel::auth::SessionKey* key() const override { return nullptr; }
  void send_line(std::string_view line) override { lines.emplace_back(line); }
};

// The id in a NEW/CLOSE line sent to the fake client.
ConnId id_in(const std::string& line) {
  auto parsed = tunnel::protocol::parse_message(line.substr(0, line.size() - 1));
  auto* message = std::get_if<tunnel::protocol::Message>(&parsed);
  REQUIRE(message != nullptr);
  return message->id;
}

tunnel::server::ServiceConfig web_service() {
  tunnel::server::ServiceConfig config;
  config.name = "web";
  return config;
}

struct Harness {
  ManualLoop manual;
  FakeClient client;
  std::shared_ptr<Service> service = std::make_shared<Service>(web_service());
  std::vector<FailureReason> failures;
  std::vector<tunnel::RelayOutcome> relays_ended;
  std::vector<ConnId> disowned;  // what link_lost returned
  ConnectionTable table{manual.loop, 10s, 4,
                        ConnectionTable::Events{
                            [this](FailureReason r) { failures.push_back(r); },
                            [this](const tunnel::RelayOutcome& o) { relays_ended.push_back(o); },
                            nullptr}};

  // Admits a connection; returns the external user's end of it.
  Fd admit() {
    auto pair = socket_pair();
    table.admit(std::move(pair.ours), service);
    return std::move(pair.theirs);
  }
  // `link` starts serving the service, and is told what waits.
  void online(FakeClient& link) {
    service->add(link);
    table.service_served(*service);
  }
  void online() { online(client); }
  // The client serves the service, but nothing waiting is announced yet.
  void serve_quietly() { service->add(client); }
  // `link`'s session ends: it leaves the service, then the table hears of it.
  void lost(FakeClient& link) {
    link.is_open = false;
    service->remove(link);
    disowned = table.link_lost(link);
  }
  void lost() { lost(client); }
};

}  // namespace

TEST_CASE(
    "an A connection with no client online waits, then fails as no-client at the pair timeout") {
  Harness h;
  Fd external = h.admit();
  CHECK(h.table.count(ConnState::waiting_for_client) == 1);
  CHECK(h.client.lines.empty());
  h.manual.advance(9s);
  h.manual.settle();
  CHECK(h.table.pending() == 1);
  CHECK_FALSE(peer_closed(external.get()));
  h.manual.advance(1s);
  h.manual.settle();
  CHECK(h.table.pending() == 0);
  CHECK(peer_closed(external.get()));
  REQUIRE(h.failures.size() == 1);
  CHECK(h.failures[0] == FailureReason::no_client);
  CHECK(h.client.lines.empty());  // never announced, so no CLOSE either
}

TEST_CASE("a waiting connection is announced when a client comes online, and relays once claimed") {
  Harness h;
  Fd external = h.admit();
  REQUIRE(write_all(external.get(), "early bytes"));  // sent before pairing: must not be lost
  h.online();
  REQUIRE(h.client.lines.size() == 1);
  REQUIRE(h.client.lines[0].starts_with("NEW "));
  ConnId id = id_in(h.client.lines[0]);
  CHECK(h.table.state_of(id) == ConnState::announced);

  auto data = socket_pair();
  REQUIRE(h.table.claim(id, plain(std::move(data.ours))));
  CHECK(h.table.state_of(id) == ConnState::relaying);
  CHECK(h.table.relaying() == 1);
  CHECK(h.table.pending() == 0);

  std::string at_client;
  REQUIRE(h.manual.pump_until([&] {
    read_available(data.theirs.get(), at_client);
    return at_client == "early bytes";
  }));
  REQUIRE(write_all(data.theirs.get(), "answer"));
  std::string at_external;
  REQUIRE(h.manual.pump_until([&] {
    read_available(external.get(), at_external);
    return at_external == "answer";
  }));

  external.reset();
  data.theirs.reset();
  REQUIRE(h.manual.pump_until([&] { return !h.table.state_of(id).has_value(); }));
  REQUIRE(h.relays_ended.size() == 1);
  CHECK(h.relays_ended[0].bytes_to_service == 11);
  CHECK(h.relays_ended[0].bytes_to_visitor == 6);
  CHECK(h.failures.empty());
}

TEST_CASE("only an announced id can be claimed, and only once") {
  Harness h;
  Fd waiting = h.admit();  // no client: waiting, never told to anyone
  CHECK_FALSE(h.table.claim(ConnId::random(), plain(socket_pair().ours)));
  h.serve_quietly();
  Fd announced = h.admit();
  REQUIRE(h.client.lines.size() == 1);
  ConnId id = id_in(h.client.lines[0]);
  CHECK(h.table.claim(id, plain(socket_pair().ours)));
  CHECK_FALSE(h.table.claim(id, plain(socket_pair().ours)));  // reused id
  CHECK(h.table.relaying() == 1);
  CHECK(h.table.count(ConnState::waiting_for_client) == 1);
}

TEST_CASE(
    "an announced connection with no DATA in time is closed as pair-timeout and CLOSE is sent") {
  Harness h;
  h.online();
  Fd external = h.admit();
  ConnId id = id_in(h.client.lines.at(0));
  h.manual.advance(10s);
  h.manual.settle();
  CHECK(peer_closed(external.get()));
  REQUIRE(h.failures.size() == 1);
  CHECK(h.failures[0] == FailureReason::pair_timeout);
  REQUIRE(h.client.lines.size() == 2);
  CHECK(h.client.lines[1] == tunnel::protocol::close_conn(id));
  CHECK_FALSE(h.table.claim(id, plain(socket_pair().ours)));  // a late DATA is refused
}

TEST_CASE("FAIL from the client closes the A connection at once as target-unreachable, no CLOSE") {
  Harness h;
  h.online();
  Fd external = h.admit();
  ConnId id = id_in(h.client.lines.at(0));
  h.table.fail(h.client, id, "connection-refused");
  h.manual.settle();
  CHECK(peer_closed(external.get()));
  REQUIRE(h.failures.size() == 1);
  CHECK(h.failures[0] == FailureReason::target_unreachable);
  CHECK(h.client.lines.size() == 1);
  CHECK_FALSE(h.table.state_of(id).has_value());
}

TEST_CASE("FAIL for an id the client was not told is ignored") {
  Harness h;
  Fd external = h.admit();  // waiting: no client
  h.serve_quietly();
  h.table.fail(h.client, ConnId::random(), "timeout");
  CHECK(h.failures.empty());
  CHECK(h.table.pending() == 1);
}

TEST_CASE("an A connection that goes away before pairing ends as closed-early") {
  Harness h;
  h.online();
  Fd external = h.admit();
  ConnId id = id_in(h.client.lines.at(0));
  external.reset();
  REQUIRE(h.manual.pump_until([&] { return !h.table.state_of(id).has_value(); }));
  REQUIRE(h.failures.size() == 1);
  CHECK(h.failures[0] == FailureReason::closed_early);
  CHECK(h.client.lines.back() == tunnel::protocol::close_conn(id));
}

TEST_CASE("a lost client's announced connections wait again under fresh ids, old ids disowned") {
  Harness h;
  h.online();
  Fd external = h.admit();
  ConnId old_id = id_in(h.client.lines.at(0));
  h.lost();
  CHECK_FALSE(h.table.state_of(old_id).has_value());
  CHECK(h.table.count(ConnState::waiting_for_client) == 1);
  // The lost session's DATA may still come (its client alive, only the control link gone): it
  // must never be paired with a connection the next session is serving.
  CHECK_FALSE(h.table.claim(old_id, plain(socket_pair().ours)));
  // The old id is handed back, for the client's next session to be told CLOSE (the arbiter's job).
  CHECK(h.disowned == std::vector<ConnId>{old_id});
  h.client.is_open = true;
  h.online();
  REQUIRE(h.client.lines.size() == 2);
  REQUIRE(h.client.lines[1].starts_with("NEW "));
  ConnId new_id = id_in(h.client.lines[1]);
  CHECK(new_id != old_id);
  CHECK(h.table.state_of(new_id) == ConnState::announced);
  CHECK_FALSE(h.table.claim(old_id, plain(socket_pair().ours)));
  auto data = socket_pair();
  REQUIRE(h.table.claim(new_id, plain(std::move(data.ours))));
  REQUIRE(write_all(external.get(), "served"));
  std::string got;
  REQUIRE(h.manual.pump_until([&] {
    read_available(data.theirs.get(), got);
    return got == "served";
  }));
}

TEST_CASE("a connection renamed after a lost session still times out, as no-client") {
  Harness h;
  h.online();
  Fd external = h.admit();
  h.lost();
  h.manual.advance(10s);
  h.manual.settle();
  CHECK(peer_closed(external.get()));
  REQUIRE(h.failures.size() == 1);
  CHECK(h.failures[0] == FailureReason::no_client);
  CHECK(h.table.pending() == 0);
}

TEST_CASE("beyond max-pending, A connections are closed at once and counted") {
  Harness h;  // max_pending 4
  std::vector<Fd> kept;
  for (int i = 0; i < 4; ++i) kept.push_back(h.admit());
  Fd shed = h.admit();
  CHECK(peer_closed(shed.get()));
  CHECK(h.table.pending() == 4);
  REQUIRE(h.failures.size() == 1);
  CHECK(h.failures[0] == FailureReason::max_pending);
}

TEST_CASE("drain closes what is not relaying and reports drained when the last relay ends") {
  Harness h;
  h.online();
  Fd waiting = h.admit();
  Fd relayed = h.admit();
  ConnId id = id_in(h.client.lines.at(1));
  auto data = socket_pair();
  REQUIRE(h.table.claim(id, plain(std::move(data.ours))));
  bool drained = false;
  h.table.drain([&] { drained = true; });
  h.manual.settle();
  CHECK(peer_closed(waiting.get()));
  CHECK(h.table.pending() == 0);
  CHECK_FALSE(drained);
  CHECK(h.failures.empty());  // shutting down is not a failure
  relayed.reset();
  data.theirs.reset();
  REQUIRE(h.manual.pump_until([&] { return drained; }));
  CHECK(h.table.relaying() == 0);
}

TEST_CASE("abort_relays resets every relay and still reports each end") {
  Harness h;
  h.online();
  Fd external = h.admit();
  auto data = socket_pair();
  REQUIRE(h.table.claim(id_in(h.client.lines.at(0)), plain(std::move(data.ours))));
  h.table.abort_relays();
  REQUIRE(h.manual.pump_until([&] { return h.relays_ended.size() == 1; }));
  CHECK(h.relays_ended[0].reset);
  CHECK(peer_closed(external.get()));
  CHECK(peer_closed(data.theirs.get()));
}

// --- several sessions serving one service ---

TEST_CASE("connections are spread round robin over the sessions serving the service") {
  Harness h;
  FakeClient second(2, "lan2", true);
  h.online();
  h.online(second);
  std::vector<Fd> kept;
  for (int i = 0; i < 4; ++i) kept.push_back(h.admit());
  CHECK(h.client.lines.size() == 2);
  CHECK(second.lines.size() == 2);
  // The session with the extension is told the service's name; the other the core NEW <id>.
  CHECK(second.lines[0].ends_with(" web\n"));
  CHECK(h.client.lines[0].size() == std::string("NEW ").size() + 32 + 1);
}

TEST_CASE("FAIL from one session hands the connection to another under a fresh id") {
  Harness h;
  FakeClient second(2, "lan2");
  h.online();
  h.online(second);
  Fd external = h.admit();
  REQUIRE(h.client.lines.size() == 1);
  ConnId first_id = id_in(h.client.lines[0]);
  h.table.fail(h.client, first_id, "connection-refused");
  REQUIRE(second.lines.size() == 1);
  ConnId second_id = id_in(second.lines[0]);
  CHECK(second_id != first_id);
  CHECK_FALSE(h.table.state_of(first_id).has_value());
  CHECK(h.table.announced_to(second_id) == &second);
  CHECK(h.failures.empty());
  // Every session failed: the connection ends, as target-unreachable.
  h.table.fail(second, second_id, "connection-refused");
  h.manual.settle();
  CHECK(peer_closed(external.get()));
  REQUIRE(h.failures.size() == 1);
  CHECK(h.failures[0] == FailureReason::target_unreachable);
  CHECK(h.service->counters.failed[static_cast<size_t>(FailureReason::target_unreachable)] == 1);
}

TEST_CASE("a session that answered FAIL is passed over for a while when another can serve") {
  Harness h;
  FakeClient second(2, "lan2");
  h.online();
  h.online(second);
  Fd a = h.admit();
  h.table.fail(h.client, id_in(h.client.lines.at(0)), "connection-refused");
  REQUIRE(second.lines.size() == 1);
  std::vector<Fd> kept;  // at most 4 pending in this harness
  for (int i = 0; i < 2; ++i) kept.push_back(h.admit());
  CHECK(h.client.lines.size() == 1);  // nothing new for the failing one
  CHECK(second.lines.size() == 3);
  h.manual.advance(Service::kFailureCooldown);
  kept.push_back(h.admit());
  CHECK(h.client.lines.size() == 2);  // back in the rotation
}

TEST_CASE("a lost session's connections go at once to another session serving the service") {
  Harness h;
  FakeClient second(2, "lan2");
  h.online();
  Fd external = h.admit();
  ConnId old_id = id_in(h.client.lines.at(0));
  h.online(second);
  CHECK(second.lines.empty());  // already announced to the first: not told twice
  h.lost();
  CHECK(h.disowned == std::vector<ConnId>{old_id});
  REQUIRE(second.lines.size() == 1);
  ConnId new_id = id_in(second.lines[0]);
  CHECK(new_id != old_id);
  CHECK(h.table.announced_to(new_id) == &second);
  CHECK(h.table.announced_to(old_id) == nullptr);
  auto data = socket_pair();
  REQUIRE(h.table.claim(new_id, plain(std::move(data.ours))));
  REQUIRE(write_all(external.get(), "served"));
  std::string got;
  REQUIRE(h.manual.pump_until([&] {
    read_available(data.theirs.get(), got);
    return got == "served";
  }));
}

TEST_CASE("a removed service ends its waiting and announced connections, not its relays") {
  Harness h;
  h.online();
  Fd relayed = h.admit();
  Fd announced = h.admit();
  auto data = socket_pair();
  REQUIRE(h.table.claim(id_in(h.client.lines.at(0)), plain(std::move(data.ours))));
  ConnId announced_id = id_in(h.client.lines.at(1));
  h.table.service_removed(*h.service);
  h.manual.settle();
  CHECK(peer_closed(announced.get()));
  CHECK(h.client.lines.back() == tunnel::protocol::close_conn(announced_id));
  REQUIRE(h.failures.size() == 1);
  CHECK(h.failures[0] == FailureReason::service_removed);
  CHECK(h.table.relaying() == 1);
  REQUIRE(write_all(relayed.get(), "still"));
  std::string got;
  REQUIRE(h.manual.pump_until([&] {
    read_available(data.theirs.get(), got);
    return got == "still";
  }));
}
