// The auth extension's primitives: HMAC-SHA256 against RFC 4231's test vectors, constant-time
// comparison, random bytes, hex both ways.
#include "tunnel/crypto.hpp"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

using namespace tunnel::crypto;

TEST_CASE("crypto: HMAC-SHA256 matches RFC 4231") {
  // Test case 1: a 20-byte key of 0x0b.
  CHECK(to_hex(hmac_sha256(std::string(20, '\x0b'), "Hi There")) ==
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  // Test case 2: a key shorter than the output.
  CHECK(to_hex(hmac_sha256("Jefe", "what do ya want for nothing?")) ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // Test case 6: a key longer than the block, hashed first.
  CHECK(to_hex(hmac_sha256(std::string(131, '\xaa'),
                           "Test Using Larger Than Block-Size Key - Hash Key First")) ==
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

TEST_CASE("crypto: constant-time comparison tells equal from different, lengths included") {
  const std::vector<uint8_t> a{1, 2, 3, 4}, same{1, 2, 3, 4}, last{1, 2, 3, 5}, shorter{1, 2, 3};
  CHECK(equal_constant_time(a, same));
  CHECK_FALSE(equal_constant_time(a, last));
  CHECK_FALSE(equal_constant_time(a, shorter));
  CHECK(equal_constant_time(std::span<const uint8_t>{}, std::span<const uint8_t>{}));
}

TEST_CASE("crypto: random bytes differ from call to call and fill the whole buffer") {
  std::vector<uint8_t> first(32), second(32);
  random_bytes(first);
  random_bytes(second);
  CHECK(first != second);
  CHECK(first != std::vector<uint8_t>(32, 0));
}

TEST_CASE("crypto: a digest goes to hex and back; bad hex is refused") {
  Digest d = hmac_sha256("k", "m");
  auto back = digest_from_hex(to_hex(d));
  REQUIRE(back.has_value());
  CHECK(*back == d);
  CHECK_FALSE(digest_from_hex("abc").has_value());
  CHECK_FALSE(digest_from_hex(std::string(64, 'G')).has_value());
  CHECK_FALSE(digest_from_hex(std::string(64, 'A')).has_value());  // uppercase is not the format
}
