// fuzz-protocol: the wire codec of docs/PROTOCOL.md under arbitrary bytes.
//
// Input layout: byte 0's low 3 bits say how many split bytes follow (0: the stream is fed in one
// piece); the split bytes, used in turn, give the sizes of the pieces fed to LineReader (1 to 64
// bytes). The rest is the byte stream a peer would send on port B.
//
// Properties (a violation aborts with the property's text):
// - LineReader yields the same lines and the same overflow whatever the splits, as a one-pass
//   reference split of the whole stream does; no line holds `\n` or exceeds kMaxLineLength.
// - Every line that parse_hello or parse_message accepts is formatted back by the matching
//   formatter into exactly that line plus `\n`, which parses back to an equal value. The grammar
//   is canonical (single spaces, lowercase hex), so anything else is a codec bug.
// - A Malformed result carries a known code, a reason, and an ERR answer that is itself a valid
//   line; its `claimed` kind agrees with the line's second word.
// - auth::proof_matches accepts a word exactly when it is the hex of the digest compared, for every
//   word of every line; the proofs in AUTH-PROOF, AUTH-OK and DATA lines are checked against the
//   HMACs of docs/PROTOCOL.md's worked example.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "tunnel/auth.hpp"
#include "tunnel/crypto.hpp"
#include "tunnel/line_reader.hpp"
#include "tunnel/protocol.hpp"

namespace {

using namespace tunnel;
namespace proto = tunnel::protocol;

[[noreturn]] void violated(const char* property, int line) {
  std::fprintf(stderr, "fuzz-protocol: property violated (protocol_fuzz.cpp:%d): %s\n", line,
               property);
  std::abort();
}

#define CHECK(property)                             \
  do {                                              \
    if (!(property)) violated(#property, __LINE__); \
  } while (false)

// The worked example of docs/PROTOCOL.md, "Authentication": fuzzed names, nonces and ids are
// combined with these so that the HMAC inputs come from the input.
constexpr std::string_view kToken = "Qm9yaW5nIGV4YW1wbGUgdG9rZW4sIG5ldmVyIHVzZSBtZQ";
constexpr std::string_view kServerNonce =
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
constexpr std::string_view kClientNonce =
    "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1e0f";
constexpr std::string_view kName = "lan-host-1";

// The pieces of the stream, as the input's header asks.
std::vector<std::string_view> split(std::string_view header, std::string_view stream) {
  std::vector<std::string_view> pieces;
  if (header.empty()) {
    pieces.push_back(stream);
    return pieces;
  }
  size_t turn = 0;
  while (!stream.empty()) {
    size_t size = static_cast<unsigned char>(header[turn++ % header.size()]) % 64 + 1;
    if (size > stream.size()) size = stream.size();
    pieces.push_back(stream.substr(0, size));
    stream.remove_prefix(size);
  }
  return pieces;
}

// What the stream splits into when read in one pass: the lines, whether it overflows, and the
// unterminated tail left buffered when it does not (0 when it does).
struct Framing {
  std::vector<std::string> lines;
  bool overflowed = false;
  size_t tail = 0;
};

Framing reference_framing(std::string_view stream) {
  Framing f;
  size_t pos = 0;
  for (;;) {
    size_t newline = stream.find('\n', pos);
    if (newline == std::string_view::npos) {
      f.overflowed = stream.size() - pos >= kMaxLineLength;
      f.tail = f.overflowed ? 0 : stream.size() - pos;
      return f;
    }
    if (newline - pos + 1 > kMaxLineLength) {
      f.overflowed = true;
      return f;
    }
    f.lines.emplace_back(stream.substr(pos, newline - pos));
    pos = newline + 1;
  }
}

Framing read_in_pieces(const std::vector<std::string_view>& pieces) {
  LineReader reader;
  Framing f;
  for (auto piece : pieces) {
    reader.feed(piece);
    while (auto line = reader.next()) f.lines.push_back(std::move(*line));
    if (reader.overflowed()) break;  // the daemons close the connection here
  }
  f.overflowed = reader.overflowed();
  f.tail = f.overflowed ? 0 : reader.buffered();
  return f;
}

void check_formatted(const std::string& formatted) {
  CHECK(!formatted.empty());
  CHECK(formatted.size() <= kMaxLineLength);
  CHECK(formatted.back() == '\n');
  CHECK(formatted.find('\n') == formatted.size() - 1);
}

std::string_view without_newline(const std::string& formatted) {
  return std::string_view(formatted).substr(0, formatted.size() - 1);
}

std::vector<std::string_view> words_of(std::string_view line) {
  std::vector<std::string_view> words;
  size_t start = 0;
  while (start <= line.size()) {
    size_t space = line.find(' ', start);
    if (space == std::string_view::npos) space = line.size();
    words.push_back(line.substr(start, space - start));
    start = space + 1;
  }
  return words;
}

// proof_matches is true exactly for the digest's own hex, and a malformed word never matches.
void check_proof_word(std::string_view word) {
  static const crypto::Digest kZero{};
  CHECK(auth::proof_matches(kZero, word) == (word == std::string(64, '0')));
  if (!auth::is_hex64(word)) return;
  auto digest = crypto::digest_from_hex(word);
  CHECK(digest.has_value());
  CHECK(crypto::to_hex(*digest) == word);
  CHECK(auth::proof_matches(*digest, word));
  crypto::Digest other = *digest;
  other[word.size() % other.size()] ^= 0x01;
  CHECK(!auth::proof_matches(other, word));
}

// A proof checked against the HMAC it should be: a match exactly when the text is its hex.
void check_against(const crypto::Digest& expected, std::string_view proof) {
  CHECK(auth::proof_matches(expected, proof) == (crypto::to_hex(expected) == proof));
}

auth::Transcript example_transcript() {
  return {std::string(kServerNonce), std::string(kClientNonce), std::string(kName), ""};
}

void check_malformed(const proto::Malformed& bad, bool from_hello) {
  CHECK(bad.code == proto::kErrBadRequest || (from_hello && bad.code == proto::kErrVersion));
  CHECK(!bad.reason.empty());
  // The server sends this answer to a bad control hello: it must be a valid line itself.
  auto answer = proto::err(bad.code, bad.reason);
  check_formatted(answer);
  auto parsed = proto::parse_message(without_newline(answer));
  auto* message = std::get_if<proto::Message>(&parsed);
  CHECK(message != nullptr);
  CHECK(message->verb == proto::Verb::err);
  CHECK(message->word == bad.code);
  CHECK(message->text == bad.reason);
}

void check_hello(std::string_view line) {
  auto hello = proto::parse_hello(line);
  if (auto* control = std::get_if<proto::ControlHello>(&hello)) {
    auto formatted = proto::control_hello(control->features);
    check_formatted(formatted);
    CHECK(without_newline(formatted) == line);
    auto back = proto::parse_hello(without_newline(formatted));
    auto* again = std::get_if<proto::ControlHello>(&back);
    CHECK(again != nullptr && again->features == control->features);
  } else if (auto* data = std::get_if<proto::DataHello>(&hello)) {
    CHECK(data->proof.empty() || auth::is_hex64(data->proof));
    auto formatted = proto::data_hello(data->id, data->proof);
    check_formatted(formatted);
    CHECK(without_newline(formatted) == line);
    auto back = proto::parse_hello(without_newline(formatted));
    auto* again = std::get_if<proto::DataHello>(&back);
    CHECK(again != nullptr && again->id == data->id && again->proof == data->proof);
    if (!data->proof.empty()) {
      auto key = auth::session_key(kToken, example_transcript());
      check_against(auth::data_proof(key, data->id), data->proof);
    }
  } else {
    const auto& bad = std::get<proto::Malformed>(hello);
    check_malformed(bad, true);
    auto words = words_of(line);
    bool says_data = words.size() >= 2 && words[1] == "DATA";
    bool says_control = words.size() >= 2 && words[1] == "CONTROL";
    CHECK((bad.claimed == proto::HelloKind::data) == says_data);
    CHECK((bad.claimed == proto::HelloKind::control) == says_control);
  }
}

bool same(const proto::Message& a, const proto::Message& b) {
  return a.verb == b.verb && a.id == b.id && a.word == b.word && a.text == b.text &&
         a.features == b.features && a.nonce == b.nonce && a.proof == b.proof &&
         a.service == b.service && a.count == b.count;
}

// The formatter for a parsed message, or nothing for a verb nobody formats (unknown).
std::optional<std::string> format(const proto::Message& m) {
  switch (m.verb) {
    case proto::Verb::ok:
      return proto::ok(m.features);
    case proto::Verb::err:
      return proto::err(m.word, m.text);
    case proto::Verb::new_conn:
      return proto::new_conn(m.id, m.service);
    case proto::Verb::close_conn:
      return proto::close_conn(m.id);
    case proto::Verb::fail:
      return proto::fail(m.id, m.word);
    case proto::Verb::ping:
      return proto::ping(m.word);
    case proto::Verb::pong:
      return proto::pong(m.word);
    case proto::Verb::auth_challenge:
      return proto::auth_challenge(m.nonce);
    case proto::Verb::auth_proof:
      return proto::auth_proof(m.word, m.nonce, m.proof);
    case proto::Verb::auth_ok:
      return proto::auth_ok(m.proof);
    case proto::Verb::serve:
      return proto::serve(m.service);
    case proto::Verb::serving:
      return proto::serving(m.service);
    case proto::Verb::refused:
      return proto::refused(m.service, m.word);
    case proto::Verb::pool:
      return proto::pool(m.count);
    case proto::Verb::park:
      return proto::park(m.id);
    case proto::Verb::taken:
      return proto::taken(m.id);
    case proto::Verb::ready:
      return proto::ready(m.id);
    case proto::Verb::unknown:
      return std::nullopt;
  }
  return std::nullopt;
}

void check_message(std::string_view line) {
  auto parsed = proto::parse_message(line);
  if (auto* bad = std::get_if<proto::Malformed>(&parsed)) {
    check_malformed(*bad, false);
    return;
  }
  const auto& m = std::get<proto::Message>(parsed);
  auto formatted = format(m);
  if (!formatted) {
    // Unknown verbs are ignored by receivers, but the word must be the line's first.
    CHECK(m.verb == proto::Verb::unknown);
    CHECK(!m.word.empty() && words_of(line)[0] == m.word);
    return;
  }
  check_formatted(*formatted);
  CHECK(without_newline(*formatted) == line);
  auto back = proto::parse_message(without_newline(*formatted));
  auto* again = std::get_if<proto::Message>(&back);
  CHECK(again != nullptr && same(*again, m));

  if (m.verb == proto::Verb::auth_proof) {
    CHECK(auth::is_name(m.word) && auth::is_hex64(m.nonce) && auth::is_hex64(m.proof));
    // The server's side of the exchange: its nonce fixed, the client's fields from the input.
    auth::Transcript t{std::string(kServerNonce), m.nonce, m.word, ""};
    check_against(auth::client_proof(kToken, t), m.proof);
  } else if (m.verb == proto::Verb::auth_ok) {
    check_against(auth::server_proof(kToken, example_transcript()), m.proof);
  }
}

void check_line(std::string_view line) {
  check_hello(line);
  check_message(line);
  for (auto word : words_of(line)) check_proof_word(word);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  if (input.empty()) return 0;
  size_t split_bytes = static_cast<unsigned char>(input[0]) & 0x07;
  if (input.size() < 1 + split_bytes) return 0;
  std::string_view header = input.substr(1, split_bytes);
  std::string_view stream = input.substr(1 + split_bytes);

  Framing expected = reference_framing(stream);
  Framing got = read_in_pieces(split(header, stream));
  CHECK(got.lines == expected.lines);
  CHECK(got.overflowed == expected.overflowed);
  CHECK(got.tail == expected.tail);

  for (const auto& line : got.lines) {
    CHECK(line.find('\n') == std::string::npos);
    CHECK(line.size() + 1 <= kMaxLineLength);
    check_line(line);
  }
  // The parsers also see raw bytes no reader has framed (embedded `\n`, NUL), as a shorter-than-
  // the-limit line, so that a parser relying on the reader's filtering is caught too.
  check_line(stream.substr(0, kMaxLineLength - 1));
  return 0;
}
