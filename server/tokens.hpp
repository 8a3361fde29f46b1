// The tokens the server checks proofs against (the auth extension): one per named client
// ([client.<name>] in the config), and the --token-file one for every other name. Replaced whole
// by a reload.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>

namespace tunnel::server {

struct Tokens {
  std::string fallback;  // --token-file: any name not listed below; empty: none
  std::unordered_map<std::string, std::string> named;

  // Auth is on when any token is configured.
  bool required() const { return !fallback.empty() || !named.empty(); }
  // The token `name` must prove, or null when that name cannot log in.
  const std::string* of(const std::string& name) const {
    auto it = named.find(name);
    if (it != named.end()) return &it->second;
    return fallback.empty() ? nullptr : &fallback;
  }
};

}  // namespace tunnel::server
