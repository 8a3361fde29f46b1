// Blocking TCP helpers with deadlines for the test side of a connection: connect, send everything,
// read exactly N bytes or until the end, and tell an orderly EOF from a reset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "support/wait.hpp"

namespace tunnel::test {

// An owned socket descriptor (CLOEXEC), closed by the destructor.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() { close(); }
  Socket(Socket&& other) noexcept : fd_(other.release()) {}
  Socket& operator=(Socket&& other) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release();
  void close();

 private:
  int fd_ = -1;
};

// How a read ended.
enum class End {
  complete,  // got what was asked for
  eof,       // the peer closed its sending side (FIN)
  reset,     // ECONNRESET / EPIPE
  timeout,   // the deadline passed first
  error,     // any other errno
};
const char* to_string(End end);

struct ReadResult {
  std::string data;
  End end = End::timeout;
  int error = 0;  // errno for reset/error
  std::string describe() const;
};

// The peer closed (FIN or RST) without having sent a single byte.
inline bool closed_without_data(const ReadResult& r) {
  return r.data.empty() && (r.end == End::eof || r.end == End::reset);
}

// Connects to host:port (IPv4); throws with the errno text when refused, failing, or past the
// deadline. A connection reset right after it was established is returned: reads then see EOF.
Socket connect_tcp(uint16_t port, Millis timeout = Millis(5000),
                   const std::string& host = "127.0.0.1");
// What a connect attempt to host:port does within `wait`: for finding a blackhole address.
enum class Reach { connected, failed, no_answer };
Reach probe_connect(const std::string& host, uint16_t port, Millis wait);

// A listening socket on 127.0.0.1 (port 0: ephemeral).
Socket listen_tcp(uint16_t port = 0, int backlog = 512);
uint16_t local_port(const Socket& socket);

// Sends all of `data`; throws on error or when the peer does not take it before the deadline.
void send_all(const Socket& socket, std::string_view data, Millis timeout = Millis(10000));
// Like send_all but reports instead of throwing: false with `error` set when it could not.
bool try_send_all(const Socket& socket, std::string_view data, Millis timeout, int& error);

// One read of whatever is available (at most `max`), waiting up to `timeout` for something.
ReadResult read_some(const Socket& socket, size_t max, Millis timeout);
// Reads until `n` bytes, the end of the stream, or the deadline.
ReadResult read_up_to(const Socket& socket, size_t n, Millis timeout);
// Exactly `n` bytes or a thrown error saying how the stream ended and what had arrived.
std::string read_exact(const Socket& socket, size_t n, Millis timeout);
// Everything until EOF/reset/error or the deadline (or `limit` bytes).
ReadResult read_to_end(const Socket& socket, Millis timeout,
                       size_t limit = std::numeric_limits<size_t>::max());
// One `\n`-terminated line (returned without the newline), read byte by byte so that nothing after
// it is consumed. End::complete when a line was read.
ReadResult read_line(const Socket& socket, Millis timeout, size_t max = 4096);

// Blocks until the socket is readable (data, EOF or reset) or the deadline; true when readable.
bool wait_readable(const Socket& socket, Millis timeout);

void shutdown_write(const Socket& socket);
// SO_LINGER 0 then close: the peer gets a RST instead of a FIN.
void reset_close(Socket& socket);
void set_nodelay(const Socket& socket);

// A port on 127.0.0.1 where nothing listens: bound, then closed, so a connect is refused.
uint16_t refused_port();

}  // namespace tunnel::test
