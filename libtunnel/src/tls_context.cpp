// The two ends' SSL_CTX: TLS 1.3 only, files loaded with one-line errors, verification by CA (with
// the host name or IP address) or by pinned key, stateless tickets on the server and the last
// ticket kept on the client.
#include "tunnel/tls_context.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include <cerrno>
#include <cstring>
#include <ctime>
#include <stdexcept>

namespace tunnel::tls {
namespace {

// A PEM file is small; anything larger is not one of ours.
constexpr size_t kMaxFileSize = 1 << 20;
// A certificate that expires sooner than this is worth a warning at start-up.
constexpr time_t kExpirySoon = 14 * 24 * 3600;
// Distinguishes this server's sessions (needed for resumption with client certificates).
constexpr unsigned char kSessionContext[] = "tunnel-b";

struct FreeX509 {
  void operator()(X509* x) const { X509_free(x); }
};
struct FreeKey {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct FreeBio {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct FreeCtx {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using X509Ptr = std::unique_ptr<X509, FreeX509>;
using KeyPtr = std::unique_ptr<EVP_PKEY, FreeKey>;
using BioPtr = std::unique_ptr<BIO, FreeBio>;
using CtxPtr = std::unique_ptr<SSL_CTX, FreeCtx>;

// The reason of the most recent OpenSSL error, and an empty queue.
std::string openssl_error() {
  unsigned long code = ERR_peek_last_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  if (const char* reason = ERR_reason_error_string(code)) return reason;
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

[[noreturn]] void refuse(std::string_view what, const std::string& path, std::string_view problem) {
  ERR_clear_error();
  throw std::runtime_error(fmt::format("{} {}: {}", what, path, problem));
}

std::string read_small_file(const std::string& path, std::string_view what) {
  if (path.empty()) throw std::runtime_error(fmt::format("{}: no file name given", what));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) refuse(what, path, fmt::format("cannot read it: {}", std::strerror(errno)));
  std::string text;
  char chunk[4096];
  for (;;) {
    ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int error = errno;
      ::close(fd);
      refuse(what, path, fmt::format("cannot read it: {}", std::strerror(error)));
    }
    if (n == 0) break;
    text.append(chunk, static_cast<size_t>(n));
    if (text.size() > kMaxFileSize) {
      ::close(fd);
      refuse(what, path, "larger than 1 MiB, not a PEM file");
    }
  }
  ::close(fd);
  return text;
}

BioPtr memory_bio(const std::string& text) {
  BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  if (!bio) throw std::runtime_error("out of memory reading a PEM file");
  return bio;
}

bool no_pem_block(unsigned long code) {
  return ERR_GET_LIB(code) == ERR_LIB_PEM && ERR_GET_REASON(code) == PEM_R_NO_START_LINE;
}

// Every certificate in a PEM file, in order (the leaf first in a certificate chain file).
std::vector<X509Ptr> read_certificates(const std::string& path, std::string_view what) {
  std::string text = read_small_file(path, what);
  BioPtr bio = memory_bio(text);
  std::vector<X509Ptr> certificates;
  while (X509* certificate = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
    certificates.emplace_back(certificate);
  unsigned long code = ERR_peek_last_error();
  ERR_clear_error();
  if (certificates.empty()) {
    if (code == 0 || no_pem_block(code))
      refuse(what, path, "no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)");
    const char* reason = ERR_reason_error_string(code);
    refuse(what, path, fmt::format("not a valid PEM certificate: {}", reason ? reason : "?"));
  }
  return certificates;
}

KeyPtr read_private_key(const std::string& path) {
  constexpr std::string_view kWhat = "TLS key";
  std::string text = read_small_file(path, kWhat);
  BioPtr bio = memory_bio(text);
  // Without a callback OpenSSL would prompt on the terminal for a passphrase: answer none.
  bool asked = false;
  auto no_passphrase = [](char*, int, int, void* asked_flag) -> int {
    *static_cast<bool*>(asked_flag) = true;
    return 0;
  };
  KeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, &asked));
  ERR_clear_error();
  if (key) return key;
  if (asked)
    refuse(kWhat, path,
           fmt::format("encrypted with a passphrase, which the daemon cannot ask for (write a "
                       "decrypted copy, readable only by the daemon: openssl pkey -in {} -out NEW)",
                       path));
  refuse(kWhat, path, "no PEM private key in it (expected -----BEGIN PRIVATE KEY-----)");
}

std::string format_time(const ASN1_TIME* time) {
  std::tm tm{};
  if (!ASN1_TIME_to_tm(time, &tm)) return "?";
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return text;
}

void check_validity(const X509* certificate, std::string_view what, const std::string& path,
                    std::vector<std::string>& warnings) {
  const ASN1_TIME* not_after = X509_get0_notAfter(certificate);
  const ASN1_TIME* not_before = X509_get0_notBefore(certificate);
  time_t soon = std::time(nullptr) + kExpirySoon;
  if (X509_cmp_current_time(not_after) < 0)
    warnings.push_back(fmt::format("{} {} expired on {}: peers will refuse it", what, path,
                                   format_time(not_after)));
  else if (X509_cmp_current_time(not_before) > 0)
    warnings.push_back(fmt::format("{} {} is not valid before {}: peers will refuse it until then",
                                   what, path, format_time(not_before)));
  else if (X509_cmp_time(not_after, &soon) < 0)
    warnings.push_back(fmt::format("{} {} expires on {}", what, path, format_time(not_after)));
}

void check_key_mode(const std::string& path, std::vector<std::string>& warnings) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & S_IROTH))
    warnings.push_back(
        fmt::format("TLS key {} is readable by every user: chmod 600 {}", path, path));
}

CtxPtr new_tls13_context(const SSL_METHOD* method) {
  CtxPtr ctx(SSL_CTX_new(method));
  if (!ctx) throw std::runtime_error("OpenSSL cannot make a TLS context: " + openssl_error());
  if (!SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION) ||
      !SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION))
    throw std::runtime_error("OpenSSL cannot restrict TLS to version 1.3: " + openssl_error());
  if (!SSL_CTX_set_ciphersuites(ctx.get(), preferred_ciphersuites().c_str()))
    throw std::runtime_error("OpenSSL refuses the TLS 1.3 cipher suites: " + openssl_error());
  // Partial writes and a moving buffer let the relay write what it has and retry from its buffer;
  // released buffers keep an idle connection from holding OpenSSL's 2 x 16 KiB.
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                  SSL_MODE_RELEASE_BUFFERS);
  return ctx;
}

// The certificate (with its chain) and key this end presents.
void use_identity(SSL_CTX* ctx, const std::string& cert_file, const std::string& key_file,
                  std::vector<std::string>& warnings) {
  constexpr std::string_view kWhat = "TLS certificate";
  std::vector<X509Ptr> chain = read_certificates(cert_file, kWhat);
  KeyPtr key = read_private_key(key_file);
  if (X509_check_private_key(chain.front().get(), key.get()) != 1)
    refuse("TLS key", key_file, fmt::format("does not match the certificate {}", cert_file));
  if (SSL_CTX_use_certificate(ctx, chain.front().get()) != 1)
    refuse(kWhat, cert_file, fmt::format("refused by OpenSSL: {}", openssl_error()));
  for (size_t i = 1; i < chain.size(); ++i)
    if (SSL_CTX_add1_chain_cert(ctx, chain[i].get()) != 1)
      refuse(kWhat, cert_file, fmt::format("chain certificate {} refused: {}", i, openssl_error()));
  if (SSL_CTX_use_PrivateKey(ctx, key.get()) != 1)
    refuse("TLS key", key_file, fmt::format("refused by OpenSSL: {}", openssl_error()));
  check_validity(chain.front().get(), kWhat, cert_file, warnings);
  check_key_mode(key_file, warnings);
}

// Trusts every certificate in `path`. Partial chains are accepted: any certificate in the file
// is a trust anchor, so it may hold a CA or the peer's own certificate, self-signed or not.
std::vector<X509Ptr> trust(SSL_CTX* ctx, const std::string& path, std::string_view what,
                           std::vector<std::string>& warnings) {
  std::vector<X509Ptr> anchors = read_certificates(path, what);
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  for (auto& anchor : anchors) {
    if (X509_STORE_add_cert(store, anchor.get()) != 1)
      refuse(what, path, fmt::format("refused by OpenSSL: {}", openssl_error()));
    check_validity(anchor.get(), what, path, warnings);
  }
  X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), X509_V_FLAG_PARTIAL_CHAIN);
  return anchors;
}

bool is_ip_literal(const std::string& name) {
  unsigned char address[16];
  return ::inet_pton(AF_INET, name.c_str(), address) == 1 ||
         ::inet_pton(AF_INET6, name.c_str(), address) == 1;
}

// "[::1]" as written in HOST:PORT is the address ::1.
std::string bare_host(std::string name) {
  if (name.size() >= 2 && name.front() == '[' && name.back() == ']')
    name = name.substr(1, name.size() - 2);
  return name;
}

// A ticket that resumed a session is used as it is, with no new ticket after the handshake: the
// client keeps offering the ticket it has (OpenSSL accepts a stateless ticket again) until its
// lifetime is over, when a full handshake brings a new one. Each resumed data connection then
// costs no ticket made and sent by the server, and none read and copied by the client. OpenSSL
// 3.0 asks to renew every TLS 1.3 ticket (SSL_TICKET_SUCCESS_RENEW); nothing here needs it: the
// key that seals tickets is this context's own, drawn at random, for its whole life.
SSL_TICKET_RETURN keep_ticket(SSL* ssl, SSL_SESSION*, const unsigned char*, size_t,
                              SSL_TICKET_STATUS status, void*) {
  switch (status) {
    case SSL_TICKET_SUCCESS:
    case SSL_TICKET_SUCCESS_RENEW:
      // The return value alone does not stop a TLS 1.3 renewal; no ticket to send does (this
      // runs while the ClientHello is read, before the server decides how many to send).
      SSL_set_num_tickets(ssl, 0);
      return SSL_TICKET_RETURN_USE;
    case SSL_TICKET_FATAL_ERR_MALLOC:
    case SSL_TICKET_FATAL_ERR_OTHER:
      return SSL_TICKET_RETURN_ABORT;
    default:  // none, empty or not ours: a full handshake, and a ticket after it
      return SSL_TICKET_RETURN_IGNORE_RENEW;
  }
}

// The Stream that owns the SSL being verified (a store context's SSL, the SSL's app data).
Stream* stream_of(X509_STORE_CTX* store) {
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  return ssl ? static_cast<Stream*>(SSL_get_app_data(ssl)) : nullptr;
}

}  // namespace

bool cpu_has_aes() {
#if defined(__x86_64__) || defined(__i386__)
  // AES-NI for the cipher, PCLMULQDQ for GCM's hash: OpenSSL's fast AES-GCM needs both.
  __builtin_cpu_init();
  return __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
#elif defined(__aarch64__)
  unsigned long caps = ::getauxval(AT_HWCAP);
  return (caps & HWCAP_AES) && (caps & HWCAP_PMULL);
#else
  return false;
#endif
}

std::string preferred_ciphersuites() {
  // With AES instructions AES-128-GCM is the cheapest per byte (AES-256 runs 14 rounds instead of
  // 10 for no gain that matters here); without them ChaCha20-Poly1305 is several times faster than
  // AES in software. The other suites stay listed, for a peer that offers only them.
  return cpu_has_aes()
             ? "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"
             : "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384";
}

// ---------------------------------------------------------------------------------------------
// Server

struct ServerContext::State {
  CtxPtr ctx;
  std::vector<std::string> warnings;
  bool client_certificates = false;
  HandshakeCounts counts;
};

ServerContext::ServerContext(std::unique_ptr<State> state) : state_(std::move(state)) {}
ServerContext::ServerContext(ServerContext&&) noexcept = default;
ServerContext& ServerContext::operator=(ServerContext&&) noexcept = default;
ServerContext::~ServerContext() = default;

ServerContext ServerContext::load(const std::string& cert_file, const std::string& key_file,
                                  const std::string& client_ca_file) {
  auto state = std::make_unique<State>();
  state->ctx = new_tls13_context(TLS_server_method());
  SSL_CTX* ctx = state->ctx.get();
  use_identity(ctx, cert_file, key_file, state->warnings);
  // Stateless tickets (the default unless SSL_OP_NO_TICKET): the session travels in the ticket,
  // encrypted under a key this context drew at random, so the server keeps no cache. One ticket
  // per handshake is enough for a client that keeps only its last one.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 1);
  SSL_CTX_set_session_ticket_cb(ctx, nullptr, keep_ticket, nullptr);
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
  // The server's order decides (its CPU pays for half the work), except that a client which puts
  // ChaCha20 first gets it: that client has no AES instructions, and AES would cost it far more.
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
  if (!client_ca_file.empty()) {
    for (auto& anchor : trust(ctx, client_ca_file, "TLS client CA file", state->warnings))
      SSL_CTX_add_client_CA(ctx, anchor.get());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    state->client_certificates = true;
  }
  ERR_clear_error();
  return ServerContext(std::move(state));
}

const std::vector<std::string>& ServerContext::warnings() const {
  return state_->warnings;
}

bool ServerContext::requires_client_certificate() const {
  return state_->client_certificates;
}

std::unique_ptr<Stream> ServerContext::new_stream(int fd) {
  SSL* ssl = SSL_new(state_->ctx.get());
  if (!ssl) throw std::runtime_error("OpenSSL cannot make a TLS connection: " + openssl_error());
  SSL_set_accept_state(ssl);
  return std::unique_ptr<Stream>(new Stream(ssl, fd, Role::server, &state_->counts, {}));
}

HandshakeCounts ServerContext::counts() const {
  return state_->counts;
}

ssl_ctx_st* ServerContext::native_handle() const {
  return state_->ctx.get();
}

// ---------------------------------------------------------------------------------------------
// Client

struct ClientContext::State {
  ~State() {
    if (session) SSL_SESSION_free(session);
  }
  CtxPtr ctx;
  std::vector<std::string> warnings;
  std::optional<Pin> pin;
  std::string server_name;
  bool name_is_ip = false;
  bool resume = true;
  SSL_SESSION* session = nullptr;  // the last ticket received, one reference held
  HandshakeCounts counts;
};

ClientContext::ClientContext(std::unique_ptr<State> state) : state_(std::move(state)) {}
ClientContext::ClientContext(ClientContext&&) noexcept = default;
ClientContext& ClientContext::operator=(ClientContext&&) noexcept = default;
ClientContext::~ClientContext() = default;

ClientContext ClientContext::load(const ClientTlsOptions& options) {
  if (!options.ca_file.empty() && options.pin)
    throw std::runtime_error("TLS: give either --tls-ca or --tls-pin, not both");
  if (options.ca_file.empty() && !options.pin)
    throw std::runtime_error(
        "TLS: no way to verify the server: give --tls-ca FILE (a CA, or the server's own "
        "certificate) or --tls-pin sha256:<hex> (scripts/gen-cert.sh prints it)");
  if (options.cert_file.empty() != options.key_file.empty())
    throw std::runtime_error("TLS: --tls-cert and --tls-key go together: give both or neither");
  std::string name = bare_host(options.server_name);
  if (!options.ca_file.empty() && name.empty())
    throw std::runtime_error("TLS: no server name to check the server's certificate against");

  auto state = std::make_unique<State>();
  state->ctx = new_tls13_context(TLS_client_method());
  SSL_CTX* ctx = state->ctx.get();
  state->pin = options.pin;
  state->server_name = name;
  state->name_is_ip = is_ip_literal(name);
  state->resume = options.resume;
  if (!options.cert_file.empty())
    use_identity(ctx, options.cert_file, options.key_file, state->warnings);

  if (options.pin) {
    // Only the key counts: the chain is not built at all.
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    SSL_CTX_set_cert_verify_callback(ctx, &ClientContext::verify_pin, state.get());
  } else {
    trust(ctx, options.ca_file, "TLS CA file", state->warnings);
    X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    bool named = state->name_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) == 1
                                   : X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0) == 1;
    if (!named)
      throw std::runtime_error(fmt::format("TLS: cannot check certificates against the name {}: {}",
                                           name, openssl_error()));
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, &ClientContext::note_verify_failure);
  }

  // Keep tickets ourselves (the last one), not in OpenSSL's internal client cache.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, &ClientContext::on_new_session);
  SSL_CTX_set_app_data(ctx, state.get());
  ERR_clear_error();
  return ClientContext(std::move(state));
}

const std::vector<std::string>& ClientContext::warnings() const {
  return state_->warnings;
}

std::unique_ptr<Stream> ClientContext::new_stream(int fd) {
  SSL* ssl = SSL_new(state_->ctx.get());
  if (!ssl) throw std::runtime_error("OpenSSL cannot make a TLS connection: " + openssl_error());
  SSL_set_connect_state(ssl);
  if (!state_->name_is_ip && !state_->server_name.empty())
    SSL_set_tlsext_host_name(ssl, state_->server_name.c_str());
  // Each connection gets its own copy of the kept ticket: OpenSSL marks the session of a
  // connection freed without close_notify not resumable, and that must not reach the one we keep.
  if (state_->resume && state_->session && SSL_SESSION_is_resumable(state_->session)) {
    SSL_SESSION* offered = SSL_SESSION_dup(state_->session);
    if (offered) {
      SSL_set_session(ssl, offered);  // takes its own reference
      SSL_SESSION_free(offered);
    }
  }
  ERR_clear_error();
  return std::unique_ptr<Stream>(
      new Stream(ssl, fd, Role::client, &state_->counts, state_->server_name));
}

HandshakeCounts ClientContext::counts() const {
  return state_->counts;
}

bool ClientContext::has_session() const {
  return state_->session != nullptr;
}

void ClientContext::forget_session() {
  if (state_->session) SSL_SESSION_free(state_->session);
  state_->session = nullptr;
}

ssl_ctx_st* ClientContext::native_handle() const {
  return state_->ctx.get();
}

int ClientContext::on_new_session(SSL* ssl, SSL_SESSION* session) {
  auto* state = static_cast<State*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (!state) return 0;  // not ours to keep: OpenSSL frees it
  // A copy, not `session` itself: that one stays the connection's own, and is spoiled with it if
  // the connection ends without close_notify (see new_stream).
  SSL_SESSION* copy = SSL_SESSION_dup(session);
  if (!copy) return 0;
  if (state->session) SSL_SESSION_free(state->session);
  state->session = copy;
  return 0;  // OpenSSL keeps (and frees) its own reference
}

// Replaces the whole chain verification when a pin is given: the leaf's key must be the pinned
// one. Called from inside OpenSSL: nothing may throw through it.
int ClientContext::verify_pin(X509_STORE_CTX* store, void* arg) {
  const auto* state = static_cast<const State*>(arg);
  X509* leaf = X509_STORE_CTX_get0_cert(store);
  std::optional<Pin> seen;
  try {
    if (leaf) seen = spki_pin(leaf);
  } catch (const std::exception&) {
  }
  if (seen && state->pin && *seen == *state->pin) {
    X509_STORE_CTX_set_error(store, X509_V_OK);
    return 1;
  }
  if (Stream* stream = stream_of(store)) {
    stream->refused_key_ = seen;
    stream->pin_mismatch_ = true;
  }
  // "Rejected" makes OpenSSL send the server a bad_certificate alert, which it can explain.
  X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
  return 0;
}

// The normal chain verification's per-certificate callback: it changes nothing, but notes the
// server's key when the verification fails, so the refusal can name it.
int ClientContext::note_verify_failure(int ok, X509_STORE_CTX* store) {
  if (ok) return ok;
  Stream* stream = stream_of(store);
  X509* leaf = X509_STORE_CTX_get0_cert(store);
  if (stream && leaf && !stream->refused_key_) {
    try {
      stream->refused_key_ = spki_pin(leaf);
    } catch (const std::exception&) {
    }
  }
  return ok;
}

}  // namespace tunnel::tls
