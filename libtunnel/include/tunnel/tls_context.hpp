// TLS 1.3 configuration of each end of port B: the certificate and key (and, for mTLS, the CA that
// client certificates must chain to) on the server; how to verify the server (a CA, or a pinned
// key) and an optional client identity on the client. A context makes the Streams of its end and
// counts their handshakes; it must outlive every Stream it made (the daemons keep theirs for
// their whole life).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tunnel/tls_pin.hpp"
#include "tunnel/tls_stream.hpp"

struct ssl_ctx_st;         // OpenSSL's SSL_CTX
struct ssl_st;             // OpenSSL's SSL
struct ssl_session_st;     // OpenSSL's SSL_SESSION
struct x509_store_ctx_st;  // OpenSSL's X509_STORE_CTX

namespace tunnel::tls {

// Whether this CPU has AES instructions (x86 AES-NI with PCLMULQDQ, ARMv8 AES with PMULL).
bool cpu_has_aes();
// The TLS 1.3 cipher suites both ends offer, best first for this CPU (OpenSSL's syntax):
// AES-128-GCM first with AES instructions, ChaCha20-Poly1305 first without.
std::string preferred_ciphersuites();

class ServerContext {
 public:
  // TLS 1.3 only, stateless session tickets (so clients resume their data connections). With a
  // `client_ca_file`, every client must present a certificate that chains to it (or is one of the
  // certificates in it). Throws std::runtime_error, one line naming the file and the problem:
  // missing or unreadable, not PEM, a key encrypted with a passphrase, a key that does not match
  // the certificate. A certificate that is expired or not valid yet is loaded anyway, with a
  // warning (warnings()): clients will refuse it, and the operator should hear why.
  static ServerContext load(const std::string& cert_file, const std::string& key_file,
                            const std::string& client_ca_file = {});

  ServerContext(ServerContext&&) noexcept;
  ServerContext& operator=(ServerContext&&) noexcept;
  ~ServerContext();

  // One line each, for the daemon to log at warn (expired or soon-expiring certificate, a key
  // file others can read).
  const std::vector<std::string>& warnings() const;
  bool requires_client_certificate() const;

  // The server end of a TLS connection over the accepted socket `fd` (not owned: see Stream).
  std::unique_ptr<Stream> new_stream(int fd);
  HandshakeCounts counts() const;
  ssl_ctx_st* native_handle() const;

 private:
  struct State;
  explicit ServerContext(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

struct ClientTlsOptions {
  // Exactly one of these two says how the server is verified:
  std::string ca_file{};     // the chain and the server name are checked against the certificates
                             // in this file (a CA, or the server's own self-signed certificate)
  std::optional<Pin> pin{};  // only the server's public key is checked (its chain, names and dates
                             // are not: a pin is like an SSH host key)
  // The client's own identity, for a server that requires client certificates: both or neither.
  std::string cert_file{};
  std::string key_file{};
  // The host part of --server: sent as SNI when it is a DNS name (RFC 6066 forbids IP literals
  // there), and checked against the certificate's names (DNS) or addresses (IP) with `ca_file`.
  std::string server_name{};
  // Whether new connections offer the last session ticket received (false: every handshake is a
  // full one, to measure what resumption saves).
  bool resume = true;
};

class ClientContext {
 public:
  // TLS 1.3 only; verification is always on. Throws std::runtime_error with one line: no way to
  // verify the server, both ways given, a certificate without its key, or a file problem (as for
  // ServerContext::load).
  static ClientContext load(const ClientTlsOptions& options);

  ClientContext(ClientContext&&) noexcept;
  ClientContext& operator=(ClientContext&&) noexcept;
  ~ClientContext();

  const std::vector<std::string>& warnings() const;

  // The client end of a TLS connection over the connected socket `fd` (not owned: see Stream).
  // It offers the last session ticket received, if any and `resume` is on, so the handshake can be
  // resumed.
  std::unique_ptr<Stream> new_stream(int fd);
  HandshakeCounts counts() const;

  // Whether a session ticket is held for the next connection. In TLS 1.3 tickets arrive after the
  // handshake, with the server's first bytes: a connection must read once after its handshake
  // for its ticket to be taken (stream.hpp).
  bool has_session() const;
  void forget_session();
  ssl_ctx_st* native_handle() const;

 private:
  struct State;
  explicit ClientContext(std::unique_ptr<State> state);
  // OpenSSL callbacks (static members so they may note what they saw in the Stream).
  static int on_new_session(ssl_st* ssl, ssl_session_st* session);
  static int verify_pin(x509_store_ctx_st* store, void* arg);
  static int note_verify_failure(int ok, x509_store_ctx_st* store);
  std::unique_ptr<State> state_;
};

}  // namespace tunnel::tls
