// LineReader: splitting a byte stream into protocol lines of at most 256 bytes (with the `\n`),
// whatever way the bytes arrive.
#include "tunnel/line_reader.hpp"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

using tunnel::kMaxLineLength;
using tunnel::LineReader;

namespace {

std::vector<std::string> drain(LineReader& reader) {
  std::vector<std::string> lines;
  while (auto line = reader.next()) lines.push_back(*line);
  return lines;
}

}  // namespace

TEST_CASE("line reader: the limit is 256 bytes counting the newline") {
  REQUIRE(kMaxLineLength == 256);
}

TEST_CASE("line reader: nothing is returned before a newline arrives") {
  LineReader reader;
  CHECK_FALSE(reader.next().has_value());
  reader.feed("PING abc");
  CHECK_FALSE(reader.next().has_value());
  CHECK(reader.buffered() == 8);
  CHECK_FALSE(reader.overflowed());
}

TEST_CASE("line reader: one line in one feed comes back without its newline") {
  LineReader reader;
  reader.feed("PING abc\n");
  auto line = reader.next();
  REQUIRE(line.has_value());
  CHECK(*line == "PING abc");
  CHECK_FALSE(reader.next().has_value());
  CHECK(reader.buffered() == 0);
}

TEST_CASE("line reader: several lines in one feed come back in order") {
  LineReader reader;
  reader.feed("NEW 1\nCLOSE 2\nPING x\nPON");
  CHECK(drain(reader) == std::vector<std::string>{"NEW 1", "CLOSE 2", "PING x"});
  CHECK(reader.buffered() == 3);
  reader.feed("G y\n");
  CHECK(drain(reader) == std::vector<std::string>{"PONG y"});
}

TEST_CASE("line reader: a line split across many feeds is reassembled") {
  const std::string line = "TUNNEL/1 DATA 0123456789abcdef0123456789abcdef";
  SECTION("one byte per feed") {
    LineReader reader;
    for (char c : line) {
      reader.feed(std::string_view(&c, 1));
      CHECK_FALSE(reader.next().has_value());
    }
    reader.feed("\n");
    auto got = reader.next();
    REQUIRE(got.has_value());
    CHECK(*got == line);
  }
  SECTION("uneven chunks, the newline arriving with the start of the next line") {
    LineReader reader;
    reader.feed(line.substr(0, 7));
    reader.feed(line.substr(7, 20));
    CHECK_FALSE(reader.next().has_value());
    reader.feed(line.substr(27) + "\nPI");
    reader.feed("NG t\n");
    CHECK(drain(reader) == std::vector<std::string>{line, "PING t"});
  }
}

TEST_CASE("line reader: empty lines are returned as empty strings") {
  LineReader reader;
  reader.feed("\n\nOK\n");
  CHECK(drain(reader) == std::vector<std::string>{"", "", "OK"});
}

TEST_CASE("line reader: carriage returns and other bytes are passed through untouched") {
  // Judging the bytes is the codec's job; the reader only frames.
  LineReader reader;
  reader.feed(std::string("OK\r\n\x01\xff\n", 7));
  CHECK(drain(reader) == std::vector<std::string>{"OK\r", std::string("\x01\xff", 2)});
}

TEST_CASE("line reader: a line of exactly 256 bytes with its newline is accepted") {
  LineReader reader;
  const std::string body(kMaxLineLength - 1, 'x');
  reader.feed(body + "\n");
  auto line = reader.next();
  REQUIRE(line.has_value());
  CHECK(line->size() == kMaxLineLength - 1);
  CHECK_FALSE(reader.overflowed());
}

TEST_CASE("line reader: 255 bytes without a newline are still waiting and not overflowed") {
  LineReader reader;
  reader.feed(std::string(kMaxLineLength - 1, 'x'));
  CHECK_FALSE(reader.next().has_value());
  CHECK_FALSE(reader.overflowed());
  reader.feed("\n");
  CHECK(reader.next().has_value());
}

TEST_CASE("line reader: a line of 257 bytes with its newline overflows") {
  LineReader reader;
  reader.feed(std::string(kMaxLineLength, 'x') + "\n");
  CHECK_FALSE(reader.next().has_value());
  CHECK(reader.overflowed());
}

TEST_CASE("line reader: 256 bytes without a newline overflow before the newline arrives") {
  // Whatever comes next, this line can no longer fit, so the peer is cut off at once.
  LineReader reader;
  reader.feed(std::string(kMaxLineLength, 'x'));
  CHECK_FALSE(reader.next().has_value());
  CHECK(reader.overflowed());
}

TEST_CASE("line reader: an oversize line arriving in small pieces overflows") {
  LineReader reader;
  for (int i = 0; i < 100 && !reader.overflowed(); ++i) {
    reader.feed("0123456789");
    reader.next();
  }
  CHECK(reader.overflowed());
  CHECK(reader.buffered() <= kMaxLineLength + 10);
}

TEST_CASE("line reader: after an overflow nothing more is returned - not even good lines") {
  LineReader reader;
  reader.feed("OK\n" + std::string(300, 'y') + "\nPING t\n");
  auto first = reader.next();
  REQUIRE(first.has_value());
  CHECK(*first == "OK");
  CHECK_FALSE(reader.next().has_value());
  CHECK(reader.overflowed());
  reader.feed("PONG t\n");
  CHECK_FALSE(reader.next().has_value());
  CHECK(reader.overflowed());
}

TEST_CASE("line reader: good lines before an oversize one in the same feed are delivered") {
  LineReader reader;
  reader.feed("NEW a\nNEW b\n" + std::string(kMaxLineLength + 5, 'z') + "\n");
  CHECK(drain(reader) == std::vector<std::string>{"NEW a", "NEW b"});
  CHECK(reader.overflowed());
}

TEST_CASE("line reader: the limit applies per line and not to the whole buffer") {
  // Many full-size lines in one feed are fine: each one is within the limit.
  LineReader reader;
  std::string feed;
  const std::string body(kMaxLineLength - 1, 'q');
  for (int i = 0; i < 20; ++i) feed += body + "\n";
  reader.feed(feed);
  auto lines = drain(reader);
  CHECK(lines.size() == 20);
  CHECK_FALSE(reader.overflowed());
}

TEST_CASE("line reader: a long stream of lines does not accumulate consumed bytes") {
  LineReader reader;
  size_t count = 0;
  for (int i = 0; i < 10000; ++i) {
    reader.feed("PING token\nPO");
    reader.feed("NG token\n");
    count += drain(reader).size();
    REQUIRE(reader.buffered() == 0);
  }
  CHECK(count == 20000);
}
