// The token file of the auth extension: what is accepted, what is refused and how the refusal
// reads (the file named, the fix given, the token never shown).
#include "tunnel/token_file.hpp"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>

using tunnel::read_token_file;
using tunnel::resolve_token_path;
using tunnel::token_bits;

namespace {

// A private directory for the test's files, removed at the end.
struct TempDir {
  std::string path;
  TempDir() {
    char pattern[] = "/tmp/token-test.XXXXXX";
    REQUIRE(::mkdtemp(pattern) != nullptr);
    path = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string write(const std::string& name, const std::string& content, mode_t mode) {
    std::string file = path + "/" + name;
    std::ofstream(file, std::ios::binary) << content;
    REQUIRE(::chmod(file.c_str(), mode) == 0);
    return file;
  }
};

// The refusal's one line.
std::string refusal(const std::string& file) {
  try {
    read_token_file(file);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  FAIL("expected " << file << " to be refused");
  return {};
}

const std::string kGood =
    "q8Jx0c3VJmQn2Zb5d1Yk7w4rT6uP9sLhAa2Gf0Xe3Ns=";  // 32 random bytes, base64

}  // namespace

TEST_CASE("token file: a private file with a long enough token is read without its line end") {
  TempDir dir;
  CHECK(read_token_file(dir.write("token", kGood + "\n", 0600)) == kGood);
  CHECK(read_token_file(dir.write("hex", std::string(32, 'a') + "\r\n", 0400)) ==
        std::string(32, 'a'));
}

TEST_CASE("token file: refused when missing, with the file named and a way to make one") {
  auto line = refusal("/nonexistent/token");
  CHECK_THAT(line, Catch::Contains("/nonexistent/token"));
  CHECK_THAT(line, Catch::Contains("No such file"));
  CHECK_THAT(line, Catch::Contains("/dev/urandom"));
}

TEST_CASE("token file: refused when group or others may read it, with the chmod to run") {
  TempDir dir;
  auto file = dir.write("token", kGood, 0644);
  auto line = refusal(file);
  CHECK_THAT(line, Catch::Contains("mode 0644"));
  CHECK_THAT(line, Catch::Contains("chmod 600 " + file));
  CHECK_THAT(line, !Catch::Contains(kGood));  // never the secret itself
  CHECK_THAT(refusal(dir.write("group", kGood, 0640)), Catch::Contains("group or others"));
}

TEST_CASE("token file: refused when empty, too short, or holding spaces or control characters") {
  TempDir dir;
  CHECK_THAT(refusal(dir.write("empty", "\n", 0600)), Catch::Contains("empty"));
  auto short_line = refusal(dir.write("short", std::string(31, 'f'), 0600));  // 124 bits of hex
  CHECK_THAT(short_line, Catch::Contains("124 bits, fewer than 128"));
  CHECK_THAT(refusal(dir.write("space", "abc def" + kGood, 0600)), Catch::Contains("spaces"));
  CHECK_THAT(refusal(dir.write("nul", kGood + std::string(1, '\0') + kGood, 0600)),
             Catch::Contains("control"));
  CHECK_THAT(refusal(dir.write("big", std::string(5000, 'a'), 0600)), Catch::Contains("4 KiB"));
}

TEST_CASE("token file: bits are judged by the narrowest alphabet the token fits") {
  CHECK(token_bits(std::string(32, 'a')) == 128);       // hex
  CHECK(token_bits("ZZZZZZZZZZZZZZZZZZZZZZ") == 132);   // base64, 22 characters
  CHECK(token_bits("ZZZZZZZZZZZZZZZZZZZZZ==") == 126);  // padding carries nothing
  CHECK(token_bits("!!!!!!!!!!!!!!!!!!!!!!") == 132);   // printable, counted as 6 bits
}

TEST_CASE("token file: a relative name is found under $CREDENTIALS_DIRECTORY (systemd)") {
  TempDir dir;
  dir.write("tunnel-token", kGood, 0400);
  ::setenv("CREDENTIALS_DIRECTORY", dir.path.c_str(), 1);
  CHECK(resolve_token_path("tunnel-token") == dir.path + "/tunnel-token");
  CHECK(resolve_token_path("/etc/tunnel/token") == "/etc/tunnel/token");  // absolute: as given
  CHECK(resolve_token_path("not-there") == "not-there");
  ::unsetenv("CREDENTIALS_DIRECTORY");
  CHECK(resolve_token_path("tunnel-token") == "tunnel-token");
}
