// Printing measurements of passing tests.
#include "support/report.hpp"

#include <iostream>

namespace tunnel::test {

void report(const std::string& measurement) {
  std::cerr << "[measured] " + measurement + "\n";
}

}  // namespace tunnel::test
