// The services-speaking control login, on libtunnel's own proofs (tunnel::auth).
#include "support/services_control.hpp"

#include "support/auth_peer.hpp"
#include "tunnel/auth.hpp"
#include "tunnel/crypto.hpp"

namespace tunnel::test {

namespace {

std::string line_or_end(const ReadResult& r) {
  return r.end == End::complete ? r.data : "<no line: " + r.describe() + ">";
}

}  // namespace

ServicesControl login_with_services(uint16_t port_b, const std::string& token,
                                    const std::string& name, Millis timeout) {
  ServicesControl control{connect_tcp(port_b, timeout), ""};
  send_all(control.socket, "TUNNEL/1 CONTROL auth services\n", timeout);
  const ReadResult challenge = read_line(control.socket, timeout, 512);
  const auto challenge_words = words(challenge.data);
  if (challenge.end != End::complete || challenge_words.size() != 2 ||
      challenge_words[0] != "AUTH-CHALLENGE") {
    control.answer = line_or_end(challenge);
    return control;
  }
  const auth::Transcript transcript{challenge_words[1], auth::new_nonce(), name, ""};
  send_all(control.socket,
           "AUTH-PROOF " + name + " " + transcript.client_nonce + " " +
               crypto::to_hex(auth::client_proof(token, transcript)) + "\n",
           timeout);
  const ReadResult auth_ok = read_line(control.socket, timeout, 512);
  const auto ok_words = words(auth_ok.data);
  if (auth_ok.end != End::complete || ok_words.size() != 2 || ok_words[0] != "AUTH-OK") {
    control.answer = line_or_end(auth_ok);
    return control;
  }
  if (!auth::proof_matches(auth::server_proof(token, transcript), ok_words[1])) {
    control.answer = "AUTH-OK with a wrong server proof";
    return control;
  }
  control.answer = line_or_end(read_line(control.socket, timeout, 512));
  return control;
}

}  // namespace tunnel::test
