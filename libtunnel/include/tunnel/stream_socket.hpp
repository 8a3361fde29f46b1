// A connected socket as the daemons pass it between owners: the descriptor, the TLS stream over it
// when TLS is on, and bytes already read from it that nobody has consumed yet (a TLS record can
// carry the first line and the payload after it, and decrypted bytes cannot be pushed back).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "tunnel/fd.hpp"
#include "tunnel/socket.hpp"
#include "tunnel/tls_stream.hpp"

namespace tunnel {

struct StreamSocket {
  Fd fd;
  std::unique_ptr<tls::Stream> tls;  // null: plain TCP
  std::string unread;                // the next bytes the peer sent, already taken off the socket
};

// Writes a short answer (a line or two) on a connection whose send buffer is empty, which always
// takes it; a failure shows up at the next read. Before a close, `last` also ends the TLS stream
// with close_notify, so the peer reads the answer as the end and not as a cut.
inline void send_at_once(StreamSocket& socket, std::string_view bytes, bool last = false) {
  if (!socket.tls) {
    send_nosignal(socket.fd.get(), bytes.data(), bytes.size());
    return;
  }
  socket.tls->write({bytes.data(), bytes.size()});
  if (last) socket.tls->shutdown_write();
}

// Writes `bytes` now, on a connection whose send buffer has room for them; false when not all of
// them went (the connection is then broken, and its next read or write says why).
inline bool send_now(StreamSocket& socket, std::string_view bytes) {
  if (!socket.tls)
    return send_nosignal(socket.fd.get(), bytes.data(), bytes.size()) ==
           static_cast<long>(bytes.size());
  auto result = socket.tls->write({bytes.data(), bytes.size()});
  return result.status == tls::IoStatus::ok && result.bytes == bytes.size();
}

}  // namespace tunnel
