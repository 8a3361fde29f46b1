// Writes the Prometheus text exposition format (version 0.0.4): HELP and TYPE once per family,
// then one sample per line.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace tunnel {

class MetricsText {
 public:
  using Labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

  // Starts a family; samples added after it belong to it.
  void family(std::string_view name, std::string_view type, std::string_view help);
  void sample(std::string_view name, double value, Labels labels = {});
  void sample(std::string_view name, uint64_t value, Labels labels = {});

  const std::string& text() const { return text_; }

 private:
  void labels(Labels labels);
  std::string text_;
};

}  // namespace tunnel
