// One TLS connection over a non-blocking socket: the handshake, then reads and writes that never
// block and say what they wait for, a half-close, and the RFC 9266 channel binding.
//
// The Stream does not own the socket: it keeps the descriptor's number, never closes it, and its
// destructor sends nothing (no close_notify). The owner keeps the socket (in a Channel, say) open
// for as long as it calls the Stream; freeing the Stream and closing the socket can then happen in
// either order. The Stream reads and writes with recv/send (MSG_DONTWAIT, MSG_NOSIGNAL), so it
// never blocks and never raises SIGPIPE, whatever the descriptor's flags.
//
// What an owner of a TLS socket must know (the relay, the line connections):
// - Readiness is not enough. read() may leave decrypted bytes inside the Stream (a record is up to
//   16 KiB; a smaller buffer takes part of it), and in bulk mode whole records read ahead:
//   has_buffered_input() says so, and the socket will not become readable again for them.
//   Whoever stops reading before want_read (a full buffer) must call read() again when it has
//   room, without waiting for the poller.
// - read() and write() each may want the other direction (IoStatus::want_write from a read,
//   want_read from a write): wait for that, then repeat the same call.
// - After write() returned want_write or want_read, repeat it with the same bytes: the same start,
//   at least as many bytes (the buffer may have moved: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER).
//   Partial writes are on (SSL_MODE_ENABLE_PARTIAL_WRITE): ok may report fewer bytes than given.
// - Bulk mode (enable_bulk(), for a relay): reads ahead (a record and what follows it in one
//   recv), and one write() of several records sends them all with one send; once bytes stream (a
//   write of several records, or a full record read), one recv reads up to four records and
//   OpenSSL keeps its buffers until release_buffers().
//   What the socket did not take of a write stays in the Stream (unsent()): the owner waits for
//   writability and calls flush() (or write() again, which flushes first) until none is left.
// - Half-close: shutdown_write() sends close_notify (then a TCP FIN); the peer's read() says eof
//   and it may go on writing, which this end goes on reading (TLS 1.3 allows it). Call it only
//   when no write is unfinished.
// - eof is only a close_notify. A TCP FIN without one is an error (a truncation: the peer, or
//   someone on the path, cut the stream), and a TCP reset is `reset`: a relay resets the other
//   side for both.
// - Session tickets (TLS 1.3) arrive after the handshake: a client takes its ticket in the first
//   read() that follows, which may return want_read with no byte (the ticket was all there was).
// - With mTLS in TLS 1.3 the client's handshake completes before the server has checked its
//   certificate: a refused client learns it from its first read() (an error whose failure is
//   no_client_certificate or refused_by_peer).
// - A server Stream refuses plain text (plaintext_hello) from a peek at the first bytes, before
//   OpenSSL reads or answers anything: nothing was sent and the client's line is still unread, so
//   the owner may answer with a plain line (`ERR ...`). Read the client's line before closing:
//   closing a socket with unread bytes sends a reset, which can destroy the answer in flight.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "tunnel/crypto.hpp"
#include "tunnel/tls_failure.hpp"
#include "tunnel/tls_pin.hpp"

struct ssl_st;  // OpenSSL's SSL

namespace tunnel::tls {

namespace detail {
struct SocketState;  // what the Stream's BIO knows of the socket (tls_stream.cpp)
}

enum class Role { client, server };

// Handshakes a context's streams completed, by kind (one count per successful handshake).
struct HandshakeCounts {
  uint64_t full = 0;
  uint64_t resumed = 0;
};

enum class Progress { done, want_read, want_write, failed };

struct HandshakeStep {
  Progress progress = Progress::failed;
  Failure failure = Failure::protocol;  // when failed
  std::string detail;                   // when failed: one line for the log
};

enum class IoStatus {
  ok,          // `bytes` (> 0) were read or written
  want_read,   // wait for readability, then repeat the call
  want_write,  // wait for writability, then repeat the call
  eof,         // read: the peer sent close_notify, it will send nothing more
  reset,       // the peer reset the connection (ECONNRESET, EPIPE)
  error,       // any other end: a truncation, a TLS alert, a protocol error
};

struct IoResult {
  IoStatus status = IoStatus::error;
  size_t bytes = 0;
  Failure failure = Failure::protocol;  // when error: as for a handshake
  std::string detail;                   // when eof, reset or error: one line for the log
};

// The exporter value of RFC 9266 ("tls-exporter" channel binding).
using Binding = crypto::Digest;

class Stream {
 public:
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  Role role() const { return role_; }
  int fd() const { return fd_; }

  // Runs the handshake as far as the socket allows. Call again after want_read / want_write once
  // the socket is ready (tls::Handshake does this on an event loop). On done the context's counts
  // go up by one; failed is final, with one reason (tls_failure.hpp).
  HandshakeStep handshake();
  bool established() const { return state_ == State::established; }

  // Only once established. See the top of this file for what each status asks of the caller.
  // read() takes as many records as are already here, up to out.size() (SSL_read_ex takes one
  // at a time); an end met after some bytes is returned by the next call.
  IoResult read(std::span<char> out);
  IoResult write(std::span<const char> data);
  // Sends close_notify and then shuts the socket down for writing. want_write: call again when
  // writable. Later calls return ok at once.
  IoResult shutdown_write();
  bool write_shut() const { return write_shut_; }

  // Decrypted bytes waiting inside the Stream, which no poller will report (top of this file).
  size_t pending() const;
  // Whether the next read() can take bytes without the socket: decrypted ones, or whole records
  // read ahead (bulk mode), or an end found after the last bytes returned.
  bool has_buffered_input() const;

  // Bulk mode, for a relay (top of this file); only once established, and for good. The gather
  // and read-ahead buffers hold up to 4 full records each.
  void enable_bulk();
  // Bulk mode: the last recv emptied the socket and nothing waits inside the Stream, so another
  // read() now would only find want_read.
  bool socket_drained() const;
  // Bytes of records already written that the socket has not taken yet (bulk mode).
  size_t unsent() const;
  // Sends what unsent() counts: ok (`bytes` 0) when nothing is left, want_write when some is.
  IoResult flush();
  // Frees OpenSSL's record buffers and the gather buffer when they hold nothing (while bytes
  // stream, bulk mode keeps them between calls), and goes back to reading one record at a time.
  // True if nothing is held afterwards.
  bool release_buffers();

  bool resumed() const;
  // RFC 9266 tls-exporter: 32 bytes both ends compute alike, unique to this connection. Nothing
  // before the handshake has completed.
  std::optional<Binding> exporter() const;
  // The peer's public key pin, and the common name of its certificate (empty without one: a
  // client without mTLS).
  std::optional<Pin> peer_pin() const;
  std::string peer_common_name() const;
  // E.g. "TLSv1.3 TLS_AES_256_GCM_SHA384".
  std::string description() const;

  // Raw bytes received from the socket so far (a stalled peer has sent none).
  uint64_t bytes_received() const;
  // The detail of the failure that ended this stream, or empty.
  const std::string& failure_detail() const { return failure_detail_; }

  ssl_st* native_handle() const { return ssl_; }

 private:
  friend class ServerContext;
  friend class ClientContext;
  enum class State { handshaking, established, failed };

  // Takes the SSL (configured by the context); `counts` belongs to the context.
  Stream(ssl_st* ssl, int fd, Role role, HandshakeCounts* counts, std::string server_name);

  HandshakeStep finish_failed_handshake(int ssl_error, unsigned long error_code);
  bool peeked_plain_text();
  IoResult io_failure(int ssl_error, std::string_view doing);
  IoResult read_end(int ssl_error);
  IoResult write_end(int ssl_error);
  IoResult write_gathered(std::span<const char> data);
  void start_streaming();
  IoResult not_usable(std::string_view doing) const;
  std::pair<Failure, std::string> classify(int ssl_error, unsigned long error_code) const;
  // The peer's first bytes and what else waits in the socket, as far as it goes (not consumed).
  std::string peer_text() const;

  ssl_st* ssl_;
  int fd_;
  Role role_;
  HandshakeCounts* counts_;
  std::string server_name_;  // client: the name dialed, for messages
  std::unique_ptr<detail::SocketState> socket_;
  State state_ = State::handshaking;
  Failure failure_ = Failure::protocol;
  bool write_shut_ = false;
  bool bulk_ = false;
  bool streaming_ = false;  // bulk mode, and bytes stream: a large read-ahead, buffers kept
  bool resize_read_buffer_ = false;  // streaming, and OpenSSL's read buffer may be the small one
  bool input_stalled_ = false;       // the last read (or handshake step) waited for the socket
  std::optional<IoResult> deferred_end_;  // met by read() after bytes it returned first
  bool shutdown_sent_ = false;            // close_notify queued, TCP FIN maybe not yet
  std::string failure_detail_;
  // The server's key as seen by a verification that failed (set by ClientContext's callbacks).
  std::optional<Pin> refused_key_;
  bool pin_mismatch_ = false;
};

}  // namespace tunnel::tls
