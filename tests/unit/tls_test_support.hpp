// What the TLS unit tests stand on: certificates made at test time with OpenSSL into a private
// directory (a CA, certificates it signs, self-signed and expired ones), loopback TCP pairs, and
// drivers that run two Streams against each other without an event loop.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "tunnel/fd.hpp"
#include "tunnel/tls.hpp"

namespace tls_test {

// A private directory, removed with everything in it.
struct TempDir {
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path + "/" + name; }
  std::string path;
};

struct CertSpec {
  std::string common_name = "localhost";
  std::vector<std::string> dns = {"localhost"};
  std::vector<std::string> ips = {"127.0.0.1", "::1"};
  long valid_from_s = -3600;     // notBefore, seconds from now
  long valid_to_s = 30 * 86400;  // notAfter, seconds from now
  bool ca = false;               // a CA (keyCertSign), not a leaf
  bool client = false;           // a leaf for clientAuth rather than serverAuth
};

struct Identity {
  std::string cert;  // PEM certificate file
  std::string key;   // PEM private key file (mode 0600)
};

// A new P-256 key and a certificate for it, signed by `issuer` (self-signed without one), written
// to DIR/NAME.crt and DIR/NAME.key.
Identity make_identity(const TempDir& dir, const std::string& name, const CertSpec& spec,
                       const Identity* issuer = nullptr);
// A CA for the tests: CN=NAME, CA:TRUE.
Identity make_ca(const TempDir& dir, const std::string& name);
// A copy of `identity`'s key encrypted with a passphrase, at DIR/NAME.
std::string write_encrypted_key(const TempDir& dir, const std::string& name,
                                const Identity& identity);
// Writes `content` to DIR/NAME.
std::string write_file(const TempDir& dir, const std::string& name, const std::string& content);

// A connected, non-blocking TCP pair over 127.0.0.1.
struct Connection {
  tunnel::Fd client;
  tunnel::Fd server;
};
Connection connect_loopback();

// Both ends' last handshake steps.
struct Outcome {
  tunnel::tls::HandshakeStep client;
  tunnel::tls::HandshakeStep server;
  bool both_done() const {
    return client.progress == tunnel::tls::Progress::done &&
           server.progress == tunnel::tls::Progress::done;
  }
};
// Steps both handshakes until both are done, or one failed and the other has had its chance to
// hear of it; waits for the sockets in between. Bounded to a few seconds.
Outcome handshake_both(tunnel::tls::Stream& client, tunnel::tls::Stream& server);

// A client and a server stream over a fresh loopback pair (sockets kept here).
struct Pair {
  Connection sockets;
  std::unique_ptr<tunnel::tls::Stream> client;
  std::unique_ptr<tunnel::tls::Stream> server;
};
Pair make_pair(tunnel::tls::ClientContext& client, tunnel::tls::ServerContext& server);

// Reads from `stream` until `count` bytes came, or it ends (eof, reset, error), or the time is up;
// returns what came and the last status.
struct ReadResult {
  std::string bytes;
  tunnel::tls::IoResult last;
};
ReadResult read_some(tunnel::tls::Stream& stream, size_t count,
                     std::chrono::milliseconds limit = std::chrono::milliseconds(3000));
// Writes all of `data`, waiting for the socket (or fails the test).
void write_all(tunnel::tls::Stream& stream, const std::string& data);

// Waits until `fd` is ready for `events` (POLLIN/POLLOUT), at most `ms`.
bool wait_ready(int fd, short events, int ms);

// Open descriptors of this process.
size_t open_fds();

// `size` reproducible pseudo-random bytes.
std::string random_text(size_t size, unsigned seed);

}  // namespace tls_test
