// Reading and checking the token file. The token's content never appears in an error message.
#include "tunnel/token_file.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "tunnel/fd.hpp"

namespace tunnel {
namespace {

constexpr size_t kMaxTokenFile = 4096;  // a token is short; anything bigger is the wrong file

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
bool is_base64(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '+' ||
         c == '/' || c == '-' || c == '_' || c == '=';
}

[[noreturn]] void refuse(const std::string& path, std::string_view what, std::string_view fix) {
  throw std::runtime_error(fmt::format("token file {}: {}; {}", path, what, fix));
}

}  // namespace

std::string resolve_token_path(std::string_view value) {
  std::string path(value);
  const char* credentials = std::getenv("CREDENTIALS_DIRECTORY");
  if (!path.empty() && path.front() != '/' && credentials && *credentials) {
    std::string candidate = fmt::format("{}/{}", credentials, path);
    if (::access(candidate.c_str(), F_OK) == 0) return candidate;
  }
  return path;
}

int token_bits(std::string_view token) {
  bool hex = true, base64 = true;
  for (char c : token) {
    hex = hex && is_hex(c);
    base64 = base64 && is_base64(c);
  }
  // Padding carries nothing.
  size_t length = token.size();
  if (!hex && base64)
    while (length > 0 && token[length - 1] == '=') --length;
  int per_char = hex ? 4 : 6;  // printable ASCII holds about 6.5: count it as 6
  return static_cast<int>(length) * per_char;
}

std::string read_token_file(const std::string& path) {
  const std::string make_one =
      fmt::format("make one with: (umask 077; head -c 32 /dev/urandom | base64 > {})", path);
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) refuse(path, fmt::format("cannot open it: {}", std::strerror(errno)), make_one);
  struct stat info {};
  if (::fstat(fd.get(), &info) < 0 || !S_ISREG(info.st_mode))
    refuse(path, "not a regular file", make_one);
  if (info.st_mode & (S_IRWXG | S_IRWXO))
    refuse(path, fmt::format("group or others have access (mode {:04o})", info.st_mode & 07777),
           fmt::format("run: chmod 600 {}", path));
  std::string token;
  char chunk[512];
  for (;;) {
    ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) refuse(path, fmt::format("cannot read it: {}", std::strerror(errno)), make_one);
    if (n == 0) break;
    token.append(chunk, static_cast<size_t>(n));
    if (token.size() > kMaxTokenFile) refuse(path, "larger than 4 KiB: not a token", make_one);
  }
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
  if (token.empty()) refuse(path, "it is empty", make_one);
  for (unsigned char c : token)
    if (c <= 0x20 || c >= 0x7f)
      refuse(path, "it holds spaces, line breaks or control characters inside the token", make_one);
  if (token_bits(token) < kMinTokenBits)
    refuse(path,
           fmt::format("the token holds at most {} bits, fewer than {}", token_bits(token),
                       kMinTokenBits),
           make_one);
  return token;
}

}  // namespace tunnel
