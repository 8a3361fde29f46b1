// The client's link table in-process: NEW, both dials, DATA, relay, FAIL, CLOSE, a repeated NEW
// and a target slower than the server's handshake, against loopback listeners playing port B and
// the target, with a fake control link and a manual clock.
#include "link_table.hpp"

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "state_support.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/socket.hpp"

using namespace std::chrono_literals;
using namespace state_tests;
using tunnel::ConnId;
using tunnel::Fd;
using tunnel::client::ControlLink;
using tunnel::client::FailReason;
using tunnel::client::LinkState;
using tunnel::client::LinkTable;
using tunnel::client::ServiceCatalog;

namespace {

struct FakeControl final : ControlLink {
  std::vector<std::string> lines;
  void send_line(std::string_view line) override { lines.emplace_back(line); }
  std::string data_hello(const tunnel::ConnId& id) const override {
    return tunnel::protocol::data_hello(id);
  }
};

// A catalog of one service, `default`, whose target is `target`.
ServiceCatalog one_service(const tunnel::SocketAddresses& target) {
  return ServiceCatalog({{"default", target}});
}

struct Harness {
  explicit Harness(int target_backlog = 128) : target(target_backlog) {}

  ManualLoop manual;
  LoopbackListener server;  // port B
  LoopbackListener target;
  FakeControl control;
  std::vector<FailReason> failures;
  std::vector<std::optional<size_t>> failed_services;
  int relaying = 0;
  std::vector<size_t> relaying_services;
  std::vector<tunnel::RelayOutcome> relays_ended;
  std::vector<std::optional<size_t>> ended_services;
  ServiceCatalog services = one_service(target.addresses());
  LinkTable table{manual.loop, control, server.addresses(), services, 5s, nullptr, events()};

  LinkTable::Events events() {
    return {[this](FailReason r, std::optional<size_t> service) {
              failures.push_back(r);
              failed_services.push_back(service);
            },
            [this](size_t service) {
              ++relaying;
              relaying_services.push_back(service);
            },
            [this](const tunnel::RelayOutcome& o, std::optional<size_t> service) {
              relays_ended.push_back(o);
              ended_services.push_back(service);
            }};
  }

  Fd accept_from(LoopbackListener& listener) {
    Fd fd;
    bool accepted = manual.pump_until([&] {
      fd = listener.accept_one();
      return static_cast<bool>(fd);
    });
    INFO("expected the link table to connect");
    REQUIRE(accepted);
    return fd;
  }

  // A second table on the same loop and recorders, dialing other addresses (refusing ones).
  std::unique_ptr<LinkTable> table_with(std::span<const tunnel::SocketAddress> server_at,
                                        const ServiceCatalog& targets) {
    return std::make_unique<LinkTable>(manual.loop, control, server_at, targets, 5s, nullptr,
                                       events());
  }

  // Fills the target's accept queue (made with backlog 0): further connects stall, their SYN
  // dropped, until the queue has room again.
  std::vector<Fd> fill_target_backlog() {
    std::vector<Fd> fillers;
    for (int i = 0; i < 3; ++i) {
      std::error_code ec;
      fillers.push_back(tunnel::start_connect(target.address(), ec));
    }
    manual.settle(20);
    return fillers;
  }

  // NEW <id> with the target's accept queue full: B connects, the target dial stalls.
  struct SlowTarget {
    std::vector<Fd> fillers;  // keep the queue full while they live
    Fd data;                  // the link's data connection, as the server accepted it
  };
  SlowTarget serve_with_slow_target(const ConnId& id) {
    SlowTarget slow{fill_target_backlog(), {}};
    table.on_new(id, 0);
    slow.data = accept_from(server);
    REQUIRE(manual.pump_until([&] { return table.state_of(id) == LinkState::waiting_for_target; }));
    return slow;
  }

  // Reads the data connection's first line, as the server would.
  std::string first_line(const Fd& data) {
    std::string got;
    manual.pump_until([&] {
      read_available(data.get(), got);
      return got.find('\n') != std::string::npos;
    });
    return got;
  }
};

}  // namespace

TEST_CASE("NEW dials B and the target, sends DATA <id> once both are up, then relays both ways") {
  Harness h;
  ConnId id = ConnId::random();
  h.table.on_new(id, 0);
  CHECK(h.table.state_of(id) == LinkState::dialing_both);
  Fd data = h.accept_from(h.server);
  Fd target = h.accept_from(h.target);
  CHECK(h.first_line(data) == tunnel::protocol::data_hello(id));
  CHECK(h.table.state_of(id) == LinkState::relaying);
  CHECK(h.relaying == 1);

  REQUIRE(write_all(data.get(), "request"));
  std::string at_target;
  REQUIRE(h.manual.pump_until([&] {
    read_available(target.get(), at_target);
    return at_target == "request";
  }));
  REQUIRE(write_all(target.get(), "reply"));
  std::string at_server;
  REQUIRE(h.manual.pump_until([&] {
    read_available(data.get(), at_server);
    return at_server == "reply";
  }));
  data.reset();
  target.reset();
  REQUIRE(h.manual.pump_until([&] { return h.table.size() == 0; }));
  REQUIRE(h.relays_ended.size() == 1);
  CHECK(h.relays_ended[0].bytes_to_service == 7);
  CHECK(h.relays_ended[0].bytes_to_visitor == 5);
  CHECK(h.control.lines.empty());
}

TEST_CASE("a refused target is reported with FAIL <id> connection-refused and the link ends") {
  Harness h;
  auto [closed_port, refusing] = refusing_address();
  auto refusing_target = one_service(refusing);
  auto table_ptr = h.table_with(h.server.addresses(), refusing_target);
  LinkTable& table = *table_ptr;
  ConnId id = ConnId::random();
  table.on_new(id, 0);
  REQUIRE(h.manual.pump_until([&] { return !h.control.lines.empty(); }));
  CHECK(h.control.lines[0] == tunnel::protocol::fail(id, "connection-refused"));
  REQUIRE(h.failures.size() == 1);
  CHECK(h.failures[0] == FailReason::connection_refused);
  CHECK(table.size() == 0);
  // The data connection made meanwhile is closed without a DATA line.
  Fd data = h.server.accept_one();
  if (data) {
    std::string got;
    REQUIRE(h.manual.pump_until([&] { return !read_available(data.get(), got); }));
    CHECK(got.empty());
  }
}

TEST_CASE("B refusing the data connection is reported as FAIL <id> data-connect-failed") {
  Harness h;
  auto [closed_port, refusing] = refusing_address();
  auto table_ptr = h.table_with(refusing, h.services);
  LinkTable& table = *table_ptr;
  ConnId id = ConnId::random();
  table.on_new(id, 0);
  REQUIRE(h.manual.pump_until([&] { return !h.control.lines.empty(); }));
  CHECK(h.control.lines[0] == tunnel::protocol::fail(id, "data-connect-failed"));
  CHECK(h.failures.at(0) == FailReason::data_connect_failed);
}

TEST_CASE("a target that never answers fails as timeout when the dial timeout passes") {
  Harness h(0);
  ConnId id = ConnId::random();
  auto slow = h.serve_with_slow_target(id);
  h.manual.advance(5s);
  h.manual.settle();
  REQUIRE(h.control.lines.size() == 1);
  CHECK(h.control.lines[0] == tunnel::protocol::fail(id, "timeout"));
  CHECK(h.table.size() == 0);
}

TEST_CASE("CLOSE while dialing ends the link and closes its data connection unused") {
  Harness h(0);
  ConnId id = ConnId::random();
  auto slow = h.serve_with_slow_target(id);
  Fd& data = slow.data;
  h.table.on_close(id);
  CHECK(h.table.size() == 0);
  std::string got;
  REQUIRE(h.manual.pump_until([&] { return !read_available(data.get(), got); }));
  CHECK(got.empty());
  CHECK(h.control.lines.empty());
}

TEST_CASE(
    "the server closing B while the target is slow: B is dialed again once the target answers") {
  Harness h(0);
  // The target's accept queue is full, so the link's connect to it stalls until room is made.
  ConnId id = ConnId::random();
  auto slow = h.serve_with_slow_target(id);
  std::vector<Fd>& fillers = slow.fillers;
  slow.data.reset();  // the server's handshake timeout
  REQUIRE(h.manual.pump_until([&] { return h.table.state_of(id) == LinkState::dialing_target; }));
  // Make room: the link's SYN is retransmitted by the kernel and completes.
  while (Fd queued = h.target.accept_one()) {
  }
  fillers.clear();
  Fd target = h.accept_from(h.target);  // may take the kernel's SYN retransmission (~1 s)
  Fd data = h.accept_from(h.server);
  CHECK(h.first_line(data) == tunnel::protocol::data_hello(id));
  CHECK(h.table.state_of(id) == LinkState::relaying);
  REQUIRE(write_all(target.get(), "banner"));
  std::string got;
  REQUIRE(h.manual.pump_until([&] {
    read_available(data.get(), got);
    return got == "banner";
  }));
  CHECK(h.control.lines.empty());
}

TEST_CASE("NEW for an id already relaying ends the stale relay and serves the id afresh") {
  Harness h;
  ConnId id = ConnId::random();
  h.table.on_new(id, 0);
  Fd stale_data = h.accept_from(h.server);
  Fd stale_target = h.accept_from(h.target);
  REQUIRE(h.first_line(stale_data) == tunnel::protocol::data_hello(id));
  // The server refused that DATA (its session was lost meanwhile): the relay half-closes the
  // target, which keeps its own side open.
  stale_data.reset();
  std::string ignored;
  REQUIRE(h.manual.pump_until([&] { return !read_available(stale_target.get(), ignored); }));
  CHECK(h.table.state_of(id) == LinkState::relaying);

  h.table.on_new(id, 0);  // announced again to the new session
  CHECK(h.table.state_of(id) == LinkState::dialing_both);
  Fd data = h.accept_from(h.server);
  Fd target = h.accept_from(h.target);
  CHECK(h.first_line(data) == tunnel::protocol::data_hello(id));
  REQUIRE(h.manual.pump_until([&] { return h.table.state_of(id) == LinkState::relaying; }));
  REQUIRE(h.manual.pump_until([&] { return h.relays_ended.size() == 1; }));
  CHECK(h.relays_ended[0].reset);  // the stale relay was reset, not left to linger
  REQUIRE(write_all(data.get(), "ping"));
  std::string got;
  REQUIRE(h.manual.pump_until([&] {
    read_available(target.get(), got);
    return got == "ping";
  }));
}

TEST_CASE("drain ends links still dialing and reports drained when the last relay ends") {
  Harness h;
  ConnId relayed = ConnId::random();
  h.table.on_new(relayed, 0);
  Fd data = h.accept_from(h.server);
  Fd target = h.accept_from(h.target);
  REQUIRE(h.manual.pump_until([&] { return h.table.state_of(relayed) == LinkState::relaying; }));
  h.table.on_new(ConnId::random(), 0);  // still dialing when the drain starts
  bool drained = false;
  h.table.drain([&] { drained = true; });
  CHECK(h.table.size() == 1);
  CHECK_FALSE(drained);
  data.reset();
  target.reset();
  REQUIRE(h.manual.pump_until([&] { return drained; }));
}

// Review finding: a NEW <id> again while the earlier attempt's dial result waited in the same
// batch: the retired connector still reported, to the new link with the same id (FAIL for a
// connection the target was about to serve).
TEST_CASE(
    "NEW for an id again: the earlier attempt's pending dial result never reaches the new one") {
  Harness h;
  auto [target_socket, target_address] = refusing_address();  // bound, not listening: refused
  auto targets = one_service(target_address);
  auto table_ptr = h.table_with(h.server.addresses(), targets);
  LinkTable& table = *table_ptr;
  ConnId id = ConnId::random();
  table.on_new(id, 0);  // its target connect is refused by the kernel at once, not yet handled
  REQUIRE(::listen(target_socket.get(), 16) == 0);  // the target is up for the next attempt
  table.on_new(id, 0);                              // announced again in the same batch
  REQUIRE(h.manual.pump_until([&] { return table.state_of(id) == LinkState::relaying; }));
  CHECK(h.control.lines.empty());  // no FAIL from the earlier attempt's refusal
  CHECK(h.failures.empty());
}

// --- the services extension: one target per service ---

TEST_CASE("each link dials the target of its own service, and is counted under it") {
  Harness h;
  LoopbackListener web_target;
  LoopbackListener ssh_target;
  ServiceCatalog services({{"web", web_target.addresses()}, {"ssh", ssh_target.addresses()}});
  auto table_ptr = h.table_with(h.server.addresses(), services);
  LinkTable& table = *table_ptr;
  ConnId to_ssh = ConnId::random();
  ConnId to_web = ConnId::random();
  table.on_new(to_ssh, 1);
  Fd ssh_data = h.accept_from(h.server);
  Fd ssh = h.accept_from(ssh_target);
  REQUIRE(h.manual.pump_until([&] { return table.state_of(to_ssh) == LinkState::relaying; }));
  table.on_new(to_web, 0);
  Fd web_data = h.accept_from(h.server);
  Fd web = h.accept_from(web_target);
  REQUIRE(h.manual.pump_until([&] { return table.state_of(to_web) == LinkState::relaying; }));
  CHECK(h.first_line(ssh_data) == tunnel::protocol::data_hello(to_ssh));
  CHECK(h.first_line(web_data) == tunnel::protocol::data_hello(to_web));
  CHECK_FALSE(static_cast<bool>(h.target.accept_one()));  // the harness's own target: unused
  CHECK(table.relaying(0) == 1);
  CHECK(table.relaying(1) == 1);
  CHECK(h.relaying_services == std::vector<size_t>{1, 0});

  // Bytes from each target come out of its own data connection.
  REQUIRE(write_all(ssh.get(), "SSH-2.0-x\r\n"));
  REQUIRE(write_all(web.get(), "HTTP/1.1 200 OK\r\n"));
  std::string at_ssh_data, at_web_data;  // after the DATA lines read above
  REQUIRE(h.manual.pump_until([&] {
    read_available(ssh_data.get(), at_ssh_data);
    read_available(web_data.get(), at_web_data);
    return at_ssh_data.ends_with("\r\n") && at_web_data.ends_with("\r\n");
  }));
  CHECK(at_ssh_data == "SSH-2.0-x\r\n");
  CHECK(at_web_data == "HTTP/1.1 200 OK\r\n");

  ssh_data.reset();
  ssh.reset();
  REQUIRE(h.manual.pump_until([&] { return h.relays_ended.size() == 1; }));
  CHECK(h.ended_services == std::vector<std::optional<size_t>>{1});
  CHECK(h.relays_ended[0].bytes_to_visitor == 11);
  CHECK(table.relaying(1) == 0);
  CHECK(table.relaying(0) == 1);
}

TEST_CASE(
    "NEW for a service the client does not serve: FAIL <id> unknown-service, nothing dialed") {
  Harness h;
  ConnId id = ConnId::random();
  h.table.refuse_unknown(id, "mail");
  CHECK(h.control.lines == std::vector<std::string>{tunnel::protocol::fail(id, "unknown-service")});
  CHECK(h.failures == std::vector<FailReason>{FailReason::unknown_service});
  CHECK(h.failed_services == std::vector<std::optional<size_t>>{std::nullopt});
  CHECK(h.table.size() == 0);
  h.manual.settle();
  CHECK_FALSE(static_cast<bool>(h.server.accept_one()));
  CHECK_FALSE(static_cast<bool>(h.target.accept_one()));
}

TEST_CASE("a failure is reported under the service of its link") {
  Harness h;
  auto [closed_port, refusing] = refusing_address();
  ServiceCatalog services({{"web", h.target.addresses()}, {"ssh", refusing}});
  auto table_ptr = h.table_with(h.server.addresses(), services);
  ConnId id = ConnId::random();
  table_ptr->on_new(id, 1);
  REQUIRE(h.manual.pump_until([&] { return !h.control.lines.empty(); }));
  CHECK(h.control.lines[0] == tunnel::protocol::fail(id, "connection-refused"));
  CHECK(h.failed_services == std::vector<std::optional<size_t>>{1});
}
