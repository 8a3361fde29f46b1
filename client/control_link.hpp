// What the link table needs from the control connection: a way to send FAIL. Kept abstract so the
// table can be tested with a fake.
#pragma once

#include <string_view>

namespace tunnel::client {

class ControlLink {
 public:
  virtual ~ControlLink() = default;
  // Sends one protocol line (with `\n`) if the control connection is online.
  virtual void send_line(std::string_view line) = 0;
};

}  // namespace tunnel::client
