// What the link table needs from the control connection: a way to send FAIL, and the first line of
// a data connection (which carries the session's proof with auth). Kept abstract so the table can
// be tested with a fake.
#pragma once

#include <string>
#include <string_view>

#include "tunnel/conn_id.hpp"

namespace tunnel::client {

class ControlLink {
 public:
  virtual ~ControlLink() = default;
  // Sends one protocol line (with `\n`) if the control connection is online.
  virtual void send_line(std::string_view line) = 0;
  // `TUNNEL/1 DATA <id>`, with the data proof under the current session's key when auth is on.
  virtual std::string data_hello(const ConnId& id) const = 0;
};

}  // namespace tunnel::client
