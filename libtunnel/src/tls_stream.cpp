// One TLS connection over a socket the Stream does not own: OpenSSL reads and writes it through a
// small BIO of ours (recv/send with MSG_DONTWAIT and MSG_NOSIGNAL), which also keeps the first
// bytes the peer sent, so that a refusal can say "plain text" instead of "wrong version number",
// and, in bulk mode, gathers the records of one write() into one send.
#include "tunnel/tls_stream.hpp"

#include <fmt/format.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace tunnel::tls {

namespace detail {

// What the BIO knows of its socket.
struct SocketState {
  int fd = -1;
  bool eof = false;  // recv returned 0: the peer sent a FIN
  int error = 0;     // errno of the last failed recv/send, 0 if none (cleared before each call)
  uint64_t received = 0;
  bool drained = false;          // the last recv found the socket empty, or emptied it
  std::array<char, 16> first{};  // the first bytes the peer sent
  size_t first_length = 0;
  // Bulk mode: while `gather` is set (inside Stream::write) records are appended to `out` instead
  // of sent one by one, and sent together at the end of the write. Whatever the socket did not
  // take stays in `out`, and every later record goes after it, so that the order on the wire is
  // the order OpenSSL wrote in.
  bool gather = false;
  std::unique_ptr<char[]> out;  // kGatherBytes, allocated on first use
  size_t out_start = 0;
  size_t out_length = 0;
};

}  // namespace detail

namespace {

using detail::SocketState;

// The largest TLS 1.3 record on the wire: 5 bytes of header and up to 2^14 + 256 bytes of
// ciphertext (RFC 8446, 5.2). A full record of ours is 16406 bytes (16384 + 1 + 16 + 5).
constexpr size_t kMaxRecordBytes = 5 + 16 * 1024 + 256;
// The most plaintext one record carries (RFC 8446, 5.1).
constexpr size_t kMaxPlaintext = 16 * 1024;
// What one bulk write() gathers before it must send: the records of 64 KiB of plaintext (the
// relay's buffer), with room to spare for a KeyUpdate or an alert.
constexpr size_t kGatherBytes = 4 * kMaxRecordBytes;
// OpenSSL's read buffer while streaming, with read-ahead: one recv takes up to this much, several
// records, which the following reads decrypt without a system call. Twice this was slower: the
// buffer passed glibc's 128 KiB mmap threshold.
constexpr size_t kReadAheadBytes = 4 * kMaxRecordBytes;

int socket_read(BIO* bio, char* out, int length) {
  auto* socket = static_cast<SocketState*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  if (length <= 0) return 0;
  ssize_t n;
  do {
    n = ::recv(socket->fd, out, static_cast<size_t>(length), MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    size_t keep = std::min(socket->first.size() - socket->first_length, static_cast<size_t>(n));
    std::memcpy(socket->first.data() + socket->first_length, out, keep);
    socket->first_length += keep;
    socket->received += static_cast<uint64_t>(n);
    // Short: TCP gave all it had (with read-ahead OpenSSL asks for a whole buffer's worth).
    socket->drained = n < length;
    return static_cast<int>(n);
  }
  if (n == 0) {
    socket->eof = true;
    return 0;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    socket->drained = true;
    BIO_set_retry_read(bio);
    return -1;
  }
  socket->error = errno;
  return -1;
}

// One send of the gathered bytes: 1 when all went, 0 when the socket took only part or none of
// them, -1 on an error (socket.error).
int send_gathered(SocketState& socket) {
  if (socket.out_length == 0) return 1;
  ssize_t n;
  do {
    n = ::send(socket.fd, socket.out.get() + socket.out_start, socket.out_length,
               MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    socket.error = errno;
    return -1;
  }
  socket.out_start += static_cast<size_t>(n);
  socket.out_length -= static_cast<size_t>(n);
  if (socket.out_length > 0) return 0;
  socket.out_start = 0;
  return 1;
}

int send_now(BIO* bio, SocketState& socket, const char* data, size_t length) {
  ssize_t n;
  do {
    n = ::send(socket.fd, data, length, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n >= 0) return static_cast<int>(n);
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    BIO_set_retry_write(bio);
    return -1;
  }
  socket.error = errno;
  return -1;
}

// Appends one record to the gathered bytes. When they leave no room, they are sent first; when
// the socket does not take enough of them, OpenSSL is told to retry (it keeps the record).
int gather_write(BIO* bio, SocketState& socket, const char* data, size_t length) {
  if (!socket.out) {
    socket.out = std::make_unique_for_overwrite<char[]>(kGatherBytes);
    socket.out_start = 0;
    socket.out_length = 0;
  }
  if (socket.out_start + socket.out_length + length > kGatherBytes) {
    if (send_gathered(socket) < 0) return -1;
    if (socket.out_start > 0) {
      std::memmove(socket.out.get(), socket.out.get() + socket.out_start, socket.out_length);
      socket.out_start = 0;
    }
    // Larger than the whole buffer (not a record of ours): nothing is before it now.
    if (socket.out_length == 0 && length > kGatherBytes) return send_now(bio, socket, data, length);
    if (socket.out_length + length > kGatherBytes) {
      BIO_set_retry_write(bio);
      return -1;
    }
  }
  std::memcpy(socket.out.get() + socket.out_start + socket.out_length, data, length);
  socket.out_length += length;
  return static_cast<int>(length);
}

int socket_write(BIO* bio, const char* data, int length) {
  auto* socket = static_cast<SocketState*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  if (length <= 0) return 0;
  if (socket->gather || socket->out_length > 0)
    return gather_write(bio, *socket, data, static_cast<size_t>(length));
  return send_now(bio, *socket, data, static_cast<size_t>(length));
}

long socket_ctrl(BIO* bio, int command, long, void* argument) {
  auto* socket = static_cast<SocketState*>(BIO_get_data(bio));
  switch (command) {
    case BIO_CTRL_FLUSH:
      return 1;  // nothing is buffered here
    case BIO_CTRL_EOF:
      return socket && socket->eof ? 1 : 0;  // how OpenSSL tells a FIN from an error
    case BIO_C_GET_FD:
      if (!socket) return -1;
      if (argument) *static_cast<int*>(argument) = socket->fd;
      return socket->fd;
    default:
      return 0;
  }
}

// Made once, kept for the life of the process.
BIO_METHOD* socket_method() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
                                 "tunnel socket");
    if (m) {
      BIO_meth_set_read(m, socket_read);
      BIO_meth_set_write(m, socket_write);
      BIO_meth_set_ctrl(m, socket_ctrl);
    }
    return m;
  }();
  return method;
}

bool is_tls_record_start(char byte) {
  // A TLS peer's first record is a handshake message, or an alert refusing ours.
  return byte == 0x16 || byte == 0x15;
}

bool printable(char c) {
  return c >= 0x20 && c < 0x7f;
}

// The earliest error of the SSL library in the queue (or the earliest of any), and an empty queue.
unsigned long take_error() {
  unsigned long first = 0, first_ssl = 0;
  while (unsigned long code = ERR_get_error()) {
    if (!first) first = code;
    if (!first_ssl && ERR_GET_LIB(code) == ERR_LIB_SSL) first_ssl = code;
  }
  return first_ssl ? first_ssl : first;
}

std::string reason_text(unsigned long code) {
  if (code == 0) return "unknown error";
  if (const char* reason = ERR_reason_error_string(code)) return reason;
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

std::string alert_text(int alert, unsigned long code) {
  switch (alert) {
    case SSL_AD_BAD_CERTIFICATE:
      return "bad certificate";
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
      return "unsupported certificate";
    case SSL_AD_CERTIFICATE_REVOKED:
      return "certificate revoked";
    case SSL_AD_CERTIFICATE_EXPIRED:
      return "certificate expired";
    case SSL_AD_CERTIFICATE_UNKNOWN:
      return "certificate unknown";
    case SSL_AD_UNKNOWN_CA:
      return "unknown CA";
    case SSL_AD_ACCESS_DENIED:
      return "access denied";
    case SSL_AD_DECRYPT_ERROR:
      return "decrypt error";
    case SSL_AD_PROTOCOL_VERSION:
      return "protocol version";
    case SSL_AD_HANDSHAKE_FAILURE:
      return "handshake failure";
    case SSL_AD_CERTIFICATE_REQUIRED:
      return "certificate required";
    default:
      return reason_text(code);
  }
}

bool is_certificate_alert(int alert) {
  switch (alert) {
    case SSL_AD_BAD_CERTIFICATE:
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
    case SSL_AD_CERTIFICATE_REVOKED:
    case SSL_AD_CERTIFICATE_EXPIRED:
    case SSL_AD_CERTIFICATE_UNKNOWN:
    case SSL_AD_UNKNOWN_CA:
    case SSL_AD_ACCESS_DENIED:
    case SSL_AD_DECRYPT_ERROR:
      return true;
    default:
      return false;
  }
}

}  // namespace

Stream::Stream(SSL* ssl, int fd, Role role, HandshakeCounts* counts, std::string server_name)
    : ssl_(ssl), fd_(fd), role_(role), counts_(counts), server_name_(std::move(server_name)) {
  BIO* bio = nullptr;
  try {
    socket_ = std::make_unique<detail::SocketState>();
    socket_->fd = fd;
    BIO_METHOD* method = socket_method();
    bio = method ? BIO_new(method) : nullptr;
  } catch (...) {
    SSL_free(ssl_);
    throw;
  }
  if (!bio) {
    SSL_free(ssl_);
    ERR_clear_error();
    throw std::runtime_error("OpenSSL cannot make a socket BIO");
  }
  BIO_set_data(bio, socket_.get());
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl_, bio, bio);  // one reference, used for both directions, now the SSL's
  SSL_set_app_data(ssl_, this);
}

Stream::~Stream() {
  // Frees the BIO too, which only points at socket_ (freed after this body). Sends nothing.
  SSL_free(ssl_);
}

HandshakeStep Stream::handshake() {
  switch (state_) {
    case State::established:
      return {Progress::done, Failure::protocol, {}};
    case State::failed:
      return {Progress::failed, failure_, failure_detail_};
    case State::handshaking:
      break;
  }
  if (role_ == Role::server && socket_->received == 0 && peeked_plain_text())
    return finish_failed_handshake(SSL_ERROR_SSL, 0);
  ERR_clear_error();
  socket_->error = 0;
  int result = SSL_do_handshake(ssl_);
  if (result == 1) {
    state_ = State::established;
    if (counts_) ++(resumed() ? counts_->resumed : counts_->full);
    return {Progress::done, Failure::protocol, {}};
  }
  int error = SSL_get_error(ssl_, result);
  // A peer that is not speaking TLS is known from its first byte, whatever OpenSSL waits for.
  bool plain = socket_->first_length > 0 && !is_tls_record_start(socket_->first[0]);
  if (!plain && error == SSL_ERROR_WANT_READ) {
    input_stalled_ = true;
    return {Progress::want_read, Failure::protocol, {}};
  }
  if (!plain && error == SSL_ERROR_WANT_WRITE) return {Progress::want_write, Failure::protocol, {}};
  return finish_failed_handshake(error, take_error());
}

HandshakeStep Stream::finish_failed_handshake(int ssl_error, unsigned long code) {
  auto [failure, detail] = classify(ssl_error, code);
  state_ = State::failed;
  failure_ = failure;
  failure_detail_ = detail;
  return {Progress::failed, failure, std::move(detail)};
}

// Before OpenSSL reads anything, the server looks at the client's first bytes without taking
// them: plain text is refused before OpenSSL answers it with a TLS alert, so the owner may answer
// in plain text on a clean socket (the bytes stay unread in it). True if refused.
bool Stream::peeked_plain_text() {
  char head[16];
  ssize_t n;
  do {
    n = ::recv(fd_, head, sizeof head, MSG_PEEK | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n <= 0 || is_tls_record_start(head[0])) return false;  // OpenSSL will see to it
  std::memcpy(socket_->first.data(), head, static_cast<size_t>(n));
  socket_->first_length = static_cast<size_t>(n);
  return true;
}

// Why the connection failed, from what OpenSSL and the socket say. `code` is the queue's error.
std::pair<Failure, std::string> Stream::classify(int ssl_error, unsigned long code) const {
  bool server = role_ == Role::server;
  bool handshaking = state_ == State::handshaking;

  // Not TLS at all: the peer's first bytes are not a TLS record.
  if (socket_->first_length > 0 && !is_tls_record_start(socket_->first[0])) {
    if (server) {
      // The protocol's hello, or as much of it as has come.
      constexpr std::string_view kHello = "TUNNEL/";
      std::string_view text(socket_->first.data(), socket_->first_length);
      bool hello = text.starts_with(kHello) || (text.size() >= 2 && kHello.starts_with(text));
      return {Failure::plaintext_hello,
              hello ? "plaintext hello on a TLS port (a client without --tls)"
                    : "plaintext hello on a TLS port (the first bytes are not a TLS record)"};
    }
    // A plain tunnel server answers with a line: show it, cut at its end, printable only.
    std::string text = peer_text();
    std::string answer = text.substr(0, text.find_first_of("\r\n"));
    if (answer.size() > 80) answer.resize(80);
    bool readable = !answer.empty() && std::all_of(answer.begin(), answer.end(), printable);
    return {Failure::not_tls,
            readable ? fmt::format("server does not speak TLS: it answered \"{}\"", answer)
                     : "server does not speak TLS: its first bytes are not a TLS record"};
  }

  int library = ERR_GET_LIB(code);
  int reason = ERR_GET_REASON(code);
  bool ssl_library = library == ERR_LIB_SSL;

  // Our verification of the peer's certificate failed.
  if (pin_mismatch_)
    return {Failure::pin_mismatch,
            refused_key_ ? fmt::format("pin mismatch: server key {}", format_pin(*refused_key_))
                         : "pin mismatch: the server's key could not be read"};
  if (ssl_library && reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
    long verify = SSL_get_verify_result(ssl_);
    std::string text = X509_verify_cert_error_string(verify);
    std::string whose = server ? "client certificate" : "server certificate";
    std::string key =
        refused_key_ ? fmt::format(" (server key {})", format_pin(*refused_key_)) : "";
    switch (verify) {
      case X509_V_ERR_CERT_HAS_EXPIRED:
      case X509_V_ERR_CERT_NOT_YET_VALID:
        return {Failure::certificate_expired, fmt::format("{} verify failed: {}", whose, text)};
      case X509_V_ERR_HOSTNAME_MISMATCH:
      case X509_V_ERR_IP_ADDRESS_MISMATCH:
        return {Failure::name_mismatch, fmt::format("{} verify failed: {} (it is not for {}){}",
                                                    whose, text, server_name_, key)};
      default:
        return {Failure::certificate_untrusted,
                fmt::format("{} verify failed: {}{}", whose, text, key)};
    }
  }
  if (ssl_library && reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
    return {Failure::no_client_certificate,
            "client sent no certificate (this server requires one: --tls-cert and --tls-key on "
            "the client)"};

  // The peer refused us with an alert.
  if (ssl_library && reason >= SSL_AD_REASON_OFFSET) {
    int alert = reason - SSL_AD_REASON_OFFSET;
    std::string text = alert_text(alert, code);
    if (alert == SSL_AD_CERTIFICATE_REQUIRED)
      return {Failure::no_client_certificate,
              server ? "the client says a certificate is required"
                     : "the server requires a client certificate (--tls-cert and --tls-key)"};
    if (is_certificate_alert(alert))
      return {Failure::refused_by_peer, fmt::format("the {} refused our certificate ({})",
                                                    server ? "client" : "server", text)};
    return {Failure::refused_by_peer,
            fmt::format("the {} refused the connection ({})", server ? "client" : "server", text)};
  }

  // The connection ended under us.
  bool truncated = ssl_library && reason == SSL_R_UNEXPECTED_EOF_WHILE_READING;
  if (socket_->eof || truncated || ssl_error == SSL_ERROR_SYSCALL || socket_->error) {
    std::string peer = server ? "the client" : "the server";
    std::string how;
    if (socket_->error == ECONNRESET || socket_->error == EPIPE)
      how = "reset the connection";
    else if (socket_->error)
      how = fmt::format("is unreachable ({})", std::strerror(socket_->error));
    else
      how = handshaking ? "closed the connection" : "closed the connection without close_notify";
    std::string when = handshaking ? " during the TLS handshake" : " (truncated)";
    std::string hint;
    if (handshaking && !server && socket_->received == 0)
      hint = " without answering: does it speak TLS on this port?";
    return {Failure::closed, peer + " " + how + when + hint};
  }

  if (ssl_library && reason == SSL_R_UNSUPPORTED_PROTOCOL)
    return {Failure::protocol, fmt::format("the {} does not speak TLS 1.3 ({})",
                                           server ? "client" : "server", reason_text(code))};
  return {Failure::protocol,
          fmt::format("TLS {} failed: {}", handshaking ? "handshake" : "connection",
                      reason_text(code))};
}

std::string Stream::peer_text() const {
  std::string text(socket_->first.data(), socket_->first_length);
  // Joined with what waits in the socket only when nothing was consumed between the two.
  if (socket_->received > socket_->first_length) return text;
  char more[96];
  ssize_t n = ::recv(fd_, more, sizeof more, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) text.append(more, static_cast<size_t>(n));
  return text;
}

IoResult Stream::io_failure(int ssl_error, std::string_view doing) {
  unsigned long code = take_error();
  state_ = State::failed;
  IoResult result;
  if (socket_->error == ECONNRESET || socket_->error == EPIPE) {
    result.status = IoStatus::reset;
    result.failure = Failure::closed;
    result.detail = fmt::format("connection reset by the peer while {}", doing);
  } else {
    auto [failure, detail] = classify(ssl_error, code);
    result.status = IoStatus::error;
    result.failure = failure;
    result.detail = std::move(detail);
  }
  failure_ = result.failure;
  failure_detail_ = result.detail;
  return result;
}

IoResult Stream::not_usable(std::string_view doing) const {
  if (state_ == State::failed) return {IoStatus::error, 0, failure_, failure_detail_};
  return {IoStatus::error, 0, Failure::protocol,
          fmt::format("{} before the TLS handshake completed", doing)};
}

IoResult Stream::read(std::span<char> out) {
  if (deferred_end_) {
    IoResult end = std::move(*deferred_end_);
    deferred_end_.reset();
    return end;
  }
  if (state_ != State::established) return not_usable("reading");
  if (out.empty()) return {IoStatus::ok, 0, Failure::protocol, {}};
  // SSL_read_ex gives one record at most: go on while the next one is already here, so that one
  // call takes what one recv brought (several records with read-ahead), and stop before waiting.
  size_t total = 0;
  for (;;) {
    // The read buffer OpenSSL had when bytes began to stream holds one record; once empty it is
    // freed, and the next one has the read-ahead size.
    if (resize_read_buffer_ && pending() == 0 && SSL_has_pending(ssl_) == 0 &&
        SSL_free_buffers(ssl_) == 1)
      resize_read_buffer_ = false;
    ERR_clear_error();
    socket_->error = 0;
    size_t n = 0;
    int result = SSL_read_ex(ssl_, out.data() + total, out.size() - total, &n);
    if (result == 1) {
      input_stalled_ = false;
      total += n;
      if (bulk_ && n >= kMaxPlaintext) start_streaming();  // full records: the peer sends a lot
      if (total == out.size() || !has_buffered_input()) break;
      continue;
    }
    IoResult end = read_end(SSL_get_error(ssl_, result));
    if (total == 0) return end;
    // The bytes first; an end comes with the next call, a wait is for the caller to find.
    if (end.status != IoStatus::want_read && end.status != IoStatus::want_write)
      deferred_end_ = std::move(end);
    break;
  }
  return {IoStatus::ok, total, Failure::protocol, {}};
}

IoResult Stream::read_end(int ssl_error) {
  switch (ssl_error) {
    case SSL_ERROR_WANT_READ:
      input_stalled_ = true;
      return {IoStatus::want_read, 0, Failure::protocol, {}};
    case SSL_ERROR_WANT_WRITE:
      return {IoStatus::want_write, 0, Failure::protocol, {}};
    case SSL_ERROR_ZERO_RETURN:
      ERR_clear_error();
      return {IoStatus::eof, 0, Failure::protocol, "the peer closed its side (close_notify)"};
    default:
      return io_failure(ssl_error, "reading");
  }
}

IoResult Stream::write(std::span<const char> data) {
  if (state_ != State::established) return not_usable("writing");
  if (shutdown_sent_)
    return {IoStatus::error, 0, Failure::protocol, "writing after shutdown_write"};
  if (data.empty()) return {IoStatus::ok, 0, Failure::protocol, {}};
  if (bulk_) {
    // Earlier records first: nothing new is taken while the socket holds them back.
    if (IoResult sent = flush(); sent.status != IoStatus::ok) return sent;
    if (data.size() > kMaxPlaintext) return write_gathered(data);
  }
  ERR_clear_error();
  socket_->error = 0;
  size_t n = 0;
  int result = SSL_write_ex(ssl_, data.data(), data.size(), &n);
  if (result == 1) return {IoStatus::ok, n, Failure::protocol, {}};
  return write_end(SSL_get_error(ssl_, result));
}

IoResult Stream::write_end(int ssl_error) {
  switch (ssl_error) {
    case SSL_ERROR_WANT_READ:
      return {IoStatus::want_read, 0, Failure::protocol, {}};
    case SSL_ERROR_WANT_WRITE:
      return {IoStatus::want_write, 0, Failure::protocol, {}};
    default:
      return io_failure(ssl_error, "writing");
  }
}

// Bulk mode, more than one record's worth: every record of `data` into the gather buffer (with
// partial writes on, SSL_write_ex makes one record per call), then one send for all of them,
// with nothing unsent before them. Only the records OpenSSL finished count as written: one it
// kept after a retry is written again by the repeated call, which starts where the count ends
// (tls_stream.hpp).
IoResult Stream::write_gathered(std::span<const char> data) {
  start_streaming();
  size_t total = 0;
  std::optional<IoResult> end;
  socket_->gather = true;
  while (total < data.size()) {
    ERR_clear_error();
    socket_->error = 0;
    size_t n = 0;
    int result = SSL_write_ex(ssl_, data.data() + total, data.size() - total, &n);
    if (result != 1) {
      end = write_end(SSL_get_error(ssl_, result));
      break;
    }
    total += n;
  }
  socket_->gather = false;
  if (end && end->status != IoStatus::want_read && end->status != IoStatus::want_write)
    return std::move(*end);  // failed: the stream is done, gathered or not
  if (IoResult sent = flush(); sent.status != IoStatus::ok && sent.status != IoStatus::want_write)
    return sent;
  if (total > 0) return {IoStatus::ok, total, Failure::protocol, {}};
  return std::move(*end);
}

IoResult Stream::flush() {
  if (socket_->out_length == 0) return {IoStatus::ok, 0, Failure::protocol, {}};
  socket_->error = 0;
  int sent = send_gathered(*socket_);
  if (sent < 0) {
    ERR_clear_error();
    return io_failure(SSL_ERROR_SYSCALL, "writing");
  }
  if (sent == 0) return {IoStatus::want_write, 0, Failure::protocol, {}};
  return {IoStatus::ok, 0, Failure::protocol, {}};
}

size_t Stream::unsent() const {
  return socket_->out_length;
}

IoResult Stream::shutdown_write() {
  if (write_shut_) return {IoStatus::ok, 0, Failure::protocol, {}};
  if (state_ != State::established) return not_usable("shutting down");
  // close_notify goes after every record written before it.
  if (IoResult sent = flush(); sent.status != IoStatus::ok) return sent;
  // The first SSL_shutdown queues close_notify and sends it; it is called again only to flush an
  // alert the socket did not take (want_write): a further call would wait for the peer's
  // close_notify, reading and dropping its data.
  ERR_clear_error();
  socket_->error = 0;
  shutdown_sent_ = true;
  int result = SSL_shutdown(ssl_);
  if (result < 0) {
    int error = SSL_get_error(ssl_, result);
    if (error == SSL_ERROR_WANT_WRITE) return {IoStatus::want_write, 0, Failure::protocol, {}};
    return io_failure(error, "sending close_notify");
  }
  ERR_clear_error();
  write_shut_ = true;
  ::shutdown(fd_, SHUT_WR);  // may fail if the peer is gone; the next read will say so
  return {IoStatus::ok, 0, Failure::protocol, {}};
}

size_t Stream::pending() const {
  int n = SSL_pending(ssl_);
  return n > 0 ? static_cast<size_t>(n) : 0;
}

bool Stream::has_buffered_input() const {
  // SSL_has_pending also counts a partial record, which waits for the socket: after a read that
  // wanted more, only decrypted bytes count.
  return pending() > 0 || (!input_stalled_ && SSL_has_pending(ssl_) == 1) ||
         deferred_end_.has_value();
}

void Stream::enable_bulk() {
  if (bulk_ || state_ != State::established) return;
  bulk_ = true;
  // One recv per record or more, not one for its header and one for the rest; the buffer stays
  // OpenSSL's default (one record) until bytes stream.
  SSL_set_read_ahead(ssl_, 1);
}

bool Stream::socket_drained() const {
  return socket_->drained && !has_buffered_input();
}

// Bytes stream through a bulk Stream: OpenSSL reads ahead into a buffer of several records and
// keeps its buffers between calls (no allocation per record) until release_buffers(). Not before:
// a connection that carries a line now and then would take and free the large buffers each time.
void Stream::start_streaming() {
  if (streaming_) return;
  streaming_ = true;
  resize_read_buffer_ = true;
  // Used from the next allocation of the read buffer (read() frees the present one once empty).
  SSL_set_default_read_buffer_len(ssl_, kReadAheadBytes);
  SSL_clear_mode(ssl_, SSL_MODE_RELEASE_BUFFERS);
}

bool Stream::release_buffers() {
  if (socket_->out_length > 0 || pending() > 0 || SSL_has_pending(ssl_) == 1) return false;
  socket_->out.reset();
  if (SSL_free_buffers(ssl_) != 1) return false;
  resize_read_buffer_ = false;
  if (streaming_) {
    // Back to a buffer of one record, each buffer freed as soon as it is empty.
    streaming_ = false;
    SSL_set_default_read_buffer_len(ssl_, 0);
    SSL_set_mode(ssl_, SSL_MODE_RELEASE_BUFFERS);
  }
  return true;
}

bool Stream::resumed() const {
  return SSL_session_reused(ssl_) == 1;
}

std::optional<Binding> Stream::exporter() const {
  if (!SSL_is_init_finished(ssl_)) return std::nullopt;
  // RFC 9266, section 2: the exporter with the label "EXPORTER-Channel-Binding", an empty context
  // and 32 bytes. Empty, not absent: OpenSSL's use_context = 1 with a zero length. The difference
  // matters only before TLS 1.3 (RFC 5705 mixes a context, even an empty one, into the PRF and
  // not an absent one); TLS 1.3 defines an absent context as an empty one (RFC 8446, section
  // 7.5), so both calls give the same bytes here, which the unit test checks.
  static constexpr char kLabel[] = "EXPORTER-Channel-Binding";
  Binding out{};
  if (SSL_export_keying_material(ssl_, out.data(), out.size(), kLabel, sizeof kLabel - 1, nullptr,
                                 0, 1) != 1) {
    ERR_clear_error();
    return std::nullopt;
  }
  return out;
}

std::optional<Pin> Stream::peer_pin() const {
  const X509* peer = SSL_get0_peer_certificate(ssl_);
  if (!peer) return std::nullopt;
  return spki_pin(peer);
}

std::string Stream::peer_common_name() const {
  const X509* peer = SSL_get0_peer_certificate(ssl_);
  if (!peer) return {};
  const X509_NAME* subject = X509_get_subject_name(peer);
  int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (index < 0) return {};
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
  unsigned char* utf8 = nullptr;
  int length = ASN1_STRING_to_UTF8(&utf8, data);
  if (length < 0) {
    ERR_clear_error();
    return {};
  }
  std::string name(reinterpret_cast<const char*>(utf8), static_cast<size_t>(length));
  OPENSSL_free(utf8);
  return name;
}

std::string Stream::description() const {
  const char* cipher = SSL_get_cipher_name(ssl_);
  return fmt::format("{} {}{}", SSL_get_version(ssl_), cipher ? cipher : "(none)",
                     resumed() ? " resumed" : "");
}

uint64_t Stream::bytes_received() const {
  return socket_->received;
}

}  // namespace tunnel::tls
