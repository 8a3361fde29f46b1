// Prometheus text format writer.
#include "tunnel/metrics_text.hpp"

#include <fmt/format.h>

namespace tunnel {

void MetricsText::family(std::string_view name, std::string_view type, std::string_view help) {
  fmt::format_to(std::back_inserter(text_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void MetricsText::labels(Labels labels) {
  if (labels.size() == 0) return;
  text_ += '{';
  bool first = true;
  for (const auto& [key, value] : labels) {
    if (!first) text_ += ',';
    first = false;
    text_.append(key);
    text_ += "=\"";
    // Label values here are fixed words; escaping keeps the format valid whatever they become.
    for (char c : value) {
      if (c == '\\' || c == '"') text_ += '\\';
      if (c == '\n') {
        text_ += "\\n";
        continue;
      }
      text_ += c;
    }
    text_ += '"';
  }
  text_ += '}';
}

void MetricsText::sample(std::string_view name, double value, Labels labels_list) {
  text_.append(name);
  labels(labels_list);
  fmt::format_to(std::back_inserter(text_), " {}\n", value);
}

void MetricsText::sample(std::string_view name, uint64_t value, Labels labels_list) {
  text_.append(name);
  labels(labels_list);
  fmt::format_to(std::back_inserter(text_), " {}\n", value);
}

}  // namespace tunnel
