// Durations for flags and config: a whole number and a unit (ms, s, m, h); everything else is
// refused with a message that quotes the text.
#include "tunnel/duration.hpp"

#include <catch2/catch.hpp>
#include <stdexcept>
#include <string>

using namespace std::chrono_literals;
using tunnel::Duration;
using tunnel::format_duration;
using tunnel::parse_duration;

namespace {

std::string rejection_of(const std::string& text) {
  try {
    auto d = parse_duration(text);
    FAIL("'" << text << "' was accepted as " << d.count() << " ms");
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return {};
}

}  // namespace

TEST_CASE("duration: the four units") {
  CHECK(parse_duration("500ms") == 500ms);
  CHECK(parse_duration("10s") == 10s);
  CHECK(parse_duration("2m") == 2min);
  CHECK(parse_duration("1h") == 1h);
  CHECK(parse_duration("0ms") == 0ms);
  CHECK(parse_duration("0s") == 0ms);
  CHECK(parse_duration("1ms") == 1ms);
  CHECK(parse_duration("90s") == 90s);
  CHECK(parse_duration("007s") == 7s);
}

TEST_CASE("duration: a missing unit is rejected with a message") {
  auto message = rejection_of("10");
  CHECK_THAT(message, Catch::Contains("'10'"));
  CHECK_THAT(message, Catch::Contains("unit"));
}

TEST_CASE("duration: an unknown unit is rejected with a message") {
  for (const std::string& text : std::vector<std::string>{
           "10sec", "10S", "10MS", "5d", "5us", "10 s", "1.5s", "10s ", "1h30m", "10ms5"}) {
    auto message = rejection_of(text);
    CHECK_THAT(message, Catch::Contains("'" + text + "'"));
  }
}

TEST_CASE("duration: negative or signed or empty or unit-only text is rejected") {
  for (const std::string& text :
       std::vector<std::string>{"-5s", "+5s", "", "s", "ms", " 5s", "-0s"}) {
    auto message = rejection_of(text);
    CHECK_FALSE(message.empty());
  }
}

TEST_CASE("duration: an overflowing number is rejected and not wrapped") {
  CHECK_FALSE(rejection_of("99999999999999999999999999ms").empty());
  CHECK_FALSE(rejection_of("18446744073709551615ms").empty());
  CHECK_FALSE(rejection_of("9223372036854775808h").empty());
  CHECK_FALSE(rejection_of("5124095576030432h").empty());  // wraps int64 milliseconds
  CHECK_FALSE(rejection_of("100000000000h").empty());
}

TEST_CASE("duration: large but sane values are kept exactly") {
  CHECK(parse_duration("24h") == 24h);
  CHECK(parse_duration("1000h") == 1000h);
  CHECK(parse_duration("86400000ms") == 24h);
}

TEST_CASE("duration: format picks the largest exact unit") {
  CHECK(format_duration(500ms) == "500ms");
  CHECK(format_duration(1500ms) == "1500ms");
  CHECK(format_duration(10s) == "10s");
  CHECK(format_duration(90s) == "90s");
  CHECK(format_duration(2min) == "2m");
  CHECK(format_duration(1h) == "1h");
  CHECK(format_duration(0ms) == "0s");
}

TEST_CASE("duration: format and parse round-trip") {
  for (Duration d : {Duration(0), Duration(1), Duration(999), Duration(1000), Duration(61000),
                     Duration(60000), Duration(3600000), Duration(3660000), Duration(86400000)}) {
    INFO(d.count() << " ms formatted as " << format_duration(d));
    CHECK(parse_duration(format_duration(d)) == d);
  }
}
