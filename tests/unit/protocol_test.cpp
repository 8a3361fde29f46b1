// Protocol v1 codec (docs/PROTOCOL.md): every hello and control verb with good and bad arguments,
// and format -> parse round trips.
#include "tunnel/protocol.hpp"

#include <catch2/catch.hpp>
#include <string>
#include <variant>
#include <vector>

#include "tunnel/line_reader.hpp"

namespace p = tunnel::protocol;
using tunnel::ConnId;

namespace {

const std::string kId = "0123456789abcdef0123456789abcdef";

// What a parse result looks like, for failure messages.
std::string describe(const p::Hello& h) {
  if (auto* m = std::get_if<p::Malformed>(&h))
    return "Malformed{" + m->code + ", " + m->reason + "}";
  if (std::holds_alternative<p::DataHello>(h)) return "DataHello";
  return "ControlHello";
}
std::string describe(const p::Parsed& r) {
  if (auto* m = std::get_if<p::Malformed>(&r))
    return "Malformed{" + m->code + ", " + m->reason + "}";
  return "Message{verb " + std::to_string(static_cast<int>(std::get<p::Message>(r).verb)) + "}";
}

p::ControlHello expect_control(std::string_view line) {
  auto h = p::parse_hello(line);
  INFO("line: '" << line << "' parsed as " << describe(h));
  REQUIRE(std::holds_alternative<p::ControlHello>(h));
  return std::get<p::ControlHello>(h);
}

p::DataHello expect_data(std::string_view line) {
  auto h = p::parse_hello(line);
  INFO("line: '" << line << "' parsed as " << describe(h));
  REQUIRE(std::holds_alternative<p::DataHello>(h));
  return std::get<p::DataHello>(h);
}

p::Malformed expect_bad_hello(std::string_view line) {
  auto h = p::parse_hello(line);
  INFO("line: '" << line << "' parsed as " << describe(h));
  REQUIRE(std::holds_alternative<p::Malformed>(h));
  auto m = std::get<p::Malformed>(h);
  CHECK_FALSE(m.reason.empty());
  return m;
}

p::Message expect_message(std::string_view line, p::Verb verb) {
  auto r = p::parse_message(line);
  INFO("line: '" << line << "' parsed as " << describe(r));
  REQUIRE(std::holds_alternative<p::Message>(r));
  auto m = std::get<p::Message>(r);
  CHECK(m.verb == verb);
  return m;
}

void expect_bad_message(std::string_view line) {
  auto r = p::parse_message(line);
  INFO("line: '" << line << "' parsed as " << describe(r));
  REQUIRE(std::holds_alternative<p::Malformed>(r));
  CHECK(std::get<p::Malformed>(r).code == p::kErrBadRequest);
  CHECK_FALSE(std::get<p::Malformed>(r).reason.empty());
}

// Formatters return a whole line; the parsers take it without the `\n`.
std::string strip(const std::string& line) {
  REQUIRE(!line.empty());
  REQUIRE(line.back() == '\n');
  CHECK(line.find('\n') == line.size() - 1);
  CHECK(line.size() <= tunnel::kMaxLineLength);
  return line.substr(0, line.size() - 1);
}

}  // namespace

// --- hello: TUNNEL/1 CONTROL [features] ---

TEST_CASE("protocol hello: TUNNEL/1 CONTROL without features") {
  CHECK(expect_control("TUNNEL/1 CONTROL").features.empty());
}

TEST_CASE("protocol hello: TUNNEL/1 CONTROL with features keeps them in order") {
  auto hello = expect_control("TUNNEL/1 CONTROL warm-pool zstd x.y/2");
  CHECK(hello.features == std::vector<std::string>{"warm-pool", "zstd", "x.y/2"});
}

TEST_CASE("protocol hello: a CONTROL feature longer than 32 characters is rejected") {
  const std::string longest(32, 'f'), too_long(33, 'f');
  expect_control("TUNNEL/1 CONTROL " + longest);
  auto m = expect_bad_hello("TUNNEL/1 CONTROL " + too_long);
  CHECK(m.code == p::kErrBadRequest);
}

// --- hello: TUNNEL/1 DATA <id> ---

TEST_CASE("protocol hello: TUNNEL/1 DATA with a 32 lowercase hex id") {
  auto hello = expect_data("TUNNEL/1 DATA " + kId);
  CHECK(hello.id.hex() == kId);
}

TEST_CASE("protocol hello: TUNNEL/1 DATA with a bad or missing id is a bad request") {
  const std::string short_id = kId.substr(0, 31);
  for (const std::string& line : std::vector<std::string>{
           "TUNNEL/1 DATA",
           "TUNNEL/1 DATA " + short_id,
           "TUNNEL/1 DATA " + kId + "0",
           "TUNNEL/1 DATA 0123456789ABCDEF0123456789abcdef",
           "TUNNEL/1 DATA 0123456789abcdef0123456789abcdeg",
           "TUNNEL/1 DATA " + kId + " extra",
           "TUNNEL/1 DATA  " + kId,
       }) {
    INFO(line);
    CHECK(expect_bad_hello(line).code == p::kErrBadRequest);
  }
}

// --- hello: versions and garbage ---

TEST_CASE("protocol hello: another protocol version is a version error") {
  for (const std::string& line :
       std::vector<std::string>{"TUNNEL/2 CONTROL", "TUNNEL/2 DATA " + kId, "TUNNEL/0 CONTROL",
                                "TUNNEL/10 CONTROL", "TUNNEL/1.1 CONTROL"}) {
    INFO(line);
    CHECK(expect_bad_hello(line).code == p::kErrVersion);
  }
}

TEST_CASE("protocol hello: malformed first lines are bad requests") {
  for (const std::string& line : std::vector<std::string>{
           "",
           "TUNNEL/1",
           "TUNNEL/1 ",
           "TUNNEL/1 control",
           "TUNNEL/1 PING x",
           "tunnel/1 CONTROL",
           "GET / HTTP/1.1",
           " TUNNEL/1 CONTROL",
           "TUNNEL/1  CONTROL",
           "TUNNEL/1 CONTROL ",
           "TUNNEL/1 CONTROL a  b",
           "TUNNEL/1\tCONTROL",
           "TUNNEL/1 CONTROL\r",
           "NEW " + kId,
       }) {
    INFO("line: '" << line << "'");
    CHECK(expect_bad_hello(line).code == p::kErrBadRequest);
  }
}

TEST_CASE("protocol hello: non-ASCII and control bytes are rejected") {
  CHECK(expect_bad_hello(std::string("TUNNEL/1 CONTROL \xc3\xa9t\xc3\xa9")).code ==
        p::kErrBadRequest);
  CHECK(expect_bad_hello(std::string("TUNNEL/1 CONTROL\0", 17)).code == p::kErrBadRequest);
}

// --- control verbs ---

TEST_CASE("protocol message: NEW and CLOSE carry an id") {
  CHECK(expect_message("NEW " + kId, p::Verb::new_conn).id.hex() == kId);
  CHECK(expect_message("CLOSE " + kId, p::Verb::close_conn).id.hex() == kId);
}

TEST_CASE("protocol message: NEW and CLOSE with a bad id or argument count are malformed") {
  // Literals are prefixed to named strings, not to temporaries: GCC 12 at -O3 reports a false
  // -Wrestrict in `"literal" + temporary` (operator+(const char*, string&&)).
  const std::string short_id = kId.substr(1);
  for (const std::string& verb : std::vector<std::string>{"NEW", "CLOSE"}) {
    for (const std::string& args :
         std::vector<std::string>{std::string(""), std::string(" "), " " + short_id,
                                  " " + kId + "a", " 0123456789ABCDEF0123456789ABCDEF",
                                  " " + kId + " extra words", "  " + kId, " " + kId + " "}) {
      expect_bad_message(verb + args);
    }
  }
}

TEST_CASE("protocol message: FAIL carries an id and a reason token") {
  auto m = expect_message("FAIL " + kId + " target-unreachable", p::Verb::fail);
  CHECK(m.id.hex() == kId);
  CHECK(m.word == "target-unreachable");
}

TEST_CASE(
    "protocol message: FAIL without a reason, with a bad id or with extra words is malformed") {
  const std::string long_reason(33, 'r');
  for (const std::string& line : std::vector<std::string>{
           "FAIL", "FAIL " + kId, "FAIL " + kId + " ", "FAIL nothex refused",
           "FAIL " + kId + " connection refused", "FAIL " + kId + " " + long_reason}) {
    expect_bad_message(line);
  }
}

TEST_CASE("protocol message: PING and PONG carry a token of 1 to 32 printable characters") {
  CHECK(expect_message("PING a", p::Verb::ping).word == "a");
  CHECK(expect_message("PONG a", p::Verb::pong).word == "a");
  const std::string longest(32, '~');
  CHECK(expect_message("PING " + longest, p::Verb::ping).word == longest);
  CHECK(expect_message("PONG !#$%&'()*+,-./09:;<=>?@AZ[]^_", p::Verb::pong).word ==
        "!#$%&'()*+,-./09:;<=>?@AZ[]^_");
}

TEST_CASE("protocol message: PING and PONG with a missing or long or split token are malformed") {
  const std::string long_token(33, 't');
  for (const std::string& verb : std::vector<std::string>{"PING", "PONG"}) {
    for (const std::string& args :
         std::vector<std::string>{std::string(""), std::string(" "), " " + long_token,
                                  std::string(" a b"), std::string("  a"), std::string(" a ")}) {
      expect_bad_message(verb + args);
    }
    expect_bad_message(verb + " t\x7f");
    expect_bad_message(verb + " t\x80");
  }
}

TEST_CASE("protocol message: OK with and without features") {
  CHECK(expect_message("OK", p::Verb::ok).features.empty());
  CHECK(expect_message("OK warm-pool zstd", p::Verb::ok).features ==
        std::vector<std::string>{"warm-pool", "zstd"});
  const std::string long_feature(33, 'f');
  expect_bad_message("OK " + long_feature);
  expect_bad_message("OK ");
}

TEST_CASE("protocol message: ERR carries a code and the rest of the line as text") {
  auto m = expect_message("ERR busy another client is connected", p::Verb::err);
  CHECK(m.word == "busy");
  CHECK(m.text == "another client is connected");
  auto v = expect_message("ERR version only TUNNEL/1 is spoken here", p::Verb::err);
  CHECK(v.word == "version");
  CHECK(v.text == "only TUNNEL/1 is spoken here");
}

TEST_CASE("protocol message: ERR without a code is malformed") {
  expect_bad_message("ERR");
  expect_bad_message("ERR ");
}

TEST_CASE("protocol message: an unknown verb is reported as unknown with its word") {
  // Forward compatibility: the receiver logs and ignores it instead of closing.
  CHECK(expect_message("HELLO", p::Verb::unknown).word == "HELLO");
  CHECK(expect_message("STATS 1 2 3", p::Verb::unknown).word == "STATS");
  CHECK(expect_message("ping x", p::Verb::unknown).word == "ping");
  CHECK(expect_message("TUNNEL/1 CONTROL", p::Verb::unknown).word == "TUNNEL/1");
}

TEST_CASE("protocol message: empty lines or stray spaces or control bytes are malformed") {
  for (const std::string& line : std::vector<std::string>{
           std::string(""), std::string(" "), std::string(" PING x"), std::string("PING x\r"),
           std::string("PING\tx"), std::string("NEW\0", 4)}) {
    expect_bad_message(line);
  }
}

TEST_CASE("protocol: is_token accepts 1 to 32 printable non-space characters") {
  CHECK(p::is_token("a"));
  CHECK(p::is_token(std::string(32, 'x')));
  CHECK(p::is_token("!~"));
  CHECK_FALSE(p::is_token(""));
  CHECK_FALSE(p::is_token(std::string(33, 'x')));
  CHECK_FALSE(p::is_token("a b"));
  CHECK_FALSE(p::is_token("a\tb"));
  CHECK_FALSE(p::is_token("\x7f"));
  CHECK_FALSE(p::is_token("\xc3\xa9"));
}

// --- formatting and round trips ---

TEST_CASE("protocol format: lines are exactly as the specification writes them") {
  auto id = *ConnId::parse(kId);
  CHECK(p::control_hello({}) == "TUNNEL/1 CONTROL\n");
  CHECK(p::control_hello({"a", "b"}) == "TUNNEL/1 CONTROL a b\n");
  CHECK(p::data_hello(id) == "TUNNEL/1 DATA " + kId + "\n");
  CHECK(p::ok({}) == "OK\n");
  CHECK(p::ok({"warm-pool"}) == "OK warm-pool\n");
  CHECK(p::err(p::kErrBusy, "try later") == "ERR busy try later\n");
  CHECK(p::new_conn(id) == "NEW " + kId + "\n");
  CHECK(p::close_conn(id) == "CLOSE " + kId + "\n");
  CHECK(p::fail(id, "refused") == "FAIL " + kId + " refused\n");
  CHECK(p::ping("t1") == "PING t1\n");
  CHECK(p::pong("t1") == "PONG t1\n");
}

TEST_CASE("protocol round trip: hellos parse back to what was formatted") {
  const std::vector<std::string> features{"warm-pool", "zstd"};
  CHECK(expect_control(strip(p::control_hello(features))).features == features);
  CHECK(expect_control(strip(p::control_hello({}))).features.empty());
  for (int i = 0; i < 100; ++i) {
    auto id = ConnId::random();
    CHECK(expect_data(strip(p::data_hello(id))).id == id);
  }
}

TEST_CASE("protocol round trip: control messages parse back to what was formatted") {
  auto id = ConnId::random();
  CHECK(expect_message(strip(p::new_conn(id)), p::Verb::new_conn).id == id);
  CHECK(expect_message(strip(p::close_conn(id)), p::Verb::close_conn).id == id);
  auto failed = expect_message(strip(p::fail(id, "target-unreachable")), p::Verb::fail);
  CHECK(failed.id == id);
  CHECK(failed.word == "target-unreachable");
  const std::string token(32, 'Z');
  CHECK(expect_message(strip(p::ping(token)), p::Verb::ping).word == token);
  CHECK(expect_message(strip(p::pong("1")), p::Verb::pong).word == "1");
  CHECK(expect_message(strip(p::ok({"x", "y"})), p::Verb::ok).features ==
        std::vector<std::string>{"x", "y"});
  auto e =
      expect_message(strip(p::err(p::kErrVersion, "only TUNNEL/1 is spoken here")), p::Verb::err);
  CHECK(e.word == "version");
  CHECK(e.text == "only TUNNEL/1 is spoken here");
}

TEST_CASE("protocol round trip: formatted lines pass through the line reader intact") {
  auto id = ConnId::random();
  const std::string stream = p::control_hello({"f"}) + p::new_conn(id) + p::ping("abc") +
                             p::fail(id, "refused") + p::err(p::kErrBusy, "busy now");
  tunnel::LineReader reader;
  for (size_t i = 0; i < stream.size(); i += 5) reader.feed(std::string_view(stream).substr(i, 5));
  std::vector<std::string> lines;
  while (auto line = reader.next()) lines.push_back(*line);
  REQUIRE(lines.size() == 5);
  expect_control(lines[0]);
  CHECK(expect_message(lines[1], p::Verb::new_conn).id == id);
  CHECK(expect_message(lines[2], p::Verb::ping).word == "abc");
  CHECK(expect_message(lines[3], p::Verb::fail).word == "refused");
  CHECK(expect_message(lines[4], p::Verb::err).text == "busy now");
}

// --- the auth extension's lines ---

namespace {
const std::string kHex64 = kId + kId;
}

TEST_CASE("protocol auth: a data hello may carry a 64-digit proof after the id") {
  auto hello = expect_data("TUNNEL/1 DATA " + kId + " " + kHex64);
  CHECK(hello.id.hex() == kId);
  CHECK(hello.proof == kHex64);
  CHECK(expect_data("TUNNEL/1 DATA " + kId).proof.empty());
  for (const std::string& line : std::vector<std::string>{
           "TUNNEL/1 DATA " + kId + " " + kHex64.substr(1),
           "TUNNEL/1 DATA " + kId + " " + kHex64 + "0",
           "TUNNEL/1 DATA " + kId + " " + std::string(64, 'A'),
           "TUNNEL/1 DATA " + kId + " " + kHex64 + " " + kHex64,
       }) {
    INFO(line);
    auto bad = expect_bad_hello(line);
    CHECK(bad.claimed == p::HelloKind::data);
  }
}

TEST_CASE("protocol auth: AUTH-CHALLENGE, AUTH-PROOF and AUTH-OK carry their fields") {
  CHECK(expect_message("AUTH-CHALLENGE " + kHex64, p::Verb::auth_challenge).nonce == kHex64);
  auto proof = expect_message("AUTH-PROOF lan-1 " + kHex64 + " " + kHex64, p::Verb::auth_proof);
  CHECK(proof.word == "lan-1");
  CHECK(proof.nonce == kHex64);
  CHECK(proof.proof == kHex64);
  CHECK(expect_message("AUTH-OK " + kHex64, p::Verb::auth_ok).proof == kHex64);
}

TEST_CASE("protocol auth: truncated, oversized or mistyped auth lines are malformed") {
  for (const std::string& line : std::vector<std::string>{
           "AUTH-CHALLENGE",
           "AUTH-CHALLENGE " + kHex64.substr(2),
           "AUTH-CHALLENGE " + kHex64 + " extra",
           "AUTH-PROOF lan-1 " + kHex64,
           "AUTH-PROOF lan-1 " + kHex64 + " " + kHex64.substr(1),
           "AUTH-PROOF bad/name " + kHex64 + " " + kHex64,
           "AUTH-PROOF " + std::string(65, 'n') + " " + kHex64 + " " + kHex64,
           "AUTH-PROOF lan-1 " + kHex64 + " " + kHex64 + " extra",
           "AUTH-OK",
           "AUTH-OK " + std::string(64, 'G'),
       }) {
    INFO(line);
    expect_bad_message(line);
  }
}

TEST_CASE("protocol auth: the auth lines round-trip and fit in a line") {
  CHECK(strip(p::auth_challenge(kHex64)) == "AUTH-CHALLENGE " + kHex64);
  const std::string longest_name(64, 'n');
  auto proof_line = strip(p::auth_proof(longest_name, kHex64, kHex64));
  auto proof = expect_message(proof_line, p::Verb::auth_proof);
  CHECK(proof.word == longest_name);
  CHECK(expect_message(strip(p::auth_ok(kHex64)), p::Verb::auth_ok).proof == kHex64);
  auto data = expect_data(strip(p::data_hello(*ConnId::parse(kId), kHex64)));
  CHECK(data.proof == kHex64);
  CHECK(strip(p::err(p::kErrAuth, "")) == "ERR auth");
}

// --- the services extension ---

TEST_CASE("protocol services: NEW may name a service; SERVE, SERVING and REFUSED carry theirs") {
  auto plain = expect_message("NEW " + kId, p::Verb::new_conn);
  CHECK(plain.service.empty());
  auto named = expect_message("NEW " + kId + " web-1.eu_x", p::Verb::new_conn);
  CHECK(named.id.hex() == kId);
  CHECK(named.service == "web-1.eu_x");
  CHECK(expect_message("SERVE ssh", p::Verb::serve).service == "ssh");
  CHECK(expect_message("SERVING ssh", p::Verb::serving).service == "ssh");
  auto refused = expect_message("REFUSED db not-allowed", p::Verb::refused);
  CHECK(refused.service == "db");
  CHECK(refused.word == "not-allowed");
}

TEST_CASE("protocol services: bad service names and argument counts are malformed") {
  const std::string too_long(65, 's');
  for (const std::string& line : std::vector<std::string>{
           "NEW " + kId + " " + too_long, "NEW " + kId + " we/b", "NEW " + kId + " a b", "SERVE",
           "SERVE ", "SERVE a b", "SERVE " + too_long, "SERVE sp@ce", "SERVING", "SERVING a b",
           "REFUSED web", "REFUSED web a b", "REFUSED w*b unknown",
           "REFUSED web " + std::string(33, 'r')}) {
    expect_bad_message(line);
  }
}

TEST_CASE("protocol services: the lines round-trip, and the longest fit in a line") {
  const std::string longest(64, 's');
  CHECK(strip(p::new_conn(*ConnId::parse(kId))) == "NEW " + kId);
  CHECK(strip(p::new_conn(*ConnId::parse(kId), longest)) == "NEW " + kId + " " + longest);
  CHECK(
      expect_message(strip(p::new_conn(*ConnId::parse(kId), longest)), p::Verb::new_conn).service ==
      longest);
  CHECK(strip(p::serve(longest)) == "SERVE " + longest);
  CHECK(expect_message(strip(p::serving(longest)), p::Verb::serving).service == longest);
  auto r = expect_message(strip(p::refused(longest, p::kRefusedAlreadyServed)), p::Verb::refused);
  CHECK(r.service == longest);
  CHECK(r.word == p::kRefusedAlreadyServed);
  CHECK(p::new_conn(*ConnId::parse(kId), longest).size() <= 256);
  CHECK(p::is_service_name("a"));
  CHECK_FALSE(p::is_service_name(""));
  CHECK_FALSE(p::is_service_name(longest + "s"));
}

// --- the pool extension ---

TEST_CASE("protocol pool: POOL, PARK, TAKEN and READY round-trip") {
  const ConnId id = *ConnId::parse(kId);
  CHECK(expect_message(strip(p::pool(0)), p::Verb::pool).count == 0);
  CHECK(expect_message(strip(p::pool(8)), p::Verb::pool).count == 8);
  CHECK(expect_message(strip(p::pool(p::kMaxPoolRequest)), p::Verb::pool).count ==
        p::kMaxPoolRequest);
  CHECK(expect_message(strip(p::park(id)), p::Verb::park).id == id);
  CHECK(expect_message(strip(p::taken(id)), p::Verb::taken).id == id);
  CHECK(expect_message(strip(p::ready(id)), p::Verb::ready).id == id);
  CHECK(strip(p::park(id)) == "PARK " + kId);
}

TEST_CASE("protocol pool: bad counts and ids are malformed") {
  for (const std::string& line :
       std::vector<std::string>{"POOL", "POOL -1", "POOL 01", "POOL 1025", "POOL 99999", "POOL x",
                                "POOL 1 2", "PARK", "PARK " + kId + " x", "PARK abc", "TAKEN",
                                "READY " + kId.substr(1), "TAKEN " + kId + " x"}) {
    expect_bad_message(line);
  }
}
