// A control connection written by the test that speaks `auth` and `services`
// (docs/PROTOCOL.md): it logs in under a client name with that name's token, then the test says
// what it likes on it (SERVE lines, many of them) and reads the server's answers.
#pragma once

#include <cstdint>
#include <string>

#include "support/socket_io.hpp"
#include "support/wait.hpp"

namespace tunnel::test {

struct ServicesControl {
  Socket socket;
  // The server's answer to the hello after a valid AUTH-OK (`OK auth services`), or what came
  // instead (`ERR ...`, `<no line: ...>`, `AUTH-OK with a wrong server proof`).
  std::string answer;
  bool online() const { return answer.rfind("OK", 0) == 0; }
};

// Connects to 127.0.0.1:port_b, sends `TUNNEL/1 CONTROL auth services` and proves `token` for
// `name`.
ServicesControl login_with_services(uint16_t port_b, const std::string& token,
                                    const std::string& name, Millis timeout = Millis(5000));

}  // namespace tunnel::test
