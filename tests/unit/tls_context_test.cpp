// TLS contexts and pins: what loads, what is refused and how the refusal reads (one line naming
// the file and the problem), the warnings, the cipher suites' order, and scripts/gen-cert.sh's
// files and printed pin.
#include <openssl/ssl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

#include "tls_test_support.hpp"
#include "tunnel/tls.hpp"

using namespace tls_test;
using tunnel::tls::ClientContext;
using tunnel::tls::ClientTlsOptions;
using tunnel::tls::format_pin;
using tunnel::tls::parse_pin;
using tunnel::tls::pin_of_cert_file;
using tunnel::tls::ServerContext;

namespace {

template <typename Load>
std::string refusal(Load load) {
  try {
    load();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  FAIL("expected a refusal");
  return {};
}

// Runs a command, returns its standard output and exit status.
std::pair<std::string, int> run(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buffer[512];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
  int status = ::pclose(pipe);
  return {output, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

std::string gen_cert_script() {
  auto script = std::filesystem::path(__FILE__).parent_path() / "../../scripts/gen-cert.sh";
  REQUIRE(std::filesystem::exists(script));
  return std::filesystem::canonical(script).string();
}

// The first "sha256:<hex>" word in `text`.
std::string first_pin(const std::string& text) {
  auto at = text.find("sha256:");
  REQUIRE(at != std::string::npos);
  return text.substr(at, 7 + 64);
}

}  // namespace

TEST_CASE("tls pin: parsed from sha256:<64 hex> in either case, refused otherwise") {
  std::string hex(64, 'a');
  hex[0] = '0';
  hex[63] = 'F';
  auto pin = parse_pin("sha256:" + hex);
  REQUIRE(pin);
  CHECK((*pin)[0] == 0x0a);
  CHECK((*pin)[31] == 0xaf);
  CHECK(format_pin(*pin) ==
        "sha256:0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaf");
  CHECK(parse_pin("SHA256:" + hex) == pin);
  CHECK_FALSE(parse_pin(hex));                              // no prefix
  CHECK_FALSE(parse_pin("sha1:" + hex));                    // another hash
  CHECK_FALSE(parse_pin("sha256:" + hex.substr(1)));        // too short
  CHECK_FALSE(parse_pin("sha256:" + hex + "0"));            // too long
  CHECK_FALSE(parse_pin("sha256:" + hex.substr(1) + "g"));  // not hex
  CHECK_FALSE(parse_pin(""));
}

TEST_CASE("tls pin: the pin of a certificate file is its key's, and names the file on failure") {
  TempDir dir;
  auto a = make_identity(dir, "a", {});
  auto b = make_identity(dir, "b", {});
  CHECK(pin_of_cert_file(a.cert) == pin_of_cert_file(a.cert));
  CHECK(pin_of_cert_file(a.cert) != pin_of_cert_file(b.cert));
  CHECK_THAT(refusal([&] { pin_of_cert_file(dir.file("missing.crt")); }),
             Catch::Contains("missing.crt") && Catch::Contains("No such file"));
  CHECK_THAT(refusal([&] { pin_of_cert_file(a.key); }),
             Catch::Contains(a.key) && Catch::Contains("no PEM certificate"));
}

TEST_CASE("tls server context: loads a certificate and its key, with or without a client CA") {
  TempDir dir;
  auto ca = make_ca(dir, "ca");
  auto server = make_identity(dir, "server", {}, &ca);
  auto plain = ServerContext::load(server.cert, server.key);
  CHECK_FALSE(plain.requires_client_certificate());
  CHECK(plain.warnings().empty());
  auto mutual = ServerContext::load(server.cert, server.key, ca.cert);
  CHECK(mutual.requires_client_certificate());
}

TEST_CASE("tls server context: each file problem is one line naming the file") {
  TempDir dir;
  auto server = make_identity(dir, "server", {});
  auto other = make_identity(dir, "other", {});
  std::string garbage = write_file(dir, "garbage.pem", "this is not PEM\n");
  std::string broken = write_file(dir, "broken.pem",
                                  "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");

  auto missing = refusal([&] { ServerContext::load(dir.file("nope.crt"), server.key); });
  CHECK_THAT(missing, Catch::Contains("TLS certificate") && Catch::Contains("nope.crt") &&
                          Catch::Contains("No such file or directory"));
  CHECK(missing.find('\n') == std::string::npos);

  CHECK_THAT(refusal([&] { ServerContext::load(garbage, server.key); }),
             Catch::Contains(garbage) && Catch::Contains("no PEM certificate"));
  CHECK_THAT(refusal([&] { ServerContext::load(broken, server.key); }),
             Catch::Contains(broken) && Catch::Contains("not a valid PEM certificate"));
  CHECK_THAT(
      refusal([&] { ServerContext::load(server.cert, dir.file("nope.key")); }),
      Catch::Contains("TLS key") && Catch::Contains("nope.key") && Catch::Contains("No such file"));
  CHECK_THAT(refusal([&] { ServerContext::load(server.cert, server.cert); }),
             Catch::Contains(server.cert) && Catch::Contains("no PEM private key"));
  CHECK_THAT(refusal([&] { ServerContext::load(server.cert, other.key); }),
             Catch::Contains(other.key) && Catch::Contains("does not match the certificate") &&
                 Catch::Contains(server.cert));
  std::string encrypted = write_encrypted_key(dir, "encrypted.key", server);
  CHECK_THAT(refusal([&] { ServerContext::load(server.cert, encrypted); }),
             Catch::Contains(encrypted) && Catch::Contains("passphrase"));
  CHECK_THAT(refusal([&] { ServerContext::load(server.cert, server.key, garbage); }),
             Catch::Contains("TLS client CA file") && Catch::Contains(garbage));
}

TEST_CASE(
    "tls server context: an expired certificate loads with a warning, as does a key all "
    "users can read") {
  TempDir dir;
  CertSpec old;
  old.valid_from_s = -3 * 86400;
  old.valid_to_s = -86400;
  auto expired = make_identity(dir, "expired", old);
  REQUIRE(::chmod(expired.key.c_str(), 0644) == 0);
  auto context = ServerContext::load(expired.cert, expired.key);
  REQUIRE(context.warnings().size() == 2);
  CHECK_THAT(context.warnings()[0], Catch::Contains(expired.cert) && Catch::Contains("expired on"));
  CHECK_THAT(context.warnings()[1],
             Catch::Contains(expired.key) && Catch::Contains("readable by every user"));

  CertSpec soon;
  soon.valid_to_s = 3 * 86400;
  auto expiring = make_identity(dir, "expiring", soon);
  auto warned = ServerContext::load(expiring.cert, expiring.key);
  REQUIRE(warned.warnings().size() == 1);
  CHECK_THAT(warned.warnings()[0], Catch::Contains("expires on"));
}

TEST_CASE("tls client context: exactly one way to verify the server, and a key with a cert") {
  TempDir dir;
  auto server = make_identity(dir, "server", {});
  auto pin = pin_of_cert_file(server.cert);

  CHECK_THAT(refusal([&] { ClientContext::load({.server_name = "localhost"}); }),
             Catch::Contains("--tls-ca") && Catch::Contains("--tls-pin"));
  CHECK_THAT(refusal([&] {
               ClientContext::load({.ca_file = server.cert, .pin = pin, .server_name = "x"});
             }),
             Catch::Contains("not both"));
  CHECK_THAT(refusal([&] {
               ClientContext::load({.pin = pin, .cert_file = server.cert, .server_name = "x"});
             }),
             Catch::Contains("--tls-cert and --tls-key go together"));
  CHECK_THAT(refusal([&] { ClientContext::load({.ca_file = server.cert}); }),
             Catch::Contains("no server name"));
  CHECK_THAT(refusal([&] {
               ClientContext::load({.ca_file = dir.file("ca.pem"), .server_name = "localhost"});
             }),
             Catch::Contains("TLS CA file") && Catch::Contains("ca.pem") &&
                 Catch::Contains("No such file"));

  auto by_pin = ClientContext::load({.pin = pin, .server_name = "localhost"});
  CHECK_FALSE(by_pin.has_session());
  auto by_ca = ClientContext::load({.ca_file = server.cert, .server_name = "[::1]"});
  CHECK(by_ca.warnings().empty());
}

TEST_CASE(
    "gen-cert.sh: a self-signed P-256 certificate, a private key, and the pin spki_pin "
    "computes") {
  TempDir dir;
  std::string out = dir.file("certs");
  auto [output, status] =
      run("bash " + gen_cert_script() + " --name localhost --name 127.0.0.1 --out " + out);
  INFO(output);
  REQUIRE(status == 0);
  std::string cert = out + "/server.crt", key = out + "/server.key";
  struct stat st {};
  REQUIRE(::stat(key.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  std::string pin = first_pin(output);
  CHECK(pin == format_pin(pin_of_cert_file(cert)));
  CHECK_THAT(output, Catch::Contains("--tls --tls-pin " + pin) &&
                         Catch::Contains("--tls --tls-ca " + cert));

  // What it printed works: the pin, and the certificate as its own CA, for both names.
  auto server = ServerContext::load(cert, key);
  CHECK(server.warnings().empty());
  for (const ClientTlsOptions& options :
       {ClientTlsOptions{.pin = parse_pin(pin), .server_name = "localhost"},
        ClientTlsOptions{.ca_file = cert, .server_name = "localhost"},
        ClientTlsOptions{.ca_file = cert, .server_name = "127.0.0.1"}}) {
    auto client = ClientContext::load(options);
    auto pair = make_pair(client, server);
    CHECK(handshake_both(*pair.client, *pair.server).both_done());
  }

  // --pin-of prints the same pin alone; existing files are not overwritten.
  auto [alone, alone_status] = run("bash " + gen_cert_script() + " --pin-of " + cert);
  CHECK(alone_status == 0);
  CHECK(alone == pin + "\n");
  auto [again, again_status] = run("bash " + gen_cert_script() + " --out " + out + " 2>&1");
  CHECK(again_status != 0);
  CHECK_THAT(again, Catch::Contains("exists"));
}

TEST_CASE("tls contexts: AES-128-GCM first with AES instructions, ChaCha20 for a client without") {
  // Both ends list the suites best first for their own CPU; the server's order decides, except
  // that a client which puts ChaCha20 first (no AES instructions there) gets it.
  TempDir dir;
  auto identity = make_identity(dir, "server", {});
  auto server = ServerContext::load(identity.cert, identity.key);
  std::string order = tunnel::tls::preferred_ciphersuites();
  std::string best = order.substr(0, order.find(':'));
  CHECK(best ==
        (tunnel::tls::cpu_has_aes() ? "TLS_AES_128_GCM_SHA256" : "TLS_CHACHA20_POLY1305_SHA256"));
  CHECK_THAT(order, Catch::Contains("TLS_AES_256_GCM_SHA384"));  // still spoken

  auto negotiated = [&](const char* client_suites) {
    auto client = ClientContext::load({.ca_file = identity.cert, .server_name = "localhost"});
    if (client_suites) REQUIRE(SSL_CTX_set_ciphersuites(client.native_handle(), client_suites));
    auto pair = make_pair(client, server);
    REQUIRE(handshake_both(*pair.client, *pair.server).both_done());
    return std::string(SSL_get_cipher_name(pair.client->native_handle()));
  };
  CHECK(negotiated(nullptr) == best);
  // A client without AES instructions.
  CHECK(negotiated("TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256") ==
        "TLS_CHACHA20_POLY1305_SHA256");
  // A client that prefers AES-256 gets the server's choice among what it offers.
  CHECK(negotiated("TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256") == "TLS_AES_128_GCM_SHA256");
  CHECK(negotiated("TLS_AES_256_GCM_SHA384") == "TLS_AES_256_GCM_SHA384");
}

TEST_CASE("gen-cert.sh: --ca makes a CA, a server and a client certificate for mTLS") {
  TempDir dir;
  std::string out = dir.file("pki");
  auto [output, status] =
      run("bash " + gen_cert_script() + " --ca --client alice --name localhost --out " + out);
  INFO(output);
  REQUIRE(status == 0);
  CHECK_THAT(output, Catch::Contains("--tls-client-ca " + out + "/ca.crt") &&
                         Catch::Contains("--tls-cert " + out + "/client.crt"));
  auto server = ServerContext::load(out + "/server.crt", out + "/server.key", out + "/ca.crt");
  auto client = ClientContext::load({.ca_file = out + "/ca.crt",
                                     .cert_file = out + "/client.crt",
                                     .key_file = out + "/client.key",
                                     .server_name = "localhost"});
  auto pair = make_pair(client, server);
  REQUIRE(handshake_both(*pair.client, *pair.server).both_done());
  CHECK(pair.server->peer_common_name() == "alice");
  write_all(*pair.client, "hello");
  CHECK(read_some(*pair.server, 5).bytes == "hello");
}

TEST_CASE("gen-cert.sh: usage on a bad flag") {
  auto [output, status] = run("bash " + gen_cert_script() + " --bogus 2>&1");
  CHECK(status == 2);
  CHECK_THAT(output, Catch::Contains("usage:"));
}
