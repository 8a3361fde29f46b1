// Non-blocking TCP socket helpers. System-call failures come back as std::error_code.
#pragma once

#include <chrono>
#include <system_error>

#include "tunnel/address.hpp"
#include "tunnel/fd.hpp"

namespace tunnel {

// socket + SO_REUSEADDR + bind + listen, non-blocking and close-on-exec.
Fd listen_tcp(const SocketAddress& where, int backlog, std::error_code& ec);

// One accept4 (non-blocking, close-on-exec). An empty Fd with ec cleared means EAGAIN.
Fd accept_connection(int listen_fd, std::error_code& ec);

// Starts a non-blocking connect. The returned socket becomes writable when the attempt ends; then
// take_socket_error() says whether it succeeded.
Fd start_connect(const SocketAddress& to, std::error_code& ec);
std::error_code take_socket_error(int fd);

void set_nodelay(int fd);
// TCP keepalive for relayed data connections, which otherwise outlive a silent network failure:
// after 30 s of silence, 3 probes 10 s apart, so an orphan ends within about a minute.
void set_keepalive(int fd);
// Makes the next close() send a reset instead of a FIN.
void set_linger_reset(int fd);

// write() that never raises SIGPIPE. Returns bytes written, or -1 with errno.
long send_nosignal(int fd, const void* data, size_t length);

}  // namespace tunnel
