// The auth extension's computations against the worked example in docs/PROTOCOL.md (whose values
// were computed with Python's hmac module, not with this code), and the properties the design
// relies on: every proof depends on every transcript field, and a malformed proof never matches.
#include "tunnel/auth.hpp"

#include <catch2/catch.hpp>
#include <set>
#include <string>

using namespace tunnel;

namespace {

// docs/PROTOCOL.md, "Worked example".
const std::string kToken = "Qm9yaW5nIGV4YW1wbGUgdG9rZW4sIG5ldmVyIHVzZSBtZQ";
auth::Transcript example() {
  return {"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
          "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1e0f", "lan-host-1", ""};
}
const ConnId kId = *ConnId::parse("6f0d8a3c52e14b7f9a01c2d3e4f5a6b7");

}  // namespace

TEST_CASE("auth: the worked example of docs/PROTOCOL.md") {
  const auto t = example();
  CHECK(crypto::to_hex(auth::client_proof(kToken, t)) ==
        "040174fe4c0e16ed6cdaef9ed99937c48ea4b8a187ad5396489ceae41b5e78fc");
  CHECK(crypto::to_hex(auth::server_proof(kToken, t)) ==
        "5a1e7c413c793df0f3f75108e17f4ec13de6f447908dd0d40655c28a5e1cffca");
  const auto key = auth::session_key(kToken, t);
  CHECK(crypto::to_hex(key) == "f4768701e7057b3bdff3e4d066281cdc645389f7b0917fdca78468552e756f0d");
  CHECK(crypto::to_hex(auth::data_proof(key, kId)) ==
        "908bee6cd08631703f024a0556ef41c4c46c48f027d7bcd4a27db58f7d67794e");
}

TEST_CASE("auth: with TLS the exporter value is part of the proof") {
  auto t = example();
  for (int i = 0; i < 32; ++i) t.binding += "a1";
  CHECK(crypto::to_hex(auth::client_proof(kToken, t)) ==
        "0d66db9af40a11873ee2a25222c8f7fea2c95271abb8a579bcc31ef68fda0817");
}

TEST_CASE("auth: each proof changes with every field, the token and the message type") {
  const auto base = example();
  std::set<std::string> seen;
  auto note = [&](const crypto::Digest& d) { return seen.insert(crypto::to_hex(d)).second; };
  CHECK(note(auth::client_proof(kToken, base)));
  CHECK(note(auth::server_proof(kToken, base)));
  CHECK(note(auth::session_key(kToken, base)));
  CHECK(note(auth::client_proof(kToken + "x", base)));
  auto changed = base;
  changed.server_nonce[0] = '1';
  CHECK(note(auth::client_proof(kToken, changed)));
  changed = base;
  changed.client_nonce[63] = '0';
  CHECK(note(auth::client_proof(kToken, changed)));
  changed = base;
  changed.name = "lan-host-2";
  CHECK(note(auth::client_proof(kToken, changed)));
  // Moving a character between fields cannot produce the same message: `\n` separates them.
  changed = base;
  changed.name = "lan-host-";
  changed.binding = "1";
  CHECK(note(auth::client_proof(kToken, changed)));
}

TEST_CASE("auth: a data proof holds for one id under one session key") {
  const auto key = auth::session_key(kToken, example());
  auto other_session = example();
  other_session.server_nonce[5] = 'f';
  const auto other_key = auth::session_key(kToken, other_session);
  const auto proof = crypto::to_hex(auth::data_proof(key, kId));
  CHECK(auth::proof_matches(auth::data_proof(key, kId), proof));
  CHECK_FALSE(auth::proof_matches(auth::data_proof(key, ConnId::random()), proof));
  CHECK_FALSE(auth::proof_matches(auth::data_proof(other_key, kId), proof));
}

TEST_CASE("auth: proof_matches refuses anything but the exact 64 lowercase hex digits") {
  const auto expected = auth::client_proof(kToken, example());
  const auto hex = crypto::to_hex(expected);
  CHECK(auth::proof_matches(expected, hex));
  std::string upper = hex;
  for (auto& c : upper) c = static_cast<char>(std::toupper(c));
  CHECK_FALSE(auth::proof_matches(expected, upper));
  CHECK_FALSE(auth::proof_matches(expected, hex.substr(0, 63)));
  CHECK_FALSE(auth::proof_matches(expected, hex + "0"));
  CHECK_FALSE(auth::proof_matches(expected, ""));
  // A proof of all zeroes is what a malformed one is compared against: it must not pass either.
  CHECK_FALSE(auth::proof_matches(crypto::Digest{}, "zz" + std::string(62, '0')));
  CHECK_FALSE(auth::proof_matches(crypto::Digest{}, std::string(63, '0')));
}

TEST_CASE("auth: names are 1 to 64 of letters, digits, dot, underscore and dash") {
  CHECK(auth::is_name("default"));
  CHECK(auth::is_name("lan-host_1.example"));
  CHECK(auth::is_name(std::string(64, 'a')));
  CHECK_FALSE(auth::is_name(""));
  CHECK_FALSE(auth::is_name(std::string(65, 'a')));
  CHECK_FALSE(auth::is_name("two words"));
  CHECK_FALSE(auth::is_name("slash/name"));
  CHECK_FALSE(auth::is_name("caf\xc3\xa9"));
}

TEST_CASE("auth: nonces are fresh 64-digit hex strings") {
  std::set<std::string> nonces;
  for (int i = 0; i < 100; ++i) {
    auto nonce = auth::new_nonce();
    CHECK(auth::is_hex64(nonce));
    nonces.insert(nonce);
  }
  CHECK(nonces.size() == 100);
}
