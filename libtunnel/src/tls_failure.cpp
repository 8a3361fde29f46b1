// The names of TLS refusal reasons, as logged and exposed in metrics.
#include "tunnel/tls_failure.hpp"

namespace tunnel::tls {

std::string_view to_string(Failure failure) {
  switch (failure) {
    case Failure::plaintext_hello:
      return "plaintext-hello";
    case Failure::not_tls:
      return "not-tls";
    case Failure::certificate_expired:
      return "certificate-expired";
    case Failure::certificate_untrusted:
      return "certificate-untrusted";
    case Failure::name_mismatch:
      return "name-mismatch";
    case Failure::pin_mismatch:
      return "pin-mismatch";
    case Failure::no_client_certificate:
      return "no-client-certificate";
    case Failure::refused_by_peer:
      return "refused-by-peer";
    case Failure::closed:
      return "closed";
    case Failure::timeout:
      return "timeout";
    case Failure::protocol:
      return "protocol-error";
  }
  return "protocol-error";
}

}  // namespace tunnel::tls
