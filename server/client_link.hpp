// What the pending table needs from "the client": whether one is online and a way to tell it
// things. Kept abstract so several clients (sessions) can come later without touching the table.
#pragma once

#include <string_view>

namespace tunnel::server {

class ClientLink {
 public:
  virtual ~ClientLink() = default;
  virtual bool online() const = 0;
  // Sends one protocol line (with `\n`) on the control connection, if online.
  virtual void send_line(std::string_view line) = 0;
};

}  // namespace tunnel::server
