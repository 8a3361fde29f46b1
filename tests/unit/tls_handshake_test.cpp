// tls::Handshake on one EventLoop: both ends of a real connection complete and hand over their
// socket and stream; a plaintext hello, a plain server and a stalled peer each end in one
// on_failed with the reason; cancel() is silent; the owner can retire it from its callbacks.
#include <poll.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "tls_test_support.hpp"
#include "tunnel/event_loop.hpp"
#include "tunnel/tls.hpp"

using namespace std::chrono_literals;
using namespace tls_test;
using tunnel::EventLoop;
using tunnel::Fd;
using tunnel::tls::ClientContext;
using tunnel::tls::Failure;
using tunnel::tls::Handshake;
using tunnel::tls::IoStatus;
using tunnel::tls::Progress;
using tunnel::tls::ServerContext;
using tunnel::tls::Stream;

namespace {

// What one Handshake reported.
struct Report {
  int done = 0;
  int failed = 0;
  Fd fd;
  std::unique_ptr<Stream> stream;
  Failure failure = Failure::protocol;
  std::string detail;
};

// A Handshake whose callbacks fill `report`; the report must outlive it.
std::unique_ptr<Handshake> start(EventLoop& loop, Fd fd, std::unique_ptr<Stream> stream,
                                 Report& report, tunnel::Duration timeout = 5s) {
  return std::make_unique<Handshake>(
      loop, std::move(fd), std::move(stream), timeout,
      [&report](Fd socket, std::unique_ptr<Stream> established) {
        ++report.done;
        report.fd = std::move(socket);
        report.stream = std::move(established);
      },
      [&report](Fd socket, Failure failure, std::string_view detail) {
        ++report.failed;
        report.fd = std::move(socket);
        report.failure = failure;
        report.detail = detail;
      });
}

template <typename Condition>
bool run_until(EventLoop& loop, Condition condition, std::chrono::milliseconds limit = 5s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    loop.run_once(10);
  }
  return true;
}

struct Pki {
  TempDir dir;
  Identity server = make_identity(dir, "server", {});
  ServerContext server_context = ServerContext::load(server.cert, server.key);
  ClientContext client_context =
      ClientContext::load({.ca_file = server.cert, .server_name = "localhost"});
};

}  // namespace

TEST_CASE("tls handshake: both ends complete on one loop and hand over socket and stream") {
  Pki pki;
  EventLoop loop;
  size_t before = open_fds();
  {
    auto sockets = connect_loopback();
    int client_fd = sockets.client.get(), server_fd = sockets.server.get();
    Report client, server;
    auto client_stream = pki.client_context.new_stream(client_fd);
    auto server_stream = pki.server_context.new_stream(server_fd);
    auto c = start(loop, std::move(sockets.client), std::move(client_stream), client);
    auto s = start(loop, std::move(sockets.server), std::move(server_stream), server);
    CHECK(client.done + server.done == 0);  // never from the constructor
    REQUIRE(run_until(loop, [&] { return client.done + client.failed > 0 && server.done > 0; }));
    INFO(client.detail);
    REQUIRE(client.done == 1);
    CHECK(client.fd.get() == client_fd);
    CHECK(server.fd.get() == server_fd);
    CHECK(c->finished());
    REQUIRE(client.stream->established());
    REQUIRE(server.stream->established());
    write_all(*server.stream, "OK\n");
    CHECK(read_some(*client.stream, 3).bytes == "OK\n");
    loop.run_once(0);
    CHECK(client.done == 1);
    CHECK(server.done == 1);
    CHECK(client.failed + server.failed == 0);
  }
  CHECK(open_fds() == before);
}

TEST_CASE("tls handshake: a plaintext hello fails once, with the socket handed back") {
  Pki pki;
  EventLoop loop;
  auto sockets = connect_loopback();
  Report server;
  auto s = start(loop, std::move(sockets.server),
                 pki.server_context.new_stream(sockets.server.get()), server);
  std::string hello = "TUNNEL/1 CONTROL\n";
  REQUIRE(::send(sockets.client.get(), hello.data(), hello.size(), 0) > 0);
  REQUIRE(run_until(loop, [&] { return server.failed > 0; }));
  CHECK(server.failure == Failure::plaintext_hello);
  CHECK(server.detail == "plaintext hello on a TLS port (a client without --tls)");
  // The owner may answer in plain text before closing.
  REQUIRE(server.fd);
  std::string answer = "ERR tls-required\n";
  CHECK(::send(server.fd.get(), answer.data(), answer.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(answer.size()));
  REQUIRE(wait_ready(sockets.client.get(), POLLIN, 2000));
  char heard[64];
  auto n = ::recv(sockets.client.get(), heard, sizeof heard, 0);
  CHECK(std::string(heard, n > 0 ? static_cast<size_t>(n) : 0) == answer);  // and nothing else
  loop.run_once(20);
  CHECK(server.failed == 1);
  CHECK(server.done == 0);
}

TEST_CASE("tls handshake: the client side reports a plain server") {
  Pki pki;
  EventLoop loop;
  auto sockets = connect_loopback();
  Report client;
  auto c = start(loop, std::move(sockets.client),
                 pki.client_context.new_stream(sockets.client.get()), client);
  REQUIRE(run_until(loop, [&] { return wait_ready(sockets.server.get(), POLLIN, 0); }));
  char hello[4096];
  REQUIRE(::recv(sockets.server.get(), hello, sizeof hello, 0) > 0);
  std::string answer = "ERR bad-request\n";
  REQUIRE(::send(sockets.server.get(), answer.data(), answer.size(), 0) > 0);
  REQUIRE(run_until(loop, [&] { return client.failed > 0; }));
  CHECK(client.failure == Failure::not_tls);
  CHECK(client.detail == "server does not speak TLS: it answered \"ERR bad-request\"");
}

TEST_CASE("tls handshake: a stalled peer times out once, and costs only its own timer") {
  Pki pki;
  EventLoop loop;
  loop.use_manual_clock();

  SECTION("a client that sends nothing") {
    auto sockets = connect_loopback();
    Report server;
    auto s = start(loop, std::move(sockets.server),
                   pki.server_context.new_stream(sockets.server.get()), server, 5s);
    for (int i = 0; i < 5; ++i) loop.run_once(5);
    CHECK(server.failed == 0);
    loop.advance(4999ms);
    CHECK(server.failed == 0);
    loop.advance(1ms);
    REQUIRE(server.failed == 1);
    CHECK(server.failure == Failure::timeout);
    CHECK(server.detail == "TLS handshake timed out after 5s (the client sent nothing)");
    loop.advance(10s);
    loop.run_once(5);
    CHECK(server.failed == 1);
  }
  SECTION("a client that stops after its ClientHello, next to one that completes") {
    auto stalled = connect_loopback();
    auto stalled_client = pki.client_context.new_stream(stalled.client.get());
    REQUIRE(stalled_client->handshake().progress == Progress::want_read);  // hello sent, then mute
    Report stalled_server;
    auto s1 = start(loop, std::move(stalled.server),
                    pki.server_context.new_stream(stalled.server.get()), stalled_server, 5s);

    auto good = connect_loopback();
    Report good_client, good_server;
    auto c2 = start(loop, std::move(good.client), pki.client_context.new_stream(good.client.get()),
                    good_client, 5s);
    auto s2 = start(loop, std::move(good.server), pki.server_context.new_stream(good.server.get()),
                    good_server, 5s);
    REQUIRE(run_until(loop, [&] { return good_client.done && good_server.done; }));
    CHECK(stalled_server.failed == 0);
    loop.advance(5s);
    REQUIRE(stalled_server.failed == 1);
    CHECK(stalled_server.failure == Failure::timeout);
    CHECK(stalled_server.detail ==
          "TLS handshake timed out after 5s (the client stalled mid-handshake)");
    CHECK(good_client.failed + good_server.failed == 0);
  }
  SECTION("a server that never answers, from the client's side") {
    auto sockets = connect_loopback();
    Report client;
    auto c = start(loop, std::move(sockets.client),
                   pki.client_context.new_stream(sockets.client.get()), client, 2s);
    for (int i = 0; i < 5; ++i) loop.run_once(5);
    loop.advance(2s);
    REQUIRE(client.failed == 1);
    CHECK(client.detail ==
          "TLS handshake timed out after 2s (the server sent nothing back: does it speak TLS on "
          "this port?)");
  }
}

TEST_CASE("tls handshake: cancel() closes the socket and never calls back") {
  Pki pki;
  EventLoop loop;
  loop.use_manual_clock();
  auto sockets = connect_loopback();
  Report server;
  auto s = start(loop, std::move(sockets.server),
                 pki.server_context.new_stream(sockets.server.get()), server, 1s);
  std::string hello = "TUNNEL/1 CONTROL\n";
  REQUIRE(::send(sockets.client.get(), hello.data(), hello.size(), 0) > 0);
  s->cancel();
  CHECK(s->finished());
  loop.run_once(20);
  loop.advance(2s);
  CHECK(server.done + server.failed == 0);
  // The server's end is closed: the client sees the end of the stream (or a reset).
  REQUIRE(wait_ready(sockets.client.get(), POLLIN, 2000));
  char byte;
  CHECK(::recv(sockets.client.get(), &byte, 1, 0) <= 0);
}

TEST_CASE("tls handshake: the owner may retire it from inside its callbacks") {
  Pki pki;
  EventLoop loop;
  size_t before = open_fds();
  {
    auto sockets = connect_loopback();
    std::unique_ptr<Handshake> client, server;
    int finished = 0;
    std::unique_ptr<Stream> kept;
    auto on_done = [&](std::unique_ptr<Handshake>& self) {
      return [&](Fd, std::unique_ptr<Stream> stream) {
        ++finished;
        if (!kept) kept = std::move(stream);
        self->cancel();  // harmless after the end
        loop.destroy_later(std::move(self));
      };
    };
    auto on_failed = [&](Fd, Failure, std::string_view detail) { FAIL(detail); };
    client = std::make_unique<Handshake>(loop, std::move(sockets.client),
                                         pki.client_context.new_stream(sockets.client.get()), 5s,
                                         on_done(client), on_failed);
    server = std::make_unique<Handshake>(loop, std::move(sockets.server),
                                         pki.server_context.new_stream(sockets.server.get()), 5s,
                                         on_done(server), on_failed);
    REQUIRE(run_until(loop, [&] { return finished == 2; }));
    loop.run_once(0);
    CHECK_FALSE(client);
    CHECK_FALSE(server);
    kept.reset();
  }
  CHECK(open_fds() == before);
}
