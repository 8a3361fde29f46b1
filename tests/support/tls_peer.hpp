// TLS on port B from the test's side (tests/integration/tls_test.cpp): certificates made at test
// time by scripts/gen-cert.sh (as an operator makes them) into a private directory, an expired
// certificate (which gen-cert.sh refuses to make) through the OpenSSL API, and TLS clients that
// start a real handshake and never finish it. Needs libtunnel (tunnel::tls) and OpenSSL.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "support/socket_io.hpp"
#include "support/wait.hpp"
#include "tunnel/tls.hpp"

namespace tunnel::test {

// A file of the source tree, e.g. source_path("scripts/gen-cert.sh").
std::string source_path(const std::string& relative);

// What one run of scripts/gen-cert.sh wrote and printed.
struct GenCert {
  std::string dir;     // its --out directory
  std::string pin;     // "sha256:<hex>", from its `server key pin:` line
  std::string output;  // everything it printed
  std::string file(const std::string& name) const { return dir + "/" + name; }
  std::string cert() const { return file("server.crt"); }
  std::string key() const { return file("server.key"); }
  std::string ca() const { return file("ca.crt"); }  // with --ca or --client
  std::string client_cert() const { return file("client.crt"); }
  std::string client_key() const { return file("client.key"); }
};

// Runs `scripts/gen-cert.sh --out OUT ARGS...` and waits for it (bounded); throws with its output
// unless it exits 0 and prints a pin.
GenCert gen_cert(const std::string& out, const std::vector<std::string>& args = {});

// `scripts/gen-cert.sh --pin-of CERT`: the pin of any certificate file.
std::string pin_of(const std::string& cert);

// A self-signed P-256 server certificate for DNS:localhost, IP:127.0.0.1 and IP:::1 that expired
// a day ago (valid from two days ago), written to DIR/NAME.crt and DIR/NAME.key (mode 0600).
struct CertFiles {
  std::string cert;
  std::string key;
};
CertFiles make_expired_certificate(const std::string& dir, const std::string& name);

// A real TLS 1.3 client (libtunnel's, OpenSSL) that connects to 127.0.0.1:port, sends its
// ClientHello, and then never takes another step: the stalled half of a handshake. The socket
// stays open until the object goes or close() is called.
class StalledTlsClient {
 public:
  StalledTlsClient(tls::ClientContext& context, uint16_t port);
  ~StalledTlsClient();
  StalledTlsClient(const StalledTlsClient&) = delete;
  StalledTlsClient& operator=(const StalledTlsClient&) = delete;

  Socket& socket() { return socket_; }

 private:
  Socket socket_;
  std::unique_ptr<tls::Stream> stream_;
};

// A client context that trusts only `pin`, for StalledTlsClient (its verification never runs).
tls::ClientContext pinned_client_context(const std::string& pin);

}  // namespace tunnel::test
