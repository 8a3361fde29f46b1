// Public-key pins: SHA-256 over the DER SubjectPublicKeyInfo of a certificate.
#include "tunnel/tls_pin.hpp"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

namespace tunnel::tls {
namespace {

constexpr std::string_view kPrefix = "sha256:";

}  // namespace

std::optional<Pin> parse_pin(std::string_view text) {
  if (text.size() != kPrefix.size() + 64) return std::nullopt;
  for (size_t i = 0; i < kPrefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(text[i])) != kPrefix[i]) return std::nullopt;
  std::string hex(text.substr(kPrefix.size()));
  for (char& c : hex) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return crypto::digest_from_hex(hex);
}

std::string format_pin(const Pin& pin) {
  return std::string(kPrefix) + crypto::to_hex(pin);
}

Pin spki_pin(const x509_st* certificate) {
  // i2d_X509_PUBKEY writes the SubjectPublicKeyInfo exactly as it sits in the certificate.
  unsigned char* der = nullptr;
  int length = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(certificate), &der);
  if (length <= 0) throw std::runtime_error("cannot encode the certificate's public key");
  Pin pin{};
  unsigned int size = 0;
  bool ok = EVP_Digest(der, static_cast<size_t>(length), pin.data(), &size, EVP_sha256(), nullptr);
  OPENSSL_free(der);
  if (!ok || size != pin.size()) throw std::runtime_error("SHA-256 failed in OpenSSL");
  return pin;
}

Pin pin_of_cert_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot read it: " + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  std::string pem = text.str();
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), int(pem.size())),
                                                &BIO_free);
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr, &X509_free);
  ERR_clear_error();
  if (!cert) throw std::runtime_error(path + ": no PEM certificate in it");
  return spki_pin(cert.get());
}

}  // namespace tunnel::tls
