// Public-key pins for TLS: `sha256:<64 hex>`, the SHA-256 of the certificate's public key in DER
// (its SubjectPublicKeyInfo), the same value as
//   openssl x509 -in CERT -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256
// which scripts/gen-cert.sh prints. A pin names a key, not a certificate: a certificate renewed
// with the same key keeps its pin.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "tunnel/crypto.hpp"

struct x509_st;  // OpenSSL's X509, kept out of this header

namespace tunnel::tls {

using Pin = crypto::Digest;

// "sha256:" followed by 64 hex digits (either case). Nothing for anything else.
std::optional<Pin> parse_pin(std::string_view text);
// "sha256:<64 lowercase hex>".
std::string format_pin(const Pin& pin);

// The pin of a certificate's public key.
Pin spki_pin(const x509_st* certificate);
// The pin of the first certificate in a PEM file; throws std::runtime_error naming the file.
Pin pin_of_cert_file(const std::string& path);

}  // namespace tunnel::tls
