// Round robin over a service's sessions.
#include "service.hpp"

#include <algorithm>

namespace tunnel::server {

bool Service::allows(std::string_view client) const {
  const auto& clients = config_.clients;
  return clients.empty() || std::find(clients.begin(), clients.end(), client) != clients.end();
}

void Service::add(ClientLink& link) {
  if (!serves(link)) serving_.push_back(Server{&link});
}

void Service::remove(const ClientLink& link) {
  std::erase_if(serving_, [&](const Server& s) { return s.link == &link; });
  if (next_ >= serving_.size()) next_ = 0;
}

bool Service::serves(const ClientLink& link) const {
  return std::any_of(serving_.begin(), serving_.end(),
                     [&](const Server& s) { return s.link == &link; });
}

ClientLink* Service::pick(const std::vector<uint64_t>& excluded, Clock::time_point now) {
  ClientLink* fallback = nullptr;
  size_t fallback_at = 0;
  for (size_t step = 0; step < serving_.size(); ++step) {
    size_t at = (next_ + step) % serving_.size();
    const Server& candidate = serving_[at];
    if (!candidate.link->open()) continue;
    if (std::find(excluded.begin(), excluded.end(), candidate.link->number()) != excluded.end())
      continue;
    if (candidate.passed_over_until > now) {
      if (!fallback) {
        fallback = candidate.link;
        fallback_at = at;
      }
      continue;
    }
    next_ = (at + 1) % serving_.size();
    return candidate.link;
  }
  if (fallback) next_ = (fallback_at + 1) % serving_.size();
  return fallback;
}

void Service::failed_on(const ClientLink& link, Clock::time_point now) {
  for (auto& s : serving_)
    if (s.link == &link) s.passed_over_until = now + kFailureCooldown;
}

}  // namespace tunnel::server
