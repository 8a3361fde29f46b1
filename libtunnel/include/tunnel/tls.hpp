// TLS 1.3 for port B (OpenSSL 3, kept out of these headers):
//   tls_context.hpp    ServerContext / ClientContext: files, verification, tickets, counts
//   tls_stream.hpp     Stream: one connection's handshake and non-blocking I/O (read its notes)
//   tls_handshake.hpp  Handshake: a Stream's handshake on an event loop, with a deadline
//   tls_pin.hpp        sha256 public-key pins
//   tls_failure.hpp    why a connection was refused
#pragma once

#include "tunnel/tls_context.hpp"
#include "tunnel/tls_failure.hpp"
#include "tunnel/tls_handshake.hpp"
#include "tunnel/tls_pin.hpp"
#include "tunnel/tls_stream.hpp"
