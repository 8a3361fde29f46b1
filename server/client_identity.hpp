// Who a control connection proved to be (the auth extension, docs/PROTOCOL.md): the client's name
// and the session key its data connections prove themselves with.
#pragma once

#include <string>

#include "tunnel/auth.hpp"

namespace tunnel::server {

struct ClientIdentity {
  std::string name;
  auth::SessionKey key{};
};

}  // namespace tunnel::server
