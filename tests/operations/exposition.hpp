// Reading a daemon's /metrics: one HTTP exchange on a raw socket, and a strict parser of the
// Prometheus text format 0.0.4 that lists every deviation instead of guessing around it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "support/wait.hpp"

namespace tunnel::test::ops {

struct HttpResponse {
  int status = 0;  // 0 when no status line came back
  std::string head;
  std::string body;
  std::string raw;
};

// Sends `request` as is and reads until the server closes (or the deadline).
HttpResponse http_exchange(uint16_t port, const std::string& request,
                           Millis timeout = Millis(5000));
// GET /metrics; throws unless the answer is 200 with the exposition content type.
std::string scrape(uint16_t port);

struct Exposition {
  std::map<std::string, double> samples;     // `name{labels}` exactly as written -> value
  std::map<std::string, std::string> types;  // family -> counter|gauge|...
  std::vector<std::string> problems;         // every rule broken, with its line
  bool has(const std::string& series) const { return samples.count(series) != 0; }
  // The value of a series; throws naming it when absent.
  double at(const std::string& series) const;
};

// Every sample line `name{label="value",...} value`; `# HELP` and `# TYPE` once per family and
// before its samples; a family's samples together; counters named `..._total`; no duplicates.
Exposition parse_exposition(const std::string& text);

}  // namespace tunnel::test::ops
