// tls::Stream over real loopback TCP, both ends in this thread: handshakes that succeed (CA, IP
// address, pin, mTLS, resumption) and each refusal with its reason (pin, name, expiry, chain,
// plain text both ways, no client certificate), then the I/O contract: 1 MiB both ways with
// partial writes, half-close, reset versus eof versus truncation, pending(), the exporter; bulk
// mode: records gathered into one send and flushed later, reads of every record one recv brought.
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tls_test_support.hpp"
#include "tunnel/socket.hpp"
#include "tunnel/tls.hpp"

using namespace tls_test;
using tunnel::tls::ClientContext;
using tunnel::tls::ClientTlsOptions;
using tunnel::tls::Failure;
using tunnel::tls::IoStatus;
using tunnel::tls::pin_of_cert_file;
using tunnel::tls::Progress;
using tunnel::tls::ServerContext;
using tunnel::tls::Stream;

namespace unit_tests {
int sigpipe_count();  // main.cpp
}

namespace {

// A CA, a server certificate it signed (localhost, 127.0.0.1, ::1) and a client certificate.
struct Pki {
  TempDir dir;
  Identity ca = make_ca(dir, "ca");
  Identity server = make_identity(dir, "server", {}, &ca);
  Identity client = make_identity(dir, "client", client_spec(), &ca);

  static CertSpec client_spec() {
    CertSpec spec;
    spec.common_name = "alice";
    spec.dns.clear();
    spec.ips.clear();
    spec.client = true;
    return spec;
  }
  ClientContext client_by_ca(const std::string& name = "localhost") const {
    return ClientContext::load({.ca_file = ca.cert, .server_name = name});
  }
  ServerContext server_context(bool mutual = false) const {
    return ServerContext::load(server.cert, server.key, mutual ? ca.cert : "");
  }
};

// Handshakes a new pair and requires both ends done.
Pair connected(ClientContext& client, ServerContext& server) {
  Pair pair = make_pair(client, server);
  auto outcome = handshake_both(*pair.client, *pair.server);
  INFO("client: " << outcome.client.detail << " / server: " << outcome.server.detail);
  REQUIRE(outcome.both_done());
  return pair;
}

// The client's and server's failures, when the client is refused.
struct Refusal {
  Failure failure;
  std::string detail;
  Failure server_failure;
  std::string server_detail;
};

Refusal client_refuses(ClientContext& client, ServerContext& server) {
  Pair pair = make_pair(client, server);
  auto outcome = handshake_both(*pair.client, *pair.server);
  REQUIRE(outcome.client.progress == Progress::failed);
  REQUIRE(outcome.server.progress == Progress::failed);
  CHECK(pair.client->failure_detail() == outcome.client.detail);
  return {outcome.client.failure, outcome.client.detail, outcome.server.failure,
          outcome.server.detail};
}

}  // namespace

TEST_CASE("tls stream: a CA-verified handshake by name and by IP address, then bytes both ways") {
  Pki pki;
  auto server = pki.server_context();
  for (std::string name : {"localhost", "127.0.0.1", "[::1]"}) {
    INFO(name);
    auto client = pki.client_by_ca(name);
    Pair pair = connected(client, server);
    CHECK_FALSE(pair.client->resumed());
    CHECK(pair.client->description().starts_with("TLSv1.3 TLS_"));
    CHECK(pair.client->peer_pin() == pin_of_cert_file(pki.server.cert));
    CHECK(pair.client->peer_common_name() == "localhost");
    CHECK_FALSE(pair.server->peer_pin());  // no client certificate asked for
    write_all(*pair.client, "ping");
    CHECK(read_some(*pair.server, 4).bytes == "ping");
    write_all(*pair.server, "pong");
    CHECK(read_some(*pair.client, 4).bytes == "pong");
  }
}

TEST_CASE("tls stream: a pinned key is accepted, whatever the chain and the dates") {
  Pki pki;
  CertSpec old;
  old.valid_from_s = -3 * 86400;
  old.valid_to_s = -86400;
  auto expired = make_identity(pki.dir, "expired", old);  // self-signed, expired
  auto server = ServerContext::load(expired.cert, expired.key);
  auto client = ClientContext::load({.pin = pin_of_cert_file(expired.cert), .server_name = "x"});
  Pair pair = connected(client, server);
  CHECK(pair.client->peer_pin() == pin_of_cert_file(expired.cert));
}

TEST_CASE("tls stream: a pin mismatch is refused with the server's actual key") {
  Pki pki;
  auto server = pki.server_context();
  auto other = make_identity(pki.dir, "other", {});
  auto client = ClientContext::load({.pin = pin_of_cert_file(other.cert), .server_name = "x"});
  auto refusal = client_refuses(client, server);
  CHECK(refusal.failure == Failure::pin_mismatch);
  CHECK(refusal.detail ==
        "pin mismatch: server key " + tunnel::tls::format_pin(pin_of_cert_file(pki.server.cert)));
  CHECK(refusal.server_failure == Failure::refused_by_peer);
  CHECK_THAT(refusal.server_detail, Catch::Contains("the client refused our certificate"));
}

TEST_CASE("tls stream: a certificate for another name or address is refused") {
  Pki pki;
  auto server = pki.server_context();
  auto by_name = pki.client_by_ca("tunnel.example.org");
  auto refusal = client_refuses(by_name, server);
  CHECK(refusal.failure == Failure::name_mismatch);
  CHECK_THAT(refusal.detail, Catch::Contains("server certificate verify failed") &&
                                 Catch::Contains("hostname mismatch") &&
                                 Catch::Contains("tunnel.example.org") &&
                                 Catch::Contains("server key sha256:"));
  auto by_address = pki.client_by_ca("127.0.0.2");
  refusal = client_refuses(by_address, server);
  CHECK(refusal.failure == Failure::name_mismatch);
  CHECK_THAT(refusal.detail, Catch::Contains("IP address mismatch"));
}

TEST_CASE("tls stream: an expired certificate is refused as expired") {
  Pki pki;
  CertSpec old;
  old.valid_from_s = -3 * 86400;
  old.valid_to_s = -86400;
  auto expired = make_identity(pki.dir, "expired", old, &pki.ca);
  auto server = ServerContext::load(expired.cert, expired.key);
  auto client = pki.client_by_ca();
  auto refusal = client_refuses(client, server);
  CHECK(refusal.failure == Failure::certificate_expired);
  CHECK(refusal.detail == "server certificate verify failed: certificate has expired");
  CHECK_THAT(refusal.server_detail, Catch::Contains("certificate expired"));
}

TEST_CASE("tls stream: a certificate from another CA is refused as untrusted") {
  Pki pki;
  Identity other_ca = make_ca(pki.dir, "other-ca");
  auto stranger = make_identity(pki.dir, "stranger", {}, &other_ca);
  auto server = ServerContext::load(stranger.cert, stranger.key);
  auto client = pki.client_by_ca();
  auto refusal = client_refuses(client, server);
  CHECK(refusal.failure == Failure::certificate_untrusted);
  CHECK_THAT(refusal.detail, Catch::StartsWith("server certificate verify failed: unable to get "
                                               "local issuer certificate"));
  CHECK(refusal.server_failure == Failure::refused_by_peer);
  CHECK(refusal.server_detail == "the client refused our certificate (unknown CA)");
}

TEST_CASE("tls stream: a self-signed server certificate works as its own CA file") {
  Pki pki;
  auto self = make_identity(pki.dir, "self", {});
  auto server = ServerContext::load(self.cert, self.key);
  auto client = ClientContext::load({.ca_file = self.cert, .server_name = "localhost"});
  connected(client, server);
}

TEST_CASE("tls stream: plain text on the server's TLS port is refused as a plaintext hello") {
  Pki pki;
  auto server = pki.server_context();
  for (std::string hello : {"TUNNEL/1 CONTROL\n", "GET / HTTP/1.1\r\n\r\n", "T"}) {
    auto sockets = connect_loopback();
    auto stream = server.new_stream(sockets.server.get());
    REQUIRE(stream->handshake().progress == Progress::want_read);
    REQUIRE(::send(sockets.client.get(), hello.data(), hello.size(), 0) ==
            static_cast<ssize_t>(hello.size()));
    REQUIRE(wait_ready(sockets.server.get(), POLLIN, 2000));
    auto step = stream->handshake();
    REQUIRE(step.progress == Progress::failed);
    CHECK(step.failure == Failure::plaintext_hello);
    CHECK_THAT(step.detail, Catch::StartsWith("plaintext hello on a TLS port"));
    if (hello.starts_with("TUNNEL/"))
      CHECK(step.detail == "plaintext hello on a TLS port (a client without --tls)");
    // Refused before OpenSSL read it: no TLS alert went back, the hello is still unread.
    CHECK_FALSE(wait_ready(sockets.client.get(), POLLIN, 50));
    char unread[64];
    CHECK(::recv(sockets.server.get(), unread, sizeof unread, MSG_DONTWAIT) ==
          static_cast<ssize_t>(hello.size()));
  }
}

TEST_CASE("tls stream: a server that answers in plain text is refused as not speaking TLS") {
  Pki pki;
  auto client = pki.client_by_ca();
  auto sockets = connect_loopback();
  auto stream = client.new_stream(sockets.client.get());
  REQUIRE(stream->handshake().progress == Progress::want_read);  // the ClientHello went out
  // A plain tunnel-server reads a line and refuses it.
  REQUIRE(wait_ready(sockets.server.get(), POLLIN, 2000));
  char hello[4096];
  REQUIRE(::recv(sockets.server.get(), hello, sizeof hello, 0) > 0);
  std::string answer = "ERR bad-request first line is not a hello\n";
  REQUIRE(::send(sockets.server.get(), answer.data(), answer.size(), 0) ==
          static_cast<ssize_t>(answer.size()));
  REQUIRE(wait_ready(sockets.client.get(), POLLIN, 2000));
  auto step = stream->handshake();
  REQUIRE(step.progress == Progress::failed);
  CHECK(step.failure == Failure::not_tls);
  CHECK(step.detail ==
        "server does not speak TLS: it answered \"ERR bad-request first line is not a hello\"");
}

TEST_CASE("tls stream: a server that closes at once is a closed handshake with a hint") {
  Pki pki;
  auto client = pki.client_by_ca();
  auto sockets = connect_loopback();
  auto stream = client.new_stream(sockets.client.get());
  REQUIRE(stream->handshake().progress == Progress::want_read);
  ::shutdown(sockets.server.get(), SHUT_WR);
  REQUIRE(wait_ready(sockets.client.get(), POLLIN, 2000));
  auto step = stream->handshake();
  REQUIRE(step.progress == Progress::failed);
  CHECK(step.failure == Failure::closed);
  CHECK(step.detail ==
        "the server closed the connection during the TLS handshake without answering: does it "
        "speak TLS on this port?");
}

TEST_CASE("tls stream: TLS 1.2 is not spoken") {
  Pki pki;
  auto server = pki.server_context();
  auto client = pki.client_by_ca();
  SSL_CTX_set_min_proto_version(client.native_handle(), TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(client.native_handle(), TLS1_2_VERSION);
  auto refusal = client_refuses(client, server);
  CHECK(refusal.server_failure == Failure::protocol);
  CHECK_THAT(refusal.server_detail, Catch::StartsWith("the client does not speak TLS 1.3"));
  CHECK(refusal.failure == Failure::refused_by_peer);
  CHECK(refusal.detail == "the server refused the connection (protocol version)");
}

TEST_CASE("tls stream: mTLS refuses a client without a certificate, or with a stranger's") {
  Pki pki;
  auto server = pki.server_context(true);

  SECTION("no certificate: the server says so, and the client hears it on its first read") {
    auto client = pki.client_by_ca();
    Pair pair = make_pair(client, server);
    auto outcome = handshake_both(*pair.client, *pair.server);
    // TLS 1.3: the client is done before the server has looked at its (missing) certificate.
    CHECK(outcome.client.progress == Progress::done);
    REQUIRE(outcome.server.progress == Progress::failed);
    CHECK(outcome.server.failure == Failure::no_client_certificate);
    CHECK_THAT(outcome.server.detail, Catch::StartsWith("client sent no certificate"));
    auto read = read_some(*pair.client, 1);
    CHECK(read.last.status == IoStatus::error);
    CHECK(read.last.failure == Failure::no_client_certificate);
    CHECK(read.last.detail ==
          "the server requires a client certificate (--tls-cert and --tls-key)");
  }
  SECTION("a certificate from another CA") {
    Identity other_ca = make_ca(pki.dir, "other-ca");
    auto mallory = make_identity(pki.dir, "mallory", Pki::client_spec(), &other_ca);
    auto client = ClientContext::load({.ca_file = pki.ca.cert,
                                       .cert_file = mallory.cert,
                                       .key_file = mallory.key,
                                       .server_name = "localhost"});
    Pair pair = make_pair(client, server);
    auto outcome = handshake_both(*pair.client, *pair.server);
    REQUIRE(outcome.server.progress == Progress::failed);
    CHECK(outcome.server.failure == Failure::certificate_untrusted);
    CHECK_THAT(outcome.server.detail, Catch::StartsWith("client certificate verify failed"));
    auto read = read_some(*pair.client, 1);
    CHECK(read.last.status == IoStatus::error);
    CHECK(read.last.failure == Failure::refused_by_peer);
    CHECK(read.last.detail == "the server refused our certificate (unknown CA)");
  }
}

TEST_CASE("tls stream: mTLS accepts the right client certificate, and resumes with it") {
  Pki pki;
  auto server = pki.server_context(true);
  auto client = ClientContext::load({.ca_file = pki.ca.cert,
                                     .cert_file = pki.client.cert,
                                     .key_file = pki.client.key,
                                     .server_name = "localhost"});
  Pair first = connected(client, server);
  CHECK(first.server->peer_common_name() == "alice");
  CHECK(first.server->peer_pin() == pin_of_cert_file(pki.client.cert));
  write_all(*first.server, "OK\n");
  CHECK(read_some(*first.client, 3).bytes == "OK\n");
  REQUIRE(client.has_session());

  Pair second = connected(client, server);
  CHECK(second.client->resumed());
  CHECK(second.server->resumed());
  CHECK(second.server->peer_common_name() == "alice");  // the identity travels in the ticket
}

TEST_CASE("tls stream: a data connection resumes the session, and the counts say so") {
  Pki pki;
  auto server = pki.server_context();
  auto client = pki.client_by_ca();

  Pair control = connected(client, server);
  CHECK_FALSE(control.client->resumed());
  // TLS 1.3 tickets come after the handshake: the client has none until it reads.
  CHECK_FALSE(client.has_session());
  write_all(*control.server, "OK\n");
  CHECK(read_some(*control.client, 3).bytes == "OK\n");
  CHECK(client.has_session());

  Pair data = connected(client, server);
  CHECK(data.client->resumed());
  CHECK(data.server->resumed());
  CHECK(data.client->description().ends_with(" resumed"));
  CHECK(data.client->peer_pin() == pin_of_cert_file(pki.server.cert));
  write_all(*data.client, "DATA");
  CHECK(read_some(*data.server, 4).bytes == "DATA");

  CHECK(client.counts().full == 1);
  CHECK(client.counts().resumed == 1);
  CHECK(server.counts().full == 1);
  CHECK(server.counts().resumed == 1);

  // Without a ticket (forgotten, or a client that never read), the handshake is a full one.
  client.forget_session();
  Pair fresh = connected(client, server);
  CHECK_FALSE(fresh.client->resumed());
  CHECK(client.counts().full == 2);
}

TEST_CASE("tls stream: a full handshake brings a ticket, a resumed one none, and it lasts") {
  // The server renews no ticket after a resumption: nothing to make, send, read and copy for each
  // data connection. The client resumes again and again with the ticket it has.
  Pki pki;
  auto server = pki.server_context();
  auto client = pki.client_by_ca();
  auto queued = [](const Stream& stream) {
    int bytes = -1;
    REQUIRE(::ioctl(stream.fd(), FIONREAD, &bytes) == 0);
    return bytes;
  };
  Pair control = connected(client, server);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(queued(*control.client) > 0);  // the ticket, after the handshake
  write_all(*control.server, "OK\n");
  REQUIRE(read_some(*control.client, 3).bytes == "OK\n");
  REQUIRE(client.has_session());
  for (int i = 0; i < 3; ++i) {
    Pair data = connected(client, server);
    CHECK(data.client->resumed());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK(queued(*data.client) == 0);  // no ticket
    write_all(*data.server, "x");
    CHECK(read_some(*data.client, 1).bytes == "x");
  }
  CHECK(client.counts().full == 1);
  CHECK(client.counts().resumed == 3);
}

TEST_CASE("tls stream: a connection ended without close_notify does not spoil the kept ticket") {
  // OpenSSL marks a connection's session not resumable when the connection is freed without
  // having sent close_notify; the ticket the context keeps must not be that very object, or one
  // data connection that ends badly makes every later one do a full handshake (seen with several
  // connections at once: a third of them full).
  Pki pki;
  auto server = pki.server_context();
  auto client = pki.client_by_ca();
  {
    Pair control = connected(client, server);
    write_all(*control.server, "OK\n");
    REQUIRE(read_some(*control.client, 3).bytes == "OK\n");
    REQUIRE(client.has_session());
    // Freed without close_notify: the session it holds, and got its ticket into, is "bad".
  }
  {
    Pair data = connected(client, server);
    CHECK(data.client->resumed());
    write_all(*data.server, "x");
    read_some(*data.client, 1);
    // Ended without close_notify too, after resuming with the kept ticket.
  }
  for (int i = 0; i < 3; ++i) {
    Pair next = connected(client, server);
    INFO("connection " << i << " after two that ended without close_notify");
    CHECK(next.client->resumed());
  }
  CHECK(client.counts().full == 1);
}

TEST_CASE("tls stream: the exporter is the same at both ends and differs between connections") {
  Pki pki;
  auto server = pki.server_context();
  auto client = pki.client_by_ca();
  auto sockets = connect_loopback();
  auto early = client.new_stream(sockets.client.get());
  CHECK_FALSE(early->exporter());  // nothing before the handshake

  Pair first = connected(client, server);
  write_all(*first.server, "x");
  read_some(*first.client, 1);
  Pair second = connected(client, server);  // resumed
  REQUIRE(second.client->resumed());
  auto a_client = first.client->exporter(), a_server = first.server->exporter();
  auto b_client = second.client->exporter(), b_server = second.server->exporter();
  REQUIRE(a_client);
  REQUIRE(b_client);
  CHECK(a_client == a_server);
  CHECK(b_client == b_server);
  CHECK(a_client != b_client);

  // RFC 9266 asks for an empty context; TLS 1.3 makes an absent context the same (RFC 8446 7.5).
  static constexpr char kLabel[] = "EXPORTER-Channel-Binding";
  tunnel::tls::Binding absent{};
  REQUIRE(SSL_export_keying_material(first.client->native_handle(), absent.data(), absent.size(),
                                     kLabel, sizeof kLabel - 1, nullptr, 0, 0) == 1);
  CHECK(absent == *a_client);
}

TEST_CASE("tls stream: 1 MiB each way at once, through partial writes and full sockets") {
  Pki pki;
  auto server = pki.server_context();
  auto client = pki.client_by_ca();
  Pair pair = connected(client, server);
  // Small socket buffers, so that writes stop part-way and wait.
  for (int fd : {pair.client->fd(), pair.server->fd()}) {
    int size = 16 * 1024;
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
  constexpr size_t kMiB = 1024 * 1024;
  struct End {
    Stream& stream;
    std::string out{};
    size_t sent = 0;
    std::string in{};
    size_t partial = 0, waits = 0;
  };
  End ends[2] = {{*pair.client, random_text(kMiB, 1)}, {*pair.server, random_text(kMiB, 2)}};
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while ((ends[0].in.size() < kMiB || ends[1].in.size() < kMiB) &&
         std::chrono::steady_clock::now() < deadline) {
    for (End& end : ends) {
      if (end.sent < end.out.size()) {
        auto result = end.stream.write(std::span<const char>(end.out).subspan(end.sent));
        if (result.status == IoStatus::ok) {
          if (result.bytes < end.out.size() - end.sent) ++end.partial;
          end.sent += result.bytes;
        } else {
          REQUIRE((result.status == IoStatus::want_write || result.status == IoStatus::want_read));
          ++end.waits;
        }
      }
      char buffer[7000];  // not a multiple of anything: records are split across reads
      for (int i = 0; i < 8; ++i) {
        auto result = end.stream.read(buffer);
        if (result.status != IoStatus::ok) {
          REQUIRE(result.status == IoStatus::want_read);
          break;
        }
        end.in.append(buffer, result.bytes);
      }
    }
    pollfd fds[2] = {{pair.client->fd(), POLLIN | POLLOUT, 0},
                     {pair.server->fd(), POLLIN | POLLOUT, 0}};
    ::poll(fds, 2, 10);
  }
  CHECK(ends[1].in.size() == kMiB);
  CHECK(ends[0].in.size() == kMiB);
  CHECK(ends[1].in == ends[0].out);
  CHECK(ends[0].in == ends[1].out);
  CHECK(ends[0].partial > 0);  // partial writes are on
  CHECK(ends[0].waits > 0);    // and the socket did fill up
}

TEST_CASE("tls stream: half-close gives eof on the other end, whose direction keeps working") {
  Pki pki;
  auto server = pki.server_context();
  auto client = pki.client_by_ca();
  Pair pair = connected(client, server);
  write_all(*pair.client, "last words");
  REQUIRE(pair.client->shutdown_write().status == IoStatus::ok);
  CHECK(pair.client->write_shut());
  CHECK(pair.client->shutdown_write().status == IoStatus::ok);  // again: nothing more to do
  CHECK(pair.client->write("more").status == IoStatus::error);

  auto heard = read_some(*pair.server, 100);
  CHECK(heard.bytes == "last words");
  CHECK(heard.last.status == IoStatus::eof);
  CHECK(pair.server->read(std::span<char>()).status == IoStatus::ok);  // empty: nothing asked

  // The server still writes, the client (which sent close_notify) still reads.
  std::string reply = random_text(200 * 1024, 3);
  write_all(*pair.server, reply);
  CHECK(read_some(*pair.client, reply.size()).bytes == reply);
  REQUIRE(pair.server->shutdown_write().status == IoStatus::ok);
  auto end = read_some(*pair.client, 1);
  CHECK(end.bytes.empty());
  CHECK(end.last.status == IoStatus::eof);
}

TEST_CASE("tls stream: a reset is not an eof, nor is a FIN without close_notify; no SIGPIPE") {
  Pki pki;
  auto server = pki.server_context();
  auto client = pki.client_by_ca();
  int sigpipes = unit_tests::sigpipe_count();

  SECTION("reset") {
    Pair pair = connected(client, server);
    tunnel::set_linger_reset(pair.sockets.server.get());
    pair.server.reset();
    pair.sockets.server.reset();
    auto read = read_some(*pair.client, 1);
    CHECK(read.last.status == IoStatus::reset);
    CHECK_THAT(read.last.detail, Catch::Contains("reset"));
    // Writing to the reset peer fails as an error, not a signal.
    auto write = pair.client->write("after the reset");
    CHECK(write.status != IoStatus::ok);
  }
  SECTION("a FIN without close_notify is a truncation") {
    Pair pair = connected(client, server);
    ::shutdown(pair.sockets.server.get(), SHUT_WR);
    auto read = read_some(*pair.client, 1);
    CHECK(read.last.status == IoStatus::error);
    CHECK(read.last.failure == Failure::closed);
    CHECK(read.last.detail == "the server closed the connection without close_notify (truncated)");
  }
  SECTION("writing until the reset peer's RST arrives") {
    Pair pair = connected(client, server);
    tunnel::set_linger_reset(pair.sockets.server.get());
    pair.server.reset();
    pair.sockets.server.reset();
    std::string chunk(64 * 1024, 'x');
    tunnel::tls::IoResult result;
    for (int i = 0; i < 100; ++i) {
      result = pair.client->write(chunk);
      if (result.status != IoStatus::ok && result.status != IoStatus::want_write) break;
      wait_ready(pair.client->fd(), POLLOUT, 10);
    }
    CHECK(result.status == IoStatus::reset);
  }
  CHECK(unit_tests::sigpipe_count() == sigpipes);
}

TEST_CASE("tls stream: decrypted bytes can wait inside the stream with no readable event") {
  Pki pki;
  auto server = pki.server_context();
  auto client = pki.client_by_ca();
  Pair pair = connected(client, server);
  std::string record(16000, 'r');  // one TLS record
  write_all(*pair.server, record);
  REQUIRE(wait_ready(pair.client->fd(), POLLIN, 2000));
  char small[100];
  tunnel::tls::IoResult first;
  do {
    first = pair.client->read(small);  // the ticket first, then the record
  } while (first.status == IoStatus::want_read && wait_ready(pair.client->fd(), POLLIN, 1000));
  REQUIRE(first.status == IoStatus::ok);
  CHECK(first.bytes == sizeof small);
  CHECK(pair.client->pending() == record.size() - sizeof small);
  CHECK_FALSE(wait_ready(pair.client->fd(), POLLIN, 0));  // the poller would wait forever
  auto rest = read_some(*pair.client, record.size() - sizeof small);
  CHECK(rest.bytes.size() == record.size() - sizeof small);
  CHECK(pair.client->pending() == 0);
}

TEST_CASE("tls stream: I/O before the handshake, or after a failure, is an error") {
  Pki pki;
  auto server = pki.server_context();
  auto sockets = connect_loopback();
  auto stream = server.new_stream(sockets.server.get());
  char buffer[10];
  CHECK(stream->read(buffer).status == IoStatus::error);
  CHECK(stream->write("x").status == IoStatus::error);
  CHECK(stream->shutdown_write().status == IoStatus::error);
  std::string plain = "TUNNEL/1 CONTROL\n";
  REQUIRE(::send(sockets.client.get(), plain.data(), plain.size(), 0) > 0);
  REQUIRE(wait_ready(sockets.server.get(), POLLIN, 2000));
  REQUIRE(stream->handshake().progress == Progress::failed);
  auto read = stream->read(buffer);
  CHECK(read.status == IoStatus::error);
  CHECK(read.failure == Failure::plaintext_hello);
  CHECK(stream->handshake().failure == Failure::plaintext_hello);  // final
}

TEST_CASE("tls stream: no descriptor is left open by streams and contexts") {
  size_t before = open_fds();
  {
    Pki pki;
    auto server = pki.server_context(true);
    auto client = ClientContext::load({.ca_file = pki.ca.cert,
                                       .cert_file = pki.client.cert,
                                       .key_file = pki.client.key,
                                       .server_name = "localhost"});
    auto bad = pki.client_by_ca("wrong.example");
    for (int i = 0; i < 5; ++i) {
      Pair good = connected(client, server);
      write_all(*good.client, "x");
      read_some(*good.server, 1);
      Pair refused = make_pair(bad, server);
      handshake_both(*refused.client, *refused.server);
    }
    CHECK_THROWS(ServerContext::load(pki.dir.file("missing"), pki.server.key));
  }
  CHECK(open_fds() == before);
}

TEST_CASE(
    "tls stream: bulk writes keep what the socket refuses, sent in order before close_notify") {
  Pki pki;
  auto server = pki.server_context();
  auto client = pki.client_by_ca();
  Pair pair = connected(client, server);
  pair.server->enable_bulk();
  // The socket takes a few KiB at a time: a write of 64 KiB (four records, one send) stops
  // part-way, and the rest of its records stays in the stream.
  int small = 4 * 1024;
  ::setsockopt(pair.server->fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  ::setsockopt(pair.client->fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  const std::string out = random_text(1024 * 1024 + 5, 31);
  std::string in;
  size_t sent = 0, unsent_seen = 0, refused_while_unsent = 0;
  bool closed = false;
  tunnel::tls::IoResult last;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (last.status != IoStatus::eof && std::chrono::steady_clock::now() < deadline) {
    if (sent < out.size()) {
      size_t unsent_before = pair.server->unsent();
      auto result = pair.server->write(
          std::span<const char>(out).subspan(sent, std::min<size_t>(64 * 1024, out.size() - sent)));
      if (result.status == IoStatus::ok) {
        // Taken only once the earlier records went (the write sends them first).
        CHECK(pair.server->unsent() <= 64 * 1024 + 4 * 22 + 1024);
        sent += result.bytes;
        if (pair.server->unsent() > 0) ++unsent_seen;
      } else {
        REQUIRE(result.status == IoStatus::want_write);
        if (unsent_before > 0) ++refused_while_unsent;
      }
    } else if (!closed) {
      auto result = pair.server->shutdown_write();  // flushes the unsent records first
      if (result.status == IoStatus::ok) {
        CHECK(pair.server->unsent() == 0);
        closed = true;
      } else {
        REQUIRE(result.status == IoStatus::want_write);
      }
    }
    char bite[3000];
    last = pair.client->read(bite);
    if (last.status == IoStatus::ok) {
      in.append(bite, last.bytes);
    } else if (last.status != IoStatus::eof) {
      REQUIRE(last.status == IoStatus::want_read);
    }
    pollfd fds[2] = {{pair.client->fd(), POLLIN, 0}, {pair.server->fd(), POLLOUT, 0}};
    ::poll(fds, 2, 5);
  }
  CHECK(last.status == IoStatus::eof);
  CHECK(in.size() == out.size());
  CHECK(in == out);
  CHECK(unsent_seen > 0);
  CHECK(refused_while_unsent > 0);
  CHECK(pair.server->release_buffers());
}

TEST_CASE("tls stream: bulk reads take every record one recv brought, then the end after them") {
  Pki pki;
  auto server = pki.server_context();
  auto client = pki.client_by_ca();
  Pair pair = connected(client, server);
  pair.client->enable_bulk();
  // Four full records (the first makes the client read ahead by four), some small ones, then
  // close_notify, all in the client's socket before it reads.
  std::string full = random_text(4 * 16384, 32);
  write_all(*pair.server, full);
  std::string tail;
  for (int i = 0; i < 5; ++i) {
    std::string piece = random_text(100 + i, 33 + i);
    write_all(*pair.server, piece);
    tail += piece;
  }
  REQUIRE(pair.server->shutdown_write().status == IoStatus::ok);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));

  std::vector<char> buffer(256 * 1024);
  std::string in;
  tunnel::tls::IoResult first;
  do {  // the session ticket may come alone first
    first = pair.client->read(buffer);
  } while (first.status == IoStatus::want_read && wait_ready(pair.client->fd(), POLLIN, 1000));
  REQUIRE(first.status == IoStatus::ok);
  in.append(buffer.data(), first.bytes);
  // A buffer of one record until a full one came (with what followed it in the same recv)...
  CHECK(first.bytes >= 16384);
  CHECK(first.bytes < full.size());
  auto second = pair.client->read(buffer);
  REQUIRE(second.status == IoStatus::ok);
  in.append(buffer.data(), second.bytes);
  // ...then one recv took the rest and close_notify, and one read() returns every byte of it.
  CHECK(second.bytes == full.size() + tail.size() - first.bytes);
  CHECK(in == full + tail);
  int queued = -1;
  REQUIRE(::ioctl(pair.client->fd(), FIONREAD, &queued) == 0);
  CHECK(queued == 0);                        // the socket holds nothing more: only the FIN
  CHECK(pair.client->has_buffered_input());  // but the stream holds the end
  auto end = pair.client->read(buffer);
  CHECK(end.status == IoStatus::eof);
  CHECK(pair.client->release_buffers());
}
