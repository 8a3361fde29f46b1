// /metrics over a raw socket and a strict reading of the Prometheus text format.
#include "exposition.hpp"

#include <cmath>
#include <cstdlib>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>

#include "support/socket_io.hpp"

namespace tunnel::test::ops {

HttpResponse http_exchange(uint16_t port, const std::string& request, Millis timeout) {
  Socket s = connect_tcp(port, timeout);
  int error = 0;
  // A server that refuses an oversize request may close before taking all of it.
  try_send_all(s, request, timeout, error);
  ReadResult r = read_to_end(s, timeout);
  HttpResponse response;
  response.raw = r.data;
  const size_t head_end = r.data.find("\r\n\r\n");
  response.head = r.data.substr(0, head_end);
  if (head_end != std::string::npos) response.body = r.data.substr(head_end + 4);
  std::smatch m;
  if (std::regex_search(response.head, m, std::regex("^HTTP/1\\.[01] ([0-9]{3}) "))) {
    response.status = std::stoi(m[1]);
  }
  return response;
}

std::string scrape(uint16_t port) {
  HttpResponse r = http_exchange(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  if (r.status != 200) {
    throw std::runtime_error("GET /metrics on port " + std::to_string(port) + ": status " +
                             std::to_string(r.status) + ", answer: \"" + r.raw + "\"");
  }
  if (r.head.find("Content-Type: text/plain; version=0.0.4") == std::string::npos) {
    throw std::runtime_error("GET /metrics: not the Prometheus text content type:\n" + r.head);
  }
  return r.body;
}

double Exposition::at(const std::string& series) const {
  auto it = samples.find(series);
  if (it == samples.end()) throw std::runtime_error("no sample " + series + " in the exposition");
  return it->second;
}

namespace {

const std::regex kName("[a-zA-Z_:][a-zA-Z0-9_:]*");
const std::regex kSample("([a-zA-Z_:][a-zA-Z0-9_:]*)(\\{(.*)\\})? ([^ ]+)");

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// `a="x",b="y"`: empty when well formed, else what is wrong.
std::string check_labels(const std::string& labels) {
  std::set<std::string> names;
  size_t i = 0;
  while (true) {
    size_t start = i;
    while (i < labels.size() &&
           (std::isalnum(static_cast<unsigned char>(labels[i])) || labels[i] == '_')) {
      ++i;
    }
    const std::string name = labels.substr(start, i - start);
    if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) {
      return "bad label name at offset " + std::to_string(start);
    }
    if (!names.insert(name).second) return "label " + name + " repeated";
    if (labels.compare(i, 2, "=\"") != 0) return "label " + name + " not followed by =\"";
    i += 2;
    while (i < labels.size() && labels[i] != '"') {
      if (labels[i] == '\\') {
        if (i + 1 >= labels.size() ||
            std::string("\\\"n").find(labels[i + 1]) == std::string::npos) {
          return "bad escape in the value of " + name;
        }
        ++i;
      } else if (labels[i] == '\n') {
        return "raw newline in the value of " + name;
      }
      ++i;
    }
    if (i >= labels.size()) return "unterminated value of " + name;
    ++i;  // the closing quote
    if (i == labels.size()) return "";
    if (labels[i] != ',' || i + 1 == labels.size()) return "expected ',' and a label after " + name;
    ++i;
  }
}

bool parse_value(const std::string& text, double& value) {
  if (text == "+Inf" || text == "-Inf" || text == "NaN") {
    value = text == "NaN" ? std::nan("") : (text[0] == '+' ? INFINITY : -INFINITY);
    return true;
  }
  char* end = nullptr;
  value = std::strtod(text.c_str(), &end);
  return !text.empty() && end == text.c_str() + text.size();
}

}  // namespace

Exposition parse_exposition(const std::string& text) {
  Exposition e;
  size_t number = 0;
  std::string line;
  auto problem = [&](const std::string& what) {
    e.problems.push_back("line " + std::to_string(number) + ": " + what + ": \"" + line + "\"");
  };
  if (text.empty()) e.problems.push_back("the exposition is empty");
  if (!text.empty() && text.back() != '\n') e.problems.push_back("no newline after the last line");

  std::set<std::string> helped, sampled, finished;
  std::string current;  // the family whose lines are being read
  auto enter = [&](const std::string& family) {
    if (family == current) return;
    if (!current.empty()) finished.insert(current);
    current = family;
    if (finished.count(family) != 0) problem("family " + family + " appears again, not together");
  };

  std::istringstream in(text);
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) {
      problem("empty line");
      continue;
    }
    const bool help = line.rfind("# HELP ", 0) == 0, type = line.rfind("# TYPE ", 0) == 0;
    if (help || type) {
      const std::string rest = line.substr(7);
      const size_t space = rest.find(' ');
      const std::string name = rest.substr(0, space);
      const std::string what = space == std::string::npos ? "" : rest.substr(space + 1);
      if (!std::regex_match(name, kName)) {
        problem("bad metric name");
        continue;
      }
      enter(name);
      if (sampled.count(name) != 0) problem(std::string(help ? "HELP" : "TYPE") + " after samples");
      if (help) {
        if (!helped.insert(name).second) problem("second HELP for " + name);
        if (what.empty()) problem("empty HELP text");
        continue;
      }
      if (e.types.count(name) != 0) problem("second TYPE for " + name);
      if (what != "counter" && what != "gauge" && what != "histogram" && what != "summary" &&
          what != "untyped") {
        problem("unknown type \"" + what + "\"");
      }
      if (what == "counter" && !ends_with(name, "_total")) problem("counter not named ..._total");
      if (what != "counter" && ends_with(name, "_total")) problem("a " + what + " named _total");
      e.types[name] = what;
      continue;
    }
    if (line[0] == '#') {
      problem("comment other than HELP or TYPE");
      continue;
    }
    std::smatch m;
    if (!std::regex_match(line, m, kSample)) {
      problem("not a sample line `name{labels} value`");
      continue;
    }
    const std::string name = m[1];
    std::string family = name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string base = name.substr(0, name.size() - std::string(suffix).size());
      const auto base_type = e.types.find(base);
      if (e.types.count(name) == 0 && ends_with(name, suffix) && base_type != e.types.end() &&
          (base_type->second == "histogram" || base_type->second == "summary")) {
        family = base;
      }
    }
    enter(family);
    if (e.types.count(family) == 0) problem("sample before (or without) its TYPE");
    if (helped.count(family) == 0) problem("sample before (or without) its HELP");
    if (m[2].matched) {
      const std::string why = check_labels(m[3]);
      if (!why.empty()) problem("labels: " + why);
    }
    double value = 0;
    if (!parse_value(m[4], value)) problem("value is not a number");
    const std::string series = name + (m[2].matched ? std::string(m[2]) : "");
    if (!e.samples.emplace(series, value).second) problem("series repeated");
    const auto type_of = e.types.find(family);
    if (type_of != e.types.end() && type_of->second == "counter" && !(value >= 0)) {
      problem("counter below zero");
    }
    sampled.insert(family);
  }
  for (const auto& [family, type] : e.types) {
    if (sampled.count(family) == 0) e.problems.push_back("family " + family + " has no sample");
  }
  return e;
}

}  // namespace tunnel::test::ops
