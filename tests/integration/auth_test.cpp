// The `auth` extension (docs/PROTOCOL.md, "Authentication") between the real tunnel-server and
// tunnel-client, and against peers the test speaks itself with the token (tests/support/auth_peer):
// who requires what, a fake server, replayed and forged proofs on control and data connections,
// malformed and silent auth lines, a flood of hostile connections beside real traffic, and the
// token file (mode, $CREDENTIALS_DIRECTORY).
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <cctype>
#include <functional>
#include <mutex>
#include <regex>
#include <thread>

#include "support/auth_peer.hpp"
#include "support/daemons.hpp"
#include "support/echo_tunnel.hpp"
#include "support/fake_control.hpp"
#include "support/fd_count.hpp"
#include "support/payload.hpp"
#include "support/report.hpp"
#include "support/scripted_target.hpp"
#include "support/socket_io.hpp"
#include "tunnel/crypto.hpp"

using namespace tunnel::test;
using namespace std::chrono_literals;
namespace auth = tunnel::auth;
namespace crypto = tunnel::crypto;

namespace {

const std::string kControlFailures = "tunnel_auth_failures_total{stage=\"control\"}";
const std::string kDataFailures = "tunnel_auth_failures_total{stage=\"data\"}";
const std::regex kErrAuth("ERR auth( [ -~]*)?");
const std::regex kChallenge("AUTH-CHALLENGE [0-9a-f]{64}");
const std::regex kHex64("[0-9a-f]{64}");
// The log lines about refusals, where no proof may ever appear.
const Match kAuthEvents = Match::regex("event=(auth-refused|control-refused|auth-failed)");

// A server with a token and a metrics endpoint, and the port of that endpoint.
struct AuthServer {
  AuthServer(const std::string& token_file, std::vector<std::string> extra = {})
      : server(with(token_file, std::move(extra))),
        metrics(listening_port(server.process(), "metrics")) {}

  static std::vector<std::string> with(const std::string& token_file,
                                       std::vector<std::string> extra) {
    extra.insert(extra.end(), {"--token-file", token_file, "--metrics-listen", "127.0.0.1:0"});
    return extra;
  }
  double control_failures() const { return metric(metrics, kControlFailures); }
  double data_failures() const { return metric(metrics, kDataFailures); }
  // Waits until the counter `series` reads exactly `value` (counters are bumped on the loop, maybe
  // a moment after the peer saw the refusal).
  void wait_counter(const std::string& series, double value, Millis timeout = 3s) const {
    double last = -1;
    const bool reached = poll_until(
        [&] {
          last = metric(metrics, series);
          return last == value;
        },
        timeout);
    INFO(series << " is " << last << ", expected " << value);
    CHECK(reached);
  }

  Server server;
  uint16_t metrics;
};

// The number of lines of `log` matching `match` reaches `n` within `timeout`.
void wait_count(const LineLog& log, const Match& match, size_t n, Millis timeout,
                const std::string& who) {
  wait_until([&] { return log.count(match) >= n; }, timeout,
             who + " to log " + std::to_string(n) + " lines matching " + match.describe() + "\n" +
                 log.tail(15));
}

// No line of `log` holds any of `secrets`.
void check_no_secret(const LineLog& log, const std::vector<std::string>& secrets,
                     const std::string& who) {
  std::string leaks;
  for (const auto& line : log.lines()) {
    for (const auto& secret : secrets) {
      if (line.text.find(secret) != std::string::npos) leaks += "  " + line.text + "\n";
    }
  }
  INFO(who << " logged a token in:\n" << leaks);
  CHECK(leaks.empty());
}

// No line of `log` matching `match` holds 64 hex digits in a row (a proof, a key, a nonce).
void check_no_proof(const LineLog& log, const Match& match, const std::string& who) {
  std::string leaks;
  for (const auto& line : log.lines()) {
    if (match(line.text) && std::regex_search(line.text, kHex64)) leaks += "  " + line.text + "\n";
  }
  INFO(who << " logged 64 hex digits in:\n" << leaks);
  CHECK(leaks.empty());
}

// The next line on `s` is `ERR auth ...`, and then the server closes without another byte.
// Returns that line.
std::string require_err_auth(const Socket& s, const std::string& what, Millis within = 3s) {
  const auto start = Clock::now();
  ReadResult answer = read_line(s, within, 512);
  INFO(what << ": answer " << answer.describe() << " after " << ms_since(start) << " ms");
  CHECK(answer.end == End::complete);
  CHECK(std::regex_match(answer.data, kErrAuth));
  ReadResult rest = read_to_end(s, within);
  INFO(what << ": after the answer " << rest.describe());
  CHECK(closed_without_data(rest));
  return answer.data;
}

// The server closed `s` within `within`, sending nothing or nothing but one `ERR ...` line.
ReadResult require_refused(const Socket& s, const std::string& what, Millis within) {
  const auto start = Clock::now();
  ReadResult r = read_to_end(s, within + 2s);
  const auto ms = ms_since(start);
  INFO(what << ": " << r.describe() << " after " << ms << " ms");
  CHECK((r.end == End::eof || r.end == End::reset));
  CHECK((r.data.empty() || std::regex_match(r.data, std::regex("ERR [ -~]*\n"))));
  CHECK(ms < within.count());
  return r;
}

// A control connection that has sent the auth hello and read its challenge.
Socket challenged(uint16_t port_b, std::string* nonce = nullptr) {
  Socket s = connect_tcp(port_b);
  send_all(s, "TUNNEL/1 CONTROL auth\n");
  ReadResult c = read_line(s, 5s, 512);
  INFO("answer to the auth hello: " << c.describe());
  REQUIRE(c.end == End::complete);
  REQUIRE(std::regex_match(c.data, kChallenge));
  if (nonce != nullptr) *nonce = c.data.substr(15);
  return s;
}

// Connects to B and sends `line` and a newline.
Socket b_line(uint16_t port_b, const std::string& line) {
  Socket s = connect_tcp(port_b);
  send_all(s, line + "\n");
  return s;
}

// `data` carried from `from` to `to`, byte for byte.
void carries(const Socket& from, const Socket& to, const std::string& data,
             const std::string& what) {
  send_all(from, data);
  ReadResult r = read_up_to(to, data.size(), 5s);
  INFO(what << ": " << r.describe());
  CHECK(r.end == End::complete);
  CHECK(r.data == data);
}

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

// 1 ---------------------------------------------------------------------------------------------

TEST_CASE("auth: client and server with the same token serve byte for byte and count no failure") {
  TokenDir dir;
  const std::string token = new_token();
  const std::string file = dir.write("tunnel.token", token);
  EchoTarget echo;
  AuthServer s(file);
  Client client(s.server.port_b(), echo.address(), {"--token-file", file, "--name", "lan-host-1"});
  const std::string online = s.server.wait_for_line("event=client-online", kStartTimeout);
  client.wait_online();
  // The session's opening names the client: on its client-online line, or on a line of its own.
  const auto named = s.server.log().find(Match::regex("event=[a-z-]+ .*=lan-host-1( |$)"));
  INFO("the server's session line: " << online << "\n" << s.server.log().tail(30));
  CHECK(named.has_value());

  echo_round_trip(s.server.port_a(), "hello through an authenticated tunnel\n");
  echo_round_trip(s.server.port_a(), make_payload(1, 300 * 1024));
  // Several at once: each data connection proves itself for its own id.
  std::vector<std::thread> parallel;
  std::vector<std::string> errors(8);
  for (size_t i = 0; i < errors.size(); ++i) {
    parallel.emplace_back([&, i] {
      try {
        echo_round_trip(s.server.port_a(), make_payload(100 + i, 1 + i * 7001));
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : parallel) t.join();
  for (const auto& e : errors) CHECK(e.empty());

  CHECK(s.control_failures() == 0);
  CHECK(s.data_failures() == 0);
  CHECK(metric(s.metrics, "tunnel_clients_online") == 1);
  CHECK_FALSE(s.server.log().find("event=auth-refused").has_value());
  CHECK_FALSE(s.server.log().find("event=b-refused").has_value());
  CHECK_FALSE(client.log().find("event=auth-failed").has_value());
  CHECK_FALSE(client.log().find("event=control-refused").has_value());
  check_no_secret(s.server.log(), {token}, "tunnel-server");
  check_no_secret(client.log(), {token}, "tunnel-client");
}

// 2 ---------------------------------------------------------------------------------------------

TEST_CASE("auth: a client with the wrong token is refused, never online, and no token is logged") {
  TokenDir dir;
  const std::string server_token = new_token();
  const std::string client_token = new_token();
  const std::string server_file = dir.write("server.token", server_token);
  const std::string client_file = dir.write("client.token", client_token);
  EchoTarget echo;
  AuthServer s(server_file, {"--pair-timeout", "1s"});
  Client client(s.server.port_b(), echo.address(),
                {"--token-file", client_file, "--name", "intruder", "--reconnect-max", "300ms"});

  // Refused, and refused again: it retries with backoff.
  const Match refused = Match::regex("event=control-refused .*code=auth");
  wait_count(client.log(), refused, 2, 5s, "tunnel-client");
  const std::string line = client.log().find(refused)->text;
  CHECK(field(line, "retry_in_ms").has_value());
  const std::string logged =
      s.server.wait_for_line(Match::regex("event=auth-refused stage=control "), 2s);
  INFO("the server's refusal: " << logged);
  CHECK(field(logged, "peer").has_value());
  CHECK(field(logged, "reason").has_value());
  CHECK(logged.find("intruder") != std::string::npos);  // the name it claimed
  wait_until([&] { return s.control_failures() >= 2; }, 3s, "two control failures counted");

  // No session: an external connection waits for a client and is closed at its pair timeout.
  const size_t mark = s.server.mark();
  const auto start = Clock::now();
  Socket a = connect_tcp(s.server.port_a());
  send_all(a, "is anybody there?\n");
  ReadResult r = read_to_end(a, 5s);
  const auto ms = ms_since(start);
  INFO("A: " << r.describe() << " after " << ms << " ms");
  CHECK(closed_without_data(r));
  CHECK(ms >= 800);
  s.server.wait_for_line(conn_failed("no-client"), 2s, mark);
  CHECK(echo.accepted() == 0);

  CHECK(metric(s.metrics, "tunnel_clients_online") == 0);
  CHECK(metric(s.metrics, "tunnel_control_sessions_total") == 0);
  CHECK(s.data_failures() == 0);
  CHECK_FALSE(client.log().find("event=online").has_value());
  CHECK_FALSE(s.server.log().find("event=client-online").has_value());
  check_no_secret(s.server.log(), {server_token, client_token}, "tunnel-server");
  check_no_secret(client.log(), {server_token, client_token}, "tunnel-client");
  check_no_proof(s.server.log(), kAuthEvents, "tunnel-server");
  check_no_proof(client.log(), kAuthEvents, "tunnel-client");
}

// 3 ---------------------------------------------------------------------------------------------

TEST_CASE("auth: a hello without auth gets ERR auth from a server with a token, and is counted") {
  TokenDir dir;
  const std::string token = new_token();
  const std::string file = dir.write("tunnel.token", token);
  EchoTarget echo;
  AuthServer s(file);

  Socket plain = b_line(s.server.port_b(), "TUNNEL/1 CONTROL");
  ReadResult answer = read_line(plain, 5s, 512);
  INFO("answer to a hello without auth: " << answer.describe());
  REQUIRE(answer.end == End::complete);
  CHECK(std::regex_match(answer.data, kErrAuth));
  // The text docs/PROTOCOL.md gives ("Who requires what").
  CHECK(answer.data == "ERR auth this server requires a token (tunnel-client --token-file)");
  ReadResult rest = read_to_end(plain, 3s);
  INFO("after the answer: " << rest.describe());
  CHECK(closed_without_data(rest));
  s.wait_counter(kControlFailures, 1);

  // Other features, but not auth: the same.
  Socket other = b_line(s.server.port_b(), "TUNNEL/1 CONTROL tls x-future");
  require_err_auth(other, "a hello with other features");
  s.wait_counter(kControlFailures, 2);
  s.server.wait_for_line(Match::regex("event=auth-refused stage=control "), 2s);

  // The real client without a token: refused in the same way, and it retries.
  Client client(s.server.port_b(), echo.address(), {"--reconnect-max", "300ms"});
  const Match refused = Match::regex("event=control-refused .*code=auth");
  wait_count(client.log(), refused, 2, 5s, "tunnel-client");
  wait_until([&] { return s.control_failures() >= 4; }, 3s, "the client's refusals counted");
  CHECK_FALSE(client.log().find("event=online").has_value());
  CHECK(metric(s.metrics, "tunnel_clients_online") == 0);
  CHECK_FALSE(s.server.log().find("event=client-online").has_value());
}

// 4 ---------------------------------------------------------------------------------------------

TEST_CASE("auth: a client with a token refuses a server without one and never serves") {
  TokenDir dir;
  const std::string token = new_token();
  const std::string file = dir.write("tunnel.token", token);
  EchoTarget echo;
  Server server({"--pair-timeout", "1s"});  // no token

  {
    // What the client meets: OK without auth.
    FakeControl probe(server.port_b(), "TUNNEL/1 CONTROL auth");
    CHECK(probe.answer() == "OK");
    // And a server without a token refuses a data line that carries a proof (it never offered
    // auth), without pairing it: the same id then pairs with the core line.
    Socket a = connect_tcp(server.port_a());
    send_all(a, "early bytes\n");
    const std::string id = probe.wait_new(3s);
    Socket with_proof = b_line(server.port_b(), "TUNNEL/1 DATA " + id + " " + random_hex64());
    ReadResult r = read_to_end(with_proof, 3s);
    INFO("a data line with a proof, to a server without a token: " << r.describe());
    CHECK((r.end == End::eof || r.end == End::reset));
    CHECK(r.data.find("early bytes") == std::string::npos);
    Socket core = b_line(server.port_b(), "TUNNEL/1 DATA " + id);
    CHECK(read_exact(core, 12, 5s) == "early bytes\n");
    carries(core, a, "and back\n", "the core data connection to A");
  }
  // The core data connection was paired once (its line may still be on its way from the server).
  server.wait_for_line("event=paired", 3s);
  server.wait_for_line("event=client-offline", 3s);

  Client client(server.port_b(), echo.address(),
                {"--token-file", file, "--name", "careful", "--reconnect-max", "300ms"});
  const Match failed = Match::regex("event=auth-failed .*reason=server-without-auth");
  wait_count(client.log(), failed, 2, 5s, "tunnel-client");

  const auto start = Clock::now();
  Socket a = connect_tcp(server.port_a());
  send_all(a, "is anybody there?\n");
  ReadResult r = read_to_end(a, 5s);
  const auto ms = ms_since(start);
  INFO("A while the client refuses the server: " << r.describe() << " after " << ms << " ms");
  CHECK(closed_without_data(r));
  CHECK(ms >= 800);
  CHECK(echo.accepted() == 0);
  CHECK_FALSE(client.log().find("event=online").has_value());
  // The client never opened a data connection: nothing was paired but the core line above.
  CHECK(server.log().count("event=paired") == 1);
  check_no_secret(client.log(), {token}, "tunnel-client");
  check_no_secret(server.log(), {token}, "tunnel-server");
}

// 5 ---------------------------------------------------------------------------------------------

namespace {

// One control connection of the real client to the fake server, up to its AUTH-PROOF.
struct FakeServerAttempt {
  Socket control;
  auth::Transcript transcript;
  std::string client_proof;
};

// Accepts the client's next connection, which must be a control hello with auth, answers it with
// AUTH-CHALLENGE `server_nonce`, and checks that the client's AUTH-PROOF is right for the token.
FakeServerAttempt challenge_client(const Socket& listener, const std::string& token,
                                   const std::string& name, const std::string& server_nonce) {
  FakeServerAttempt f{accept_within(listener, 5s), {}, {}};
  ReadResult hello = read_line(f.control, 5s, 512);
  INFO("the client's first line: " << hello.describe());
  REQUIRE(hello.end == End::complete);
  REQUIRE(hello.data == "TUNNEL/1 CONTROL auth services pool");
  send_all(f.control, "AUTH-CHALLENGE " + server_nonce + "\n");
  ReadResult proof = read_line(f.control, 5s, 512);
  INFO("the client's AUTH-PROOF: " << proof.describe());
  REQUIRE(proof.end == End::complete);
  const auto w = words(proof.data);
  REQUIRE(w.size() == 4);
  REQUIRE(w[0] == "AUTH-PROOF");
  CHECK(w[1] == name);
  CHECK(std::regex_match(w[2], kHex64));
  CHECK(w[2] != server_nonce);
  f.transcript = {server_nonce, w[2], w[1], ""};
  // docs/PROTOCOL.md: client-proof = HMAC(token, "tunnel/1 client-proof\n" ...).
  CHECK(auth::proof_matches(auth::client_proof(token, f.transcript), w[3]));
  f.client_proof = w[3];
  return f;
}

// Accepts the client's next connection and reads its hello, which must ask for auth.
Socket accept_hello(const Socket& listener) {
  Socket control = accept_within(listener, 5s);
  ReadResult hello = read_line(control, 5s, 512);
  INFO("the client's first line: " << hello.describe());
  REQUIRE(hello.end == End::complete);
  REQUIRE(hello.data == "TUNNEL/1 CONTROL auth services pool");
  return control;
}

// The client closes `control` after the AUTH-OK it got, sending nothing more, and logs the
// mismatch.
void require_client_refuses(FakeServerAttempt& f, const Client& client, size_t mismatches,
                            const std::string& what) {
  ReadResult r = read_to_end(f.control, 3s);
  INFO(what << ": the client's side after AUTH-OK " << r.describe());
  CHECK(closed_without_data(r));
  wait_count(client.log(), Match::regex("event=auth-failed .*reason=server-proof-mismatch"),
             mismatches, 3s, "tunnel-client");
  CHECK_FALSE(client.log().find("event=online").has_value());
}

}  // namespace

TEST_CASE(
    "auth: the client refuses a fake server whose AUTH-OK proof is wrong, and never serves it") {
  TokenDir dir;
  const std::string token = new_token();
  const std::string file = dir.write("tunnel.token", token);
  const std::string name = "lan-host-1";
  EchoTarget echo;
  Socket listener = listen_tcp();
  const uint16_t port = local_port(listener);
  Client client(port, echo.address(),
                {"--token-file", file, "--name", name, "--reconnect-max", "300ms"});

  // A server that does not hold the token: its proof is made with another one. It goes on as if
  // all were well and announces a connection, which the client must not act on.
  const std::string nonce1 = random_hex64();
  FakeServerAttempt first = challenge_client(listener, token, name, nonce1);
  const std::string forged = crypto::to_hex(auth::server_proof(new_token(), first.transcript));
  send_all(first.control, "AUTH-OK " + forged + "\nOK auth\nNEW " + random_id() + "\n");
  require_client_refuses(first, client, 1, "a server proof made with another token");

  // A reflection: the client's own proof sent back as the server's.
  FakeServerAttempt second = challenge_client(listener, token, name, random_hex64());
  send_all(second.control, "AUTH-OK " + second.client_proof + "\nOK auth\n");
  require_client_refuses(second, client, 2, "the client's own proof reflected");

  // A replay: the first challenge again, and the AUTH-OK a real server would have sent for the
  // first exchange. The client's nonce is new, so it is worth nothing.
  FakeServerAttempt third = challenge_client(listener, token, name, nonce1);
  CHECK(third.transcript.client_nonce != first.transcript.client_nonce);
  const std::string recorded = crypto::to_hex(auth::server_proof(token, first.transcript));
  send_all(third.control, "AUTH-OK " + recorded + "\nOK auth\n");
  require_client_refuses(third, client, 3, "a replayed AUTH-OK");

  // A server that skips the proofs: `OK auth` straight after the hello, then an announcement.
  {
    Socket skip = accept_hello(listener);
    send_all(skip, "OK auth\nNEW " + random_id() + "\n");
    ReadResult r = read_to_end(skip, 3s);
    INFO("after OK auth without a challenge, the client sent " << r.describe());
    CHECK((r.end == End::eof || r.end == End::reset));
    CHECK(r.data.find("AUTH-PROOF") == std::string::npos);
  }
  // A challenge whose nonce breaks the grammar (63 digits).
  {
    Socket bad_nonce = accept_hello(listener);
    send_all(bad_nonce, "AUTH-CHALLENGE " + random_hex64().substr(1) + "\n");
    ReadResult r = read_to_end(bad_nonce, 3s);
    INFO("after a 63-digit nonce, the client sent " << r.describe());
    CHECK((r.end == End::eof || r.end == End::reset));
  }
  CHECK_FALSE(client.log().find("event=online").has_value());
  CHECK(echo.accepted() == 0);

  // The same fake server with the token and a right proof: the client goes online, and its data
  // connection proves itself for the id under the session key of docs/PROTOCOL.md.
  FakeServerAttempt fourth = challenge_client(listener, token, name, random_hex64());
  const size_t mark = client.mark();
  send_all(
      fourth.control,
      "AUTH-OK " + crypto::to_hex(auth::server_proof(token, fourth.transcript)) + "\nOK auth\n");
  client.wait_online(5s, mark);
  const std::string id = random_id();
  send_all(fourth.control, "NEW " + id + "\n");
  Socket data = accept_within(listener, 5s);
  ReadResult line = read_line(data, 5s, 512);
  INFO("the client's data line: " << line.describe());
  REQUIRE(line.end == End::complete);
  const auto key = auth::session_key(token, fourth.transcript);
  CHECK(line.data == "TUNNEL/1 DATA " + id + " " + data_proof_hex(key, id));
  const std::string payload = "through a server that proved itself\n";
  send_all(data, payload);
  CHECK(read_exact(data, payload.size(), 5s) == payload);
  check_no_secret(client.log(), {token}, "tunnel-client");
}

// 6 ---------------------------------------------------------------------------------------------

TEST_CASE("auth: a recorded AUTH-PROOF replayed to a new challenge gets ERR auth") {
  TokenDir dir;
  const std::string token = new_token();
  const std::string file = dir.write("tunnel.token", token);
  AuthServer s(file);

  AuthControl first(s.server.port_b(), token, "recorded");
  INFO("first exchange: challenge \"" << first.exchange().challenge << "\", then \""
                                      << first.exchange().auth_ok << "\", then \"" << first.answer()
                                      << "\"");
  REQUIRE(first.exchange().server_proof_valid);
  REQUIRE(first.answer() == "OK auth");
  s.server.wait_for_line("event=client-online", 2s);
  const std::string recorded = first.exchange().proof_line;
  const size_t mark = s.server.mark();

  // While the recorded session is online: a replay must not even make the server probe it.
  std::string nonce;
  Socket replay = challenged(s.server.port_b(), &nonce);
  CHECK(nonce != first.exchange().server_nonce);
  send_all(replay, recorded + "\n");
  const std::string refusal = require_err_auth(replay, "the recorded AUTH-PROOF, session online");
  s.wait_counter(kControlFailures, 1);
  // Nor does a hello without auth: only an authenticated client can make the server probe.
  Socket plain = b_line(s.server.port_b(), "TUNNEL/1 CONTROL");
  require_err_auth(plain, "a hello without auth, session online");
  s.wait_counter(kControlFailures, 2);
  CHECK_FALSE(s.server.log().find("event=probing", mark).has_value());
  CHECK(first.pings_seen() == 0);
  CHECK_FALSE(first.closed());
  Socket a = connect_tcp(s.server.port_a());
  CHECK(std::regex_match(first.wait_new(3s), std::regex("[0-9a-f]{32}")));

  // With the session gone there is nothing to probe: the replay would become the session.
  first.close();
  s.server.wait_for_line("event=client-offline", 3s, mark);
  Socket replay2 = challenged(s.server.port_b());
  send_all(replay2, recorded + "\n");
  require_err_auth(replay2, "the recorded AUTH-PROOF, no session");
  s.wait_counter(kControlFailures, 3);
  CHECK(s.server.log().count("event=client-online") == 1);
  CHECK(metric(s.metrics, "tunnel_clients_online") == 0);

  // A proof made with a token that is off by one character.
  std::string near = token;
  near[0] = near[0] == 'A' ? 'B' : 'A';
  AuthControl wrong(s.server.port_b(), near, "recorded");
  INFO("with a near token: " << wrong.exchange().auth_ok);
  CHECK(std::regex_match(wrong.exchange().auth_ok, kErrAuth));
  CHECK_FALSE(wrong.online());
  s.wait_counter(kControlFailures, 4);
  // The refusal never says what was wrong: a replayed nonce and a wrong token read the same.
  CHECK(wrong.exchange().auth_ok == refusal);

  // The holder of the token still gets in.
  AuthControl again(s.server.port_b(), token, "recorded");
  CHECK(again.online());
  CHECK(again.answer() == "OK auth");
}

// 7 ---------------------------------------------------------------------------------------------

TEST_CASE("auth: forged, replayed, missing, truncated and oversized data proofs are refused") {
  TokenDir dir;
  const std::string token = new_token();
  const std::string file = dir.write("tunnel.token", token);
  AuthServer s(file, {"--pair-timeout", "20s"});
  auto ctl = std::make_unique<AuthControl>(s.server.port_b(), token, "fake-client");
  REQUIRE(ctl->online());
  s.server.wait_for_line("event=client-online", 2s);
  const uint16_t b = s.server.port_b();

  // Two external connections waiting, each with bytes sent before pairing.
  Socket a1 = connect_tcp(s.server.port_a());
  send_all(a1, "early bytes of a1\n");
  const std::string id1 = ctl->wait_new(3s);
  Socket a2 = connect_tcp(s.server.port_a());
  send_all(a2, "early bytes of a2\n");
  const std::string id2 = ctl->wait_new(3s);
  REQUIRE(id1 != id2);

  // Certain refusals that docs/PROTOCOL.md counts (no proof, a proof that does not match), and
  // refusals it does not say whether to count (lines that break the grammar).
  double counted = 0;
  double uncertain = 0;
  // A valid proof, for the other waiting id.
  for (const auto& [claimed, proven] : {std::pair{id1, id2}, std::pair{id2, id1}}) {
    Socket forged = b_line(b, "TUNNEL/1 DATA " + claimed + " " + ctl->data_proof(proven));
    require_err_auth(forged,
                     "DATA " + claimed.substr(0, 8) + " with the proof of " + proven.substr(0, 8));
    ++counted;
  }
  {
    Socket missing = b_line(b, "TUNNEL/1 DATA " + id1);
    require_err_auth(missing, "DATA without a proof");
    ++counted;
  }
  {
    Socket random = b_line(b, "TUNNEL/1 DATA " + id1 + " " + random_hex64());
    require_err_auth(random, "DATA with a random proof");
    ++counted;
  }
  const std::string right1 = ctl->data_proof(id1);
  const std::vector<std::pair<std::string, std::string>> garbled = {
      {"a proof of 63 digits", "TUNNEL/1 DATA " + id1 + " " + right1.substr(0, 63) + "\n"},
      {"a proof of 65 digits", "TUNNEL/1 DATA " + id1 + " " + right1 + "0\n"},
      {"the right proof in upper case", "TUNNEL/1 DATA " + id1 + " " + upper(right1) + "\n"},
      {"the right proof and a word more", "TUNNEL/1 DATA " + id1 + " " + right1 + " more\n"},
      {"the right proof in a line over 256 bytes",
       "TUNNEL/1 DATA " + id1 + " " + right1 + " " + std::string(160, 'x') + "\n"},
      {"the right proof with CR LF", "TUNNEL/1 DATA " + id1 + " " + right1 + "\r\n"},
  };
  for (const auto& [what, bytes] : garbled) {
    Socket g = connect_tcp(b);
    send_all(g, bytes);
    ReadResult r = require_refused(g, what, 1500ms);
    CHECK(r.data.find("early bytes") == std::string::npos);
    ++uncertain;
  }
  // A right proof for an id nobody waits for: closed without a word, and not an auth failure.
  {
    const std::string unknown = random_id();
    const std::string refused_ids = "tunnel_connections_failed_total{reason=\"unknown-id\"}";
    const double before = metric(s.metrics, refused_ids);
    Socket u = b_line(b, ctl->data_line(unknown));
    ReadResult r = read_to_end(u, 3s);
    INFO("a right proof for an unknown id: " << r.describe());
    CHECK(closed_without_data(r));
    // Counted as any refused id (its log line may be held back by the rate limit).
    s.wait_counter(refused_ids, before + 1);
  }

  // Nothing above took a1 or a2: their right lines pair them, early bytes first, both ways.
  Socket d1 = b_line(b, ctl->data_line(id1));
  CHECK(read_exact(d1, 18, 5s) == "early bytes of a1\n");
  carries(d1, a1, "answer to a1\n", "d1 -> a1");
  carries(a1, d1, "more from a1\n", "a1 -> d1");
  Socket d2 = b_line(b, ctl->data_line(id2));
  CHECK(read_exact(d2, 18, 5s) == "early bytes of a2\n");
  carries(d2, a2, "answer to a2\n", "d2 -> a2");
  // A line seen once is worth nothing again: the id is paired.
  Socket again = b_line(b, ctl->data_line(id1));
  ReadResult r_again = read_to_end(again, 3s);
  INFO("the right line for id1 a second time: " << r_again.describe());
  CHECK(closed_without_data(r_again));

  // A proof from an earlier session. a3 is announced to session 1, which then ends: a3 waits again
  // under a fresh id, told to session 2 after CLOSE for the old one.
  Socket a3 = connect_tcp(s.server.port_a());
  send_all(a3, "early bytes of a3\n");
  const std::string id3 = ctl->wait_new(3s);
  const auto old_key = ctl->exchange().key;
  const std::string old_line3 = ctl->data_line(id3);
  const size_t mark = s.server.mark();
  ctl->close();
  s.server.wait_for_line("event=client-offline", 3s, mark);
  AuthControl ctl2(b, token, "fake-client");
  REQUIRE(ctl2.online());
  const std::string id3b = ctl2.wait_new(3s);
  CHECK(id3b != id3);
  CHECK(ctl2.exchange().key != old_key);
  {
    // The old session's key, for the new id. docs/PROTOCOL.md checks the proof under the key of
    // the session that was told the id, so this does not match (ERR auth); a server may also take
    // it for a late line of the earlier session and close it silently. Never paired.
    Socket old_key_new_id =
        b_line(b, "TUNNEL/1 DATA " + id3b + " " + data_proof_hex(old_key, id3b));
    ReadResult r =
        require_refused(old_key_new_id, "the new id with the old session's proof", 1500ms);
    MEASURED("auth: the new id with the old session's data proof: " << r.describe());
    CHECK(r.data.find("early bytes") == std::string::npos);
    ++uncertain;
  }
  {
    // The old session's line, replayed as it was: refused (the id is void and the key gone).
    Socket replayed = b_line(b, old_line3);
    ReadResult r = require_refused(replayed, "the old session's data line replayed", 1500ms);
    CHECK(r.data.find("early bytes") == std::string::npos);
    ++uncertain;
  }
  Socket d3 = b_line(b, ctl2.data_line(id3b));
  CHECK(read_exact(d3, 18, 5s) == "early bytes of a3\n");
  carries(d3, a3, "answer to a3\n", "d3 -> a3");

  const double data_failures = s.data_failures();
  INFO("data failures counted: " << data_failures << "; certain " << counted << ", uncertain "
                                 << uncertain);
  CHECK(data_failures >= counted);
  CHECK(data_failures <= counted + uncertain);
  CHECK(s.control_failures() == 0);
  check_no_proof(s.server.log(), "event=auth-refused", "tunnel-server");
  CHECK_FALSE(ctl2.closed());
}

TEST_CASE(
    "auth: a data proof under the previous session's key, for an id told to the current session, "
    "is ERR auth and counted") {
  // docs/PROTOCOL.md, "Data connections": the first line carries the data proof "under the key of
  // the session that was told the id", and "a proof that does not match" gets `ERR auth`, close,
  // counted. Only the holder of the earlier session's key can make this line, and no honest client
  // can (it never heard the new id under that key): it is not a late line of the earlier session.
  TokenDir dir;
  const std::string token = new_token();
  const std::string file = dir.write("tunnel.token", token);
  AuthServer s(file, {"--pair-timeout", "20s"});
  auto first = std::make_unique<AuthControl>(s.server.port_b(), token, "fake-client");
  REQUIRE(first->online());
  const auto old_key = first->exchange().key;
  first->close();
  s.server.wait_for_line("event=client-offline", 3s);
  AuthControl second(s.server.port_b(), token, "fake-client");
  REQUIRE(second.online());
  Socket a = connect_tcp(s.server.port_a());
  send_all(a, "early bytes\n");
  const std::string id = second.wait_new(3s);

  Socket old = b_line(s.server.port_b(), "TUNNEL/1 DATA " + id + " " + data_proof_hex(old_key, id));
  require_err_auth(old, "the current session's id under the previous session's key");
  s.wait_counter(kDataFailures, 1);

  // Not paired by it: the right line still is.
  Socket right = b_line(s.server.port_b(), second.data_line(id));
  CHECK(read_exact(right, 12, 5s) == "early bytes\n");
}

// 8 ---------------------------------------------------------------------------------------------

TEST_CASE(
    "auth: truncated, oversized, malformed and silent auth lines are refused and cost nothing") {
  TokenDir dir;
  const std::string token = new_token();
  const std::string file = dir.write("tunnel.token", token);
  constexpr Millis kHandshake = 1500ms;
  AuthServer s(file, {"--handshake-timeout", "1500ms"});
  const uint16_t b = s.server.port_b();
  const FdCensus baseline = settled_census(s.server.pid());

  // Silent and slow peers first, so that their timeouts run while the others are tried.
  const auto slow_start = Clock::now();
  Socket silent = challenged(b);
  Socket unfinished = challenged(b);
  std::string half = "AUTH-PROOF slow " + random_hex64();
  send_all(unfinished, half);  // a line that never ends
  std::string dribble_nonce;
  Socket dribbling = challenged(b, &dribble_nonce);
  const std::string dribble_line =
      "AUTH-PROOF slow " + random_hex64() + " " + random_hex64() + "\n";  // one byte each 100 ms
  Socket hello_only = connect_tcp(b);
  send_all(hello_only, "TUNNEL/1 CONTROL auth");  // not even the hello ends

  // Lines that are refused at once, long before the handshake timeout.
  const std::string nonce = random_hex64();
  const std::string proof = random_hex64();
  auto right_proof_for = [&](const std::string& server_nonce, const std::string& name) {
    return crypto::to_hex(auth::client_proof(token, {server_nonce, nonce, name, ""}));
  };
  struct Bad {
    std::string what;
    std::function<std::string(const std::string& server_nonce)> line;
  };
  const std::vector<Bad> bad = {
      {"AUTH-PROOF without its proof", [&](auto&) { return "AUTH-PROOF fuzz " + nonce + "\n"; }},
      {"AUTH-PROOF alone", [&](auto&) { return std::string("AUTH-PROOF\n"); }},
      {"AUTH-PROOF with a word more",
       [&](auto& sn) {
         return "AUTH-PROOF fuzz " + nonce + " " + right_proof_for(sn, "fuzz") + " more\n";
       }},
      {"a proof of 63 digits",
       [&](auto& sn) {
         return "AUTH-PROOF fuzz " + nonce + " " + right_proof_for(sn, "fuzz").substr(0, 63) + "\n";
       }},
      {"a non-hex proof",
       [&](auto&) { return "AUTH-PROOF fuzz " + nonce + " " + std::string(64, 'g') + "\n"; }},
      {"the right proof in upper case",
       [&](auto& sn) {
         return "AUTH-PROOF fuzz " + nonce + " " + upper(right_proof_for(sn, "fuzz")) + "\n";
       }},
      {"a nonce of 63 digits",
       [&](auto&) { return "AUTH-PROOF fuzz " + nonce.substr(1) + " " + proof + "\n"; }},
      {"a name with a slash, with its right proof",
       [&](auto& sn) {
         return "AUTH-PROOF bad/name " + nonce + " " + right_proof_for(sn, "bad/name") + "\n";
       }},
      {"a name of 65 characters, with its right proof",
       [&](auto& sn) {
         const std::string name(65, 'n');
         return "AUTH-PROOF " + name + " " + nonce + " " + right_proof_for(sn, name) + "\n";
       }},
      {"two spaces",
       [&](auto& sn) {
         return "AUTH-PROOF  fuzz " + nonce + " " + right_proof_for(sn, "fuzz") + "\n";
       }},
      {"CR LF",
       [&](auto& sn) {
         return "AUTH-PROOF fuzz " + nonce + " " + right_proof_for(sn, "fuzz") + "\r\n";
       }},
      {"a line over 256 bytes",
       [&](auto&) {
         return "AUTH-PROOF " + std::string(180, 'n') + " " + nonce + " " + proof + "\n";
       }},
      {"300 bytes without a newline", [&](auto&) { return std::string(300, 'A'); }},
      {"binary garbage", [&](auto&) { return std::string("\x01\xff\x00garbage\x7f\n", 12); }},
      {"an empty line", [&](auto&) { return std::string("\n"); }},
      {"a wrong proof sent with the hello, before the challenge", nullptr},
  };
  size_t wrong_proofs = 0;
  for (const auto& [what, line] : bad) {
    Socket c;
    if (line) {
      std::string server_nonce;
      c = challenged(b, &server_nonce);
      send_all(c, line(server_nonce));
    } else {
      c = connect_tcp(b);
      send_all(c, "TUNNEL/1 CONTROL auth\nAUTH-PROOF fuzz " + nonce + " " + proof + "\n");
      ReadResult ch = read_line(c, 3s, 512);
      CHECK(std::regex_match(ch.data, kChallenge));
      ++wrong_proofs;
    }
    require_refused(c, what, kHandshake - 500ms);
  }

  // The dribbler: a byte every 100 ms, each in time, but the line as a whole is not.
  size_t sent = 0;
  while (sent < dribble_line.size() && !wait_readable(dribbling, 100ms)) {
    int error = 0;
    if (!try_send_all(dribbling, dribble_line.substr(sent++, 1), 1s, error)) break;
  }
  struct Slow {
    const char* what;
    Socket* socket;
  };
  for (const Slow& slow : {Slow{"silent after the challenge", &silent},
                           Slow{"an AUTH-PROOF that never ends", &unfinished},
                           Slow{"an AUTH-PROOF sent a byte every 100 ms", &dribbling},
                           Slow{"a hello that never ends", &hello_only}}) {
    ReadResult r = read_to_end(*slow.socket, kHandshake + 3s);
    const auto ms = ms_since(slow_start);
    INFO(slow.what << ": " << r.describe() << " " << ms << " ms after it connected");
    MEASURED("auth: " << slow.what << " closed " << ms << " ms after connecting, for "
                      << "--handshake-timeout 1500ms");
    CHECK((r.end == End::eof || r.end == End::reset));
    CHECK((r.data.empty() || std::regex_match(r.data, std::regex("ERR [ -~]*\n"))));
    CHECK(ms >= kHandshake.count() - 200);
    CHECK(ms <= kHandshake.count() + 2000);
  }
  INFO("dribbled " << sent << " of " << dribble_line.size() << " bytes before the close");
  CHECK(sent < dribble_line.size());

  // None of it was counted as a session or left anything behind.
  silent.close();
  unfinished.close();
  dribbling.close();
  hello_only.close();
  wait_fds_back(s.server.pid(), baseline, 0, 5s, "tunnel-server");
  CHECK(metric(s.metrics, "tunnel_control_sessions_total") == 0);
  CHECK(s.control_failures() >= static_cast<double>(wrong_proofs));
  CHECK(s.data_failures() == 0);

  // And the holder of the token still gets in.
  AuthControl good(b, token, "after-the-abuse");
  CHECK(good.online());
}

// 9 ---------------------------------------------------------------------------------------------

namespace {

enum class Hostile { wrong_proof, no_auth, garbage, silent, data_no_proof, data_wrong_proof };
constexpr size_t kHostileKinds = 6;

const char* to_string(Hostile kind) {
  switch (kind) {
    case Hostile::wrong_proof:
      return "wrong-proof";
    case Hostile::no_auth:
      return "hello-without-auth";
    case Hostile::garbage:
      return "garbage";
    case Hostile::silent:
      return "silent-after-hello";
    case Hostile::data_no_proof:
      return "data-without-proof";
    case Hostile::data_wrong_proof:
      return "data-wrong-proof";
  }
  return "?";
}

struct HostilePeer {
  Hostile kind = Hostile::garbage;
  Socket socket;
  bool proof_sent = false;
  bool ended = false;
  End end = End::timeout;
  std::string received;
};

std::string hostile_opening(Hostile kind, size_t i) {
  switch (kind) {
    case Hostile::wrong_proof:
    case Hostile::silent:
      return "TUNNEL/1 CONTROL auth\n";
    case Hostile::no_auth:
      return "TUNNEL/1 CONTROL\n";
    case Hostile::garbage:
      switch ((i / kHostileKinds) % 4) {
        case 0:
          return std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\n", 19);
        case 1:
          return "TUNNEL/1 CONTROL auth\nAUTH-PROOF x\n";
        case 2:
          return "TUNNEL/1 CONTROL auth\n" + std::string(300, 'z');
        default:
          return "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
      }
    case Hostile::data_no_proof:
      return "TUNNEL/1 DATA " + random_id() + "\n";
    case Hostile::data_wrong_proof:
      return "TUNNEL/1 DATA " + random_id() + " " + random_hex64() + "\n";
  }
  return "";
}

// What `peer` must have seen; empty when it did.
std::string hostile_verdict(const HostilePeer& peer) {
  if (!peer.ended) return "still open";
  if (peer.end != End::eof && peer.end != End::reset)
    return "ended by " + std::string(to_string(peer.end));
  const std::string& got = peer.received;
  if (got.find("AUTH-OK") != std::string::npos || got.rfind("OK", 0) == 0 ||
      got.find("\nOK") != std::string::npos) {
    return "was let in: \"" + got + "\"";
  }
  static const std::regex challenge_then_err("AUTH-CHALLENGE [0-9a-f]{64}\nERR auth[ -~]*\n");
  static const std::regex challenge_then_maybe_err("AUTH-CHALLENGE [0-9a-f]{64}\n(ERR [ -~]*\n)?");
  static const std::regex err_auth("ERR auth[ -~]*\n");
  bool ok = true;
  switch (peer.kind) {
    case Hostile::wrong_proof:
      ok = std::regex_match(got, challenge_then_err);
      break;
    case Hostile::silent:
      ok = std::regex_match(got, challenge_then_maybe_err);
      break;
    case Hostile::no_auth:
    case Hostile::data_no_proof:
      ok = std::regex_match(got, err_auth);
      break;
    case Hostile::data_wrong_proof:
      // A random id waits for nobody: there is no session key to check the proof against, so the
      // line is refused like any unknown id, without a word (docs/PROTOCOL.md, "Data
      // connections").
      ok = got.empty();
      break;
    case Hostile::garbage:
      break;
  }
  return ok ? "" : "received \"" + got + "\" then " + to_string(peer.end);
}

// Drives every peer until the server has closed each of them: sends the wrong proofs once their
// challenge arrives, collects what each received.
void drive_hostile(std::vector<HostilePeer>& peers, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  std::vector<pollfd> fds;
  std::vector<size_t> index;
  char buf[4096];
  while (true) {
    fds.clear();
    index.clear();
    for (size_t i = 0; i < peers.size(); ++i) {
      if (peers[i].ended) continue;
      fds.push_back({peers[i].socket.fd(), POLLIN, 0});
      index.push_back(i);
    }
    if (fds.empty()) return;
    if (Clock::now() >= deadline) {
      std::string open;
      for (size_t i : index) open += std::string(" ") + to_string(peers[i].kind);
      throw WaitTimeout(std::to_string(fds.size()) + " hostile connections still open after " +
                        std::to_string(timeout.count()) + " ms:" + open.substr(0, 2000));
    }
    if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
    for (size_t k = 0; k < fds.size(); ++k) {
      if (fds[k].revents == 0) continue;
      HostilePeer& p = peers[index[k]];
      const ssize_t n = ::recv(p.socket.fd(), buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        p.received.append(buf, static_cast<size_t>(n));
        if (p.kind == Hostile::wrong_proof && !p.proof_sent &&
            p.received.find('\n') != std::string::npos) {
          p.proof_sent = true;
          int error = 0;
          try_send_all(p.socket,
                       "AUTH-PROOF hostile-" + std::to_string(index[k]) + " " + random_hex64() +
                           " " + random_hex64() + "\n",
                       1s, error);
        }
      } else if (n == 0) {
        p.ended = true;
        p.end = End::eof;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        p.ended = true;
        p.end = (errno == ECONNRESET || errno == EPIPE) ? End::reset : End::error;
      }
      if (p.ended) p.socket.close();
    }
  }
}

}  // namespace

TEST_CASE("auth: 500 hostile auth connections at once do not disturb authenticated traffic") {
  TokenDir dir;
  const std::string token = new_token();
  const std::string file = dir.write("tunnel.token", token);
  EchoTarget echo;
  AuthServer s(file, {"--handshake-timeout", "2s"});
  Client client(s.server.port_b(), echo.address(), {"--token-file", file, "--name", "real"});
  wait_session(s.server, client);
  const FdCensus baseline = settled_census(s.server.pid());

  // Real traffic: a long-lived connection, and round trips on four threads until the flood is over.
  Socket live = connect_tcp(s.server.port_a());
  send_all(live, "live before\n");
  CHECK(read_exact(live, 12, 5s) == "live before\n");
  std::atomic<bool> stop{false};
  std::atomic<size_t> round_trips{0};
  std::mutex errors_mutex;
  std::vector<std::string> errors;
  std::vector<std::thread> traffic;
  for (size_t w = 0; w < 4; ++w) {
    traffic.emplace_back([&, w] {
      for (uint64_t n = 0; !stop || n < 3; ++n) {
        const uint64_t seed = w * 1000003 + n;
        try {
          echo_round_trip(s.server.port_a(), make_payload(seed, 1 + (seed * 7919) % 65536));
          ++round_trips;
        } catch (const std::exception& e) {
          std::lock_guard lock(errors_mutex);
          errors.push_back("worker " + std::to_string(w) + " round trip " + std::to_string(n) +
                           ": " + e.what());
        }
      }
    });
  }
  wait_until([&] { return round_trips >= 4; }, 10s, "the real traffic to start");

  const size_t mark = s.server.mark();
  const double control_before = s.control_failures();
  const double data_before = s.data_failures();
  constexpr size_t kHostile = 500;
  std::vector<HostilePeer> peers(kHostile);
  std::array<size_t, kHostileKinds> of_kind{};
  const auto start = Clock::now();
  for (size_t i = 0; i < kHostile; ++i) {
    peers[i].kind = static_cast<Hostile>(i % kHostileKinds);
    ++of_kind[i % kHostileKinds];
    peers[i].socket = connect_tcp(s.server.port_b(), 5s);
    int error = 0;
    try_send_all(peers[i].socket, hostile_opening(peers[i].kind, i), 1s, error);
  }
  const auto opened_ms = ms_since(start);
  drive_hostile(peers, 15s);
  const auto flood_ms = ms_since(start);
  size_t bad = 0;
  for (size_t i = 0; i < kHostile; ++i) {
    const std::string verdict = hostile_verdict(peers[i]);
    if (!verdict.empty() && ++bad <= 5) {
      UNSCOPED_INFO("hostile " << i << " (" << to_string(peers[i].kind) << "): " << verdict);
    }
  }
  CHECK(bad == 0);

  // One more wrong proof after the flood: the refusal log then says how many it held back.
  {
    Socket late = challenged(s.server.port_b());
    send_all(late, "AUTH-PROOF late " + random_hex64() + " " + random_hex64() + "\n");
    require_err_auth(late, "a wrong proof after the flood");
  }
  const std::string summary =
      s.server.wait_for_line(Match::regex("event=auth-refused .*suppressed=[1-9][0-9]*"), 3s, mark);
  INFO("the line that reports the suppressed refusals: " << summary);

  stop = true;
  for (auto& t : traffic) t.join();
  send_all(live, "live after\n");
  CHECK(read_exact(live, 11, 5s) == "live after\n");
  live.close();
  for (size_t i = 0; i < errors.size() && i < 5; ++i) UNSCOPED_INFO(errors[i]);
  CHECK(errors.empty());

  const size_t proof_failures_control = of_kind[static_cast<size_t>(Hostile::wrong_proof)] +
                                        of_kind[static_cast<size_t>(Hostile::no_auth)] +
                                        1;  // + the late one
  const size_t maybe_control = of_kind[static_cast<size_t>(Hostile::garbage)] +
                               of_kind[static_cast<size_t>(Hostile::silent)];
  const size_t proof_failures_data = of_kind[static_cast<size_t>(Hostile::data_no_proof)];
  s.wait_counter(kDataFailures, data_before + static_cast<double>(proof_failures_data));
  double control = 0;
  poll_until(
      [&] {
        control = s.control_failures() - control_before;
        return control >= static_cast<double>(proof_failures_control);
      },
      3s);
  INFO("control failures counted during the flood: " << control << ", expected from "
                                                     << proof_failures_control << " to "
                                                     << proof_failures_control + maybe_control);
  CHECK(control >= static_cast<double>(proof_failures_control));
  CHECK(control <= static_cast<double>(proof_failures_control + maybe_control));

  const auto seconds = ms_since(start) / 1000 + 1;
  const size_t refusal_lines = s.server.log().count("event=auth-refused", mark);
  MEASURED("auth flood: " << kHostile << " hostile connections opened in " << opened_ms
                          << " ms, all closed after " << flood_ms << " ms; " << round_trips
                          << " round trips meanwhile; " << refusal_lines
                          << " auth-refused lines in " << ms_since(start) << " ms");
  CHECK(refusal_lines <= 2 * static_cast<size_t>(seconds + 1));
  check_no_proof(s.server.log(), "event=auth-refused", "tunnel-server");
  check_no_secret(s.server.log(), {token}, "tunnel-server");
  CHECK_FALSE(s.server.log().find("event=client-offline").has_value());
  CHECK_FALSE(client.log().find("event=control-lost").has_value());
  CHECK(metric(s.metrics, "tunnel_clients_online") == 1);

  // Every descriptor the flood and the traffic took is given back (idle pipes aside, which the
  // pool trims a few seconds later).
  wait_fds_back(s.server.pid(), baseline, 64, 10s, "tunnel-server");
}

// 10 --------------------------------------------------------------------------------------------

TEST_CASE(
    "auth: the token file is found in $CREDENTIALS_DIRECTORY, and a readable one is refused") {
  TokenDir dir;
  const std::string token = new_token();
  const std::string file = dir.write("tunnel.token", token);
  EchoTarget echo;

  // systemd's LoadCredential=: a relative --token-file is looked up in $CREDENTIALS_DIRECTORY (the
  // test's working directory holds no such file).
  const std::string credentials = "CREDENTIALS_DIRECTORY=" + dir.path();
  Process server("tunnel-server", {"/usr/bin/env", credentials, server_binary(), "--listen-a",
                                   "127.0.0.1:0", "--listen-b", "127.0.0.1:0", "--token-file",
                                   "tunnel.token", "--log-level", "debug"});
  server.wait_for_line("event=ready", kStartTimeout);
  const uint16_t port_a = listening_port(server, "a");
  const uint16_t port_b = listening_port(server, "b");
  Process client("tunnel-client",
                 {"/usr/bin/env", credentials, client_binary(), "--server", loopback(port_b),
                  "--target", echo.address(), "--token-file", "tunnel.token", "--name",
                  "credentials", "--log-level", "debug"});
  client.wait_for_line("event=online", kStartTimeout);
  echo_round_trip(port_a, "the token came from $CREDENTIALS_DIRECTORY\n");
  // It really is auth: a hello without it is refused.
  Socket plain = b_line(port_b, "TUNNEL/1 CONTROL");
  require_err_auth(plain, "a hello without auth");

  // Mode 0644: each daemon refuses to start, with one line naming the file and the fix.
  TokenDir loose_dir;
  const std::string loose = loose_dir.write("loose.token", token, 0644);
  struct Refusal {
    const char* who;
    std::vector<std::string> argv;
    std::string names;
  };
  const std::vector<Refusal> refusals = {
      {"tunnel-server",
       {server_binary(), "--listen-a", "127.0.0.1:0", "--listen-b", "127.0.0.1:0", "--token-file",
        loose},
       loose},
      {"tunnel-client",
       {client_binary(), "--server", loopback(port_b), "--target", echo.address(), "--token-file",
        loose},
       loose},
      {"tunnel-server",
       {"/usr/bin/env", "CREDENTIALS_DIRECTORY=" + loose_dir.path(), server_binary(), "--listen-a",
        "127.0.0.1:0", "--listen-b", "127.0.0.1:0", "--token-file", "loose.token"},
       "loose.token"},
  };
  for (const auto& refusal : refusals) {
    Process p(refusal.who, refusal.argv);
    const ExitStatus status = p.wait_exit(kStartTimeout);
    const auto lines = p.log().lines();
    std::string all;
    for (const auto& l : lines) all += l.text + "\n";
    INFO(refusal.who << " with a 0644 token file: " << status.describe() << ", output:\n" << all);
    CHECK(status.exited);
    CHECK(status.code == 2);
    CHECK(lines.size() == 1);
    CHECK(all.find(refusal.names) != std::string::npos);
    CHECK(all.find("chmod 600") != std::string::npos);
    CHECK(all.find(token) == std::string::npos);
  }
  check_no_secret(server.log(), {token}, "tunnel-server");
  check_no_secret(client.log(), {token}, "tunnel-client");
}
