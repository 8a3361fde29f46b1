// ConnId: 128 random bits written as exactly 32 lowercase hex digits; anything else is refused.
#include "tunnel/conn_id.hpp"

#include <catch2/catch.hpp>
#include <string>
#include <unordered_set>

using tunnel::ConnId;

TEST_CASE("conn id: hex is 32 lowercase hex digits") {
  for (int i = 0; i < 1000; ++i) {
    auto hex = ConnId::random().hex();
    INFO(hex);
    REQUIRE(hex.size() == 32);
    REQUIRE(hex.find_first_not_of("0123456789abcdef") == std::string::npos);
  }
}

TEST_CASE("conn id: parse accepts 32 lowercase hex digits and hex gives them back") {
  for (const std::string& text : std::vector<std::string>{
           "00000000000000000000000000000000", "ffffffffffffffffffffffffffffffff",
           "0123456789abcdef0123456789abcdef", "fedcba9876543210a5a5a5a55a5a5a5a"}) {
    auto id = ConnId::parse(text);
    INFO(text);
    REQUIRE(id.has_value());
    CHECK(id->hex() == text);
  }
}

TEST_CASE("conn id: parse rejects uppercase or short or long or non-hex or padded text") {
  const std::string good = "0123456789abcdef0123456789abcdef";
  for (const std::string& text : std::vector<std::string>{
           std::string(""),
           good.substr(0, 31),
           good + "0",
           std::string(64, 'a'),
           "0123456789ABCDEF0123456789ABCDEF",
           "0123456789abcdeF0123456789abcdef",
           "0123456789abcdef0123456789abcdeg",
           "0x23456789abcdef0123456789abcdef",
           " 123456789abcdef0123456789abcdef",
           "0123456789abcdef0123456789abcde ",
           "0123456789abcdef-123456789abcdef",
           std::string("0123456789abcdef\0"
                       "123456789abcdef",
                       32),
       }) {
    INFO("text: '" << text << "'");
    CHECK_FALSE(ConnId::parse(text).has_value());
  }
}

TEST_CASE("conn id: parse and hex round-trip random ids") {
  for (int i = 0; i < 1000; ++i) {
    auto id = ConnId::random();
    auto back = ConnId::parse(id.hex());
    REQUIRE(back.has_value());
    REQUIRE(*back == id);
    REQUIRE(back->hash() == id.hash());
  }
}

TEST_CASE("conn id: 10000 random ids are all distinct") {
  std::unordered_set<ConnId, tunnel::ConnIdHash> ids;
  std::unordered_set<std::string> hexes;
  for (int i = 0; i < 10000; ++i) {
    auto id = ConnId::random();
    ids.insert(id);
    hexes.insert(id.hex());
  }
  CHECK(ids.size() == 10000);
  CHECK(hexes.size() == 10000);
}

TEST_CASE("conn id: random ids are not sequential and use every hex digit") {
  // A weak but cheap sanity check on the randomness: consecutive ids share no long prefix and all
  // sixteen digits show up in every position over a few thousand ids.
  std::string previous = ConnId::random().hex();
  int long_common_prefixes = 0;
  bool seen[32][16] = {};
  for (int i = 0; i < 4000; ++i) {
    std::string hex = ConnId::random().hex();
    size_t common = 0;
    while (common < 32 && hex[common] == previous[common]) ++common;
    if (common >= 4) ++long_common_prefixes;
    for (size_t pos = 0; pos < 32; ++pos) {
      char c = hex[pos];
      seen[pos][c <= '9' ? c - '0' : c - 'a' + 10] = true;
    }
    previous = hex;
  }
  CHECK(long_common_prefixes < 10);  // expected about 4000 / 65536
  int missing = 0;
  for (auto& position : seen)
    for (bool s : position) missing += s ? 0 : 1;
  CHECK(missing == 0);
}

TEST_CASE("conn id: short_hex is the first 8 digits") {
  auto id = *ConnId::parse("89abcdef0123456789abcdef01234567");
  CHECK(id.short_hex() == "89abcdef");
}

TEST_CASE("conn id: equality compares every byte") {
  auto a = *ConnId::parse("0123456789abcdef0123456789abcdef");
  auto b = *ConnId::parse("0123456789abcdef0123456789abcdee");
  auto c = *ConnId::parse("1123456789abcdef0123456789abcdef");
  CHECK(a == a);
  CHECK_FALSE(a == b);
  CHECK_FALSE(a == c);
  CHECK(a == *ConnId::parse(a.hex()));
}
