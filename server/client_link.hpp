// One client's session as the connection table and the services see it: a number that is never
// reused, the client's name, whether it speaks the services extension, the key its data
// connections prove themselves with, and a way to tell it things. Session implements it; tests
// can fake it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tunnel/auth.hpp"

namespace tunnel::server {

// The extensions a control hello listed that the server takes up.
struct HelloFeatures {
  bool services = false;  // NEW names the service; SERVE lines
  size_t pool_cap = 0;    // the most pooled connections the session may keep; 0: no pool
};

class ClientLink {
 public:
  virtual ~ClientLink() = default;
  virtual uint64_t number() const = 0;
  virtual std::string_view name() const = 0;
  // False once the control connection failed (its loss is then about to be reported).
  virtual bool open() const = 0;
  // The session listed `services` in its hello: NEW names the service.
  virtual bool speaks_services() const = 0;
  // The session key (auth), or null without auth.
  virtual const auth::SessionKey* key() const = 0;
  // Sends one protocol line (with `\n`) on the control connection, if open.
  virtual void send_line(std::string_view line) = 0;
};

}  // namespace tunnel::server
