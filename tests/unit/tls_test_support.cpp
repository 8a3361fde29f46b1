// Certificates with the OpenSSL API (no files committed), loopback pairs, and handshake/IO drivers
// for the TLS unit tests.
#include "tls_test_support.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>

using tunnel::Fd;
using tunnel::tls::HandshakeStep;
using tunnel::tls::IoStatus;
using tunnel::tls::Progress;
using tunnel::tls::Stream;

namespace tls_test {
namespace {

using Clock = std::chrono::steady_clock;

struct FreeX509 {
  void operator()(X509* x) const { X509_free(x); }
};
struct FreeKey {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using X509Ptr = std::unique_ptr<X509, FreeX509>;
using KeyPtr = std::unique_ptr<EVP_PKEY, FreeKey>;

struct CloseFile {
  void operator()(FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<FILE, CloseFile>;

FilePtr open_for_writing(const std::string& path, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  REQUIRE(fd >= 0);
  FILE* file = ::fdopen(fd, "w");
  REQUIRE(file != nullptr);
  return FilePtr(file);
}

X509Ptr read_cert(const std::string& path) {
  FILE* file = std::fopen(path.c_str(), "r");
  REQUIRE(file != nullptr);
  X509Ptr cert(PEM_read_X509(file, nullptr, nullptr, nullptr));
  std::fclose(file);
  REQUIRE(cert);
  return cert;
}

KeyPtr read_key(const std::string& path) {
  FILE* file = std::fopen(path.c_str(), "r");
  REQUIRE(file != nullptr);
  KeyPtr key(PEM_read_PrivateKey(file, nullptr, nullptr, nullptr));
  std::fclose(file);
  REQUIRE(key);
  return key;
}

void add_extension(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str());
  REQUIRE(extension != nullptr);
  REQUIRE(X509_add_ext(cert, extension, -1) == 1);
  X509_EXTENSION_free(extension);
}

bool finished(const HandshakeStep& step) {
  return step.progress == Progress::done || step.progress == Progress::failed;
}

short poll_events(const HandshakeStep& step) {
  switch (step.progress) {
    case Progress::want_read:
      return POLLIN;
    case Progress::want_write:
      return POLLOUT;
    case Progress::done:
    case Progress::failed:
      break;
  }
  return 0;
}

}  // namespace

TempDir::TempDir() {
  char pattern[] = "/tmp/tls-test.XXXXXX";
  REQUIRE(::mkdtemp(pattern) != nullptr);
  path = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path, ignored);
}

Identity make_identity(const TempDir& dir, const std::string& name, const CertSpec& spec,
                       const Identity* issuer) {
  KeyPtr key(EVP_EC_gen("P-256"));
  REQUIRE(key);
  X509Ptr cert(X509_new());
  REQUIRE(cert);
  REQUIRE(X509_set_version(cert.get(), X509_VERSION_3) == 1);
  uint64_t serial = 0;
  REQUIRE(RAND_bytes(reinterpret_cast<unsigned char*>(&serial), sizeof serial) == 1);
  REQUIRE(ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert.get()), serial >> 1) == 1);
  REQUIRE(X509_gmtime_adj(X509_getm_notBefore(cert.get()), spec.valid_from_s) != nullptr);
  REQUIRE(X509_gmtime_adj(X509_getm_notAfter(cert.get()), spec.valid_to_s) != nullptr);
  REQUIRE(X509_set_pubkey(cert.get(), key.get()) == 1);
  X509_NAME* subject = X509_get_subject_name(cert.get());
  REQUIRE(X509_NAME_add_entry_by_txt(
              subject, "CN", MBSTRING_ASC,
              reinterpret_cast<const unsigned char*>(spec.common_name.c_str()), -1, -1, 0) == 1);

  X509Ptr issuer_cert;
  KeyPtr issuer_key;
  if (issuer) {
    issuer_cert = read_cert(issuer->cert);
    issuer_key = read_key(issuer->key);
  }
  X509* signer = issuer ? issuer_cert.get() : cert.get();
  REQUIRE(X509_set_issuer_name(cert.get(), X509_get_subject_name(signer)) == 1);

  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, signer, cert.get(), nullptr, nullptr, 0);
  add_extension(cert.get(), &ctx, NID_basic_constraints,
                spec.ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  add_extension(cert.get(), &ctx, NID_key_usage,
                spec.ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
  add_extension(cert.get(), &ctx, NID_subject_key_identifier, "hash");
  if (issuer) add_extension(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always");
  if (!spec.ca) {
    add_extension(cert.get(), &ctx, NID_ext_key_usage, spec.client ? "clientAuth" : "serverAuth");
    std::string names;
    for (const auto& dns : spec.dns) names += (names.empty() ? "DNS:" : ",DNS:") + dns;
    for (const auto& ip : spec.ips) names += (names.empty() ? "IP:" : ",IP:") + ip;
    if (!names.empty()) add_extension(cert.get(), &ctx, NID_subject_alt_name, names);
  }
  REQUIRE(X509_sign(cert.get(), issuer ? issuer_key.get() : key.get(), EVP_sha256()) > 0);

  Identity out{dir.file(name + ".crt"), dir.file(name + ".key")};
  {
    FilePtr file = open_for_writing(out.key, 0600);
    REQUIRE(PEM_write_PrivateKey(file.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) ==
            1);
  }
  {
    FilePtr file = open_for_writing(out.cert, 0644);
    REQUIRE(PEM_write_X509(file.get(), cert.get()) == 1);
  }
  ERR_clear_error();
  return out;
}

Identity make_ca(const TempDir& dir, const std::string& name) {
  CertSpec spec;
  spec.common_name = name;
  spec.ca = true;
  spec.dns.clear();
  spec.ips.clear();
  return make_identity(dir, name, spec);
}

std::string write_encrypted_key(const TempDir& dir, const std::string& name,
                                const Identity& identity) {
  KeyPtr key = read_key(identity.key);
  std::string path = dir.file(name);
  FilePtr file = open_for_writing(path, 0600);
  static const char kPassphrase[] = "correct horse";
  REQUIRE(PEM_write_PrivateKey(file.get(), key.get(), EVP_aes_256_cbc(),
                               reinterpret_cast<const unsigned char*>(kPassphrase),
                               sizeof kPassphrase - 1, nullptr, nullptr) == 1);
  return path;
}

std::string write_file(const TempDir& dir, const std::string& name, const std::string& content) {
  std::string path = dir.file(name);
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

Connection connect_loopback() {
  Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(listener);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(::listen(listener.get(), 4) == 0);
  socklen_t length = sizeof address;
  REQUIRE(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length) == 0);
  Fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(client);
  REQUIRE(::connect(client.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  Fd server(::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  REQUIRE(server);
  int flags = ::fcntl(client.get(), F_GETFL);
  REQUIRE(::fcntl(client.get(), F_SETFL, flags | O_NONBLOCK) == 0);
  return {std::move(client), std::move(server)};
}

Outcome handshake_both(Stream& client, Stream& server) {
  Outcome out;
  out.client.progress = Progress::want_write;
  out.server.progress = Progress::want_read;
  auto deadline = Clock::now() + std::chrono::seconds(5);
  std::optional<Clock::time_point> grace;
  while (Clock::now() < deadline) {
    out.client = client.handshake();
    out.server = server.handshake();
    if (finished(out.client) && finished(out.server)) break;
    if (finished(out.client) || finished(out.server)) {
      // The other end may still hear of it (an alert); give it a moment, not forever.
      if (!grace) grace = Clock::now() + std::chrono::milliseconds(300);
      if (Clock::now() > *grace) break;
    }
    pollfd fds[2] = {{client.fd(), poll_events(out.client), 0},
                     {server.fd(), poll_events(out.server), 0}};
    ::poll(fds, 2, 20);
  }
  return out;
}

Pair make_pair(tunnel::tls::ClientContext& client, tunnel::tls::ServerContext& server) {
  Pair pair;
  pair.sockets = connect_loopback();
  pair.client = client.new_stream(pair.sockets.client.get());
  pair.server = server.new_stream(pair.sockets.server.get());
  return pair;
}

bool wait_ready(int fd, short events, int ms) {
  pollfd p{fd, events, 0};
  return ::poll(&p, 1, ms) == 1;
}

ReadResult read_some(Stream& stream, size_t count, std::chrono::milliseconds limit) {
  ReadResult out;
  auto deadline = Clock::now() + limit;
  char buffer[16 * 1024];
  while (Clock::now() < deadline) {
    out.last = stream.read(buffer);
    switch (out.last.status) {
      case IoStatus::ok:
        out.bytes.append(buffer, out.last.bytes);
        if (out.bytes.size() >= count) return out;
        break;
      case IoStatus::want_read:
        wait_ready(stream.fd(), POLLIN, 20);
        break;
      case IoStatus::want_write:
        wait_ready(stream.fd(), POLLOUT, 20);
        break;
      case IoStatus::eof:
      case IoStatus::reset:
      case IoStatus::error:
        return out;
    }
  }
  return out;
}

void write_all(Stream& stream, const std::string& data) {
  size_t offset = 0;
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (offset < data.size()) {
    REQUIRE(Clock::now() < deadline);
    auto result = stream.write(std::span<const char>(data).subspan(offset));
    switch (result.status) {
      case IoStatus::ok:
        offset += result.bytes;
        break;
      case IoStatus::want_write:
        wait_ready(stream.fd(), POLLOUT, 20);
        break;
      case IoStatus::want_read:
        wait_ready(stream.fd(), POLLIN, 20);
        break;
      default:
        FAIL("write failed: " << result.detail);
    }
  }
}

size_t open_fds() {
  size_t count = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd"))
    ++count;
  return count;
}

std::string random_text(size_t size, unsigned seed) {
  std::mt19937 rng(seed);
  std::string out(size, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

}  // namespace tls_test
