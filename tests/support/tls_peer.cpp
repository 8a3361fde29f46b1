// The test's side of TLS on port B: gen-cert.sh runs, an expired certificate, stalled handshakes.
#include "support/tls_peer.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cstdio>
#include <stdexcept>

#include "support/process.hpp"

#ifndef TUNNEL_SOURCE_DIR
#error "TUNNEL_SOURCE_DIR must be defined by CMake"
#endif

namespace tunnel::test {

namespace {

// gen-cert.sh runs a handful of openssl commands: well under a second, but give a loaded machine
// room.
constexpr Millis kGenCertTimeout{30000};

std::string run_gen_cert(const std::vector<std::string>& args, const std::string& what) {
  std::vector<std::string> argv = {"/bin/bash", source_path("scripts/gen-cert.sh")};
  argv.insert(argv.end(), args.begin(), args.end());
  Process p("gen-cert.sh", argv);
  const ExitStatus status = p.wait_exit(kGenCertTimeout);
  p.log().wait_closed(Millis(5000));
  std::string output;
  for (const auto& line : p.log().lines()) output += line.text + "\n";
  if (!status.exited || status.code != 0) {
    throw std::runtime_error("gen-cert.sh " + what + ": " + status.describe() + ", output:\n" +
                             output);
  }
  return output;
}

struct FreeX509 {
  void operator()(X509* x) const { X509_free(x); }
};
struct FreeKey {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct CloseFile {
  void operator()(FILE* f) const { std::fclose(f); }
};

void check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("making the expired certificate: ") + what);
}

std::unique_ptr<FILE, CloseFile> open_for_writing(const std::string& path, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  check(fd >= 0, "open");
  FILE* file = ::fdopen(fd, "w");
  if (file == nullptr) ::close(fd);
  check(file != nullptr, "fdopen");
  return std::unique_ptr<FILE, CloseFile>(file);
}

}  // namespace

std::string source_path(const std::string& relative) {
  return std::string(TUNNEL_SOURCE_DIR) + "/" + relative;
}

GenCert gen_cert(const std::string& out, const std::vector<std::string>& args) {
  std::vector<std::string> all = {"--out", out};
  all.insert(all.end(), args.begin(), args.end());
  GenCert made;
  made.dir = out;
  made.output = run_gen_cert(all, "--out " + out);
  const std::string label = "server key pin: ";
  const size_t at = made.output.find(label);
  if (at == std::string::npos) {
    throw std::runtime_error("gen-cert.sh printed no `server key pin:` line:\n" + made.output);
  }
  const size_t end = made.output.find('\n', at);
  made.pin = made.output.substr(at + label.size(), end - at - label.size());
  return made;
}

std::string pin_of(const std::string& cert) {
  std::string out = run_gen_cert({"--pin-of", cert}, "--pin-of " + cert);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

CertFiles make_expired_certificate(const std::string& dir, const std::string& name) {
  CertFiles files{dir + "/" + name + ".crt", dir + "/" + name + ".key"};
  std::unique_ptr<EVP_PKEY, FreeKey> key(EVP_EC_gen("P-256"));
  check(key != nullptr, "EVP_EC_gen");
  std::unique_ptr<X509, FreeX509> cert(X509_new());
  check(cert != nullptr, "X509_new");
  check(X509_set_version(cert.get(), X509_VERSION_3) == 1, "version");
  uint64_t serial = 0;
  check(RAND_bytes(reinterpret_cast<unsigned char*>(&serial), sizeof serial) == 1, "serial");
  check(ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert.get()), serial >> 1) == 1, "serial");
  check(X509_gmtime_adj(X509_getm_notBefore(cert.get()), -2 * 86400) != nullptr, "notBefore");
  check(X509_gmtime_adj(X509_getm_notAfter(cert.get()), -86400) != nullptr, "notAfter");
  check(X509_set_pubkey(cert.get(), key.get()) == 1, "public key");
  X509_NAME* subject = X509_get_subject_name(cert.get());
  check(X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>("localhost"), -1, -1,
                                   0) == 1,
        "CN");
  check(X509_set_issuer_name(cert.get(), subject) == 1, "issuer");
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  const std::pair<int, const char*> extensions[] = {
      {NID_basic_constraints, "critical,CA:FALSE"},
      {NID_key_usage, "critical,digitalSignature"},
      {NID_ext_key_usage, "serverAuth"},
      {NID_subject_key_identifier, "hash"},
      {NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1"},
  };
  for (const auto& [nid, value] : extensions) {
    X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    check(extension != nullptr, value);
    const bool added = X509_add_ext(cert.get(), extension, -1) == 1;
    X509_EXTENSION_free(extension);
    check(added, value);
  }
  check(X509_sign(cert.get(), key.get(), EVP_sha256()) > 0, "sign");
  {
    auto file = open_for_writing(files.key, 0600);
    check(PEM_write_PrivateKey(file.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1,
          "writing the key");
  }
  {
    auto file = open_for_writing(files.cert, 0644);
    check(PEM_write_X509(file.get(), cert.get()) == 1, "writing the certificate");
  }
  return files;
}

tls::ClientContext pinned_client_context(const std::string& pin) {
  tls::ClientTlsOptions options;
  options.pin = tls::parse_pin(pin);
  if (!options.pin) throw std::runtime_error("not a pin: " + pin);
  options.server_name = "127.0.0.1";
  return tls::ClientContext::load(options);
}

StalledTlsClient::StalledTlsClient(tls::ClientContext& context, uint16_t port)
    : socket_(connect_tcp(port)), stream_(context.new_stream(socket_.fd())) {
  // One step: the ClientHello goes out and the stream wants the server's answer, which it will
  // never read.
  const tls::HandshakeStep step = stream_->handshake();
  if (step.progress != tls::Progress::want_read) {
    throw std::runtime_error(
        "the first step of a TLS client handshake did not wait for the "
        "server: " +
        step.detail);
  }
}

// The stream goes first (it never owned the socket) and sends nothing; then the socket closes.
StalledTlsClient::~StalledTlsClient() {
  stream_.reset();
}

}  // namespace tunnel::test
