// Why a TLS connection was refused, as counted and logged: one enum value per reason (metrics
// iterate over it), and a detail line for the log that says what to fix.
#pragma once

#include <array>
#include <string_view>

namespace tunnel::tls {

enum class Failure {
  plaintext_hello,        // server: the client sent plain text (e.g. `TUNNEL/1 ...`) on a TLS port
  not_tls,                // client: the server answered with something that is not TLS
  certificate_expired,    // the peer's certificate is expired or not valid yet
  certificate_untrusted,  // the peer's certificate does not chain to the CA we were given
  name_mismatch,          // client: the server's certificate is not for the name we dialed
  pin_mismatch,           // client: the server's key is not the pinned one
  no_client_certificate,  // mTLS: the client sent no certificate (seen by both ends)
  refused_by_peer,        // the peer sent an alert refusing our certificate or our offer
  closed,                 // the peer closed or reset the connection mid-handshake
  timeout,                // the handshake did not finish in time (tls::Handshake)
  protocol,               // any other TLS failure: versions, ciphers, malformed messages
};

inline constexpr std::array kAllFailures = {
    Failure::plaintext_hello,
    Failure::not_tls,
    Failure::certificate_expired,
    Failure::certificate_untrusted,
    Failure::name_mismatch,
    Failure::pin_mismatch,
    Failure::no_client_certificate,
    Failure::refused_by_peer,
    Failure::closed,
    Failure::timeout,
    Failure::protocol,
};

// plaintext-hello, not-tls, certificate-expired, certificate-untrusted, name-mismatch,
// pin-mismatch, no-client-certificate, refused-by-peer, closed, timeout, protocol-error.
std::string_view to_string(Failure failure);

}  // namespace tunnel::tls
