// Log text a peer controls: escaped so that it cannot forge key=value fields or lines.
#include "tunnel/log.hpp"

#include <catch2/catch.hpp>

TEST_CASE("log: peer text is escaped inside quotes") {
  using tunnel::log::escaped;
  CHECK(escaped("plain words") == "plain words");
  // A peer trying to close the quoted field and add its own fields.
  CHECK(escaped(R"(OK " event=client-online session=999 x=")") ==
        R"(OK \" event=client-online session=999 x=\")");
  CHECK(escaped("back\\slash") == "back\\\\slash");
  CHECK(escaped("new\nline\x01") == "new\\x0aline\\x01");
  CHECK(escaped("\xff") == "\\xff");
}
