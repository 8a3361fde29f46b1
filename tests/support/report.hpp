// Measurements a test wants seen even when it passes (Catch shows WARN only for failures or with
// -s): printed to stderr, which `ctest -V` and --output-on-failure show.
#pragma once

#include <sstream>
#include <string>

namespace tunnel::test {

void report(const std::string& measurement);

}  // namespace tunnel::test

// MEASURED("A closed after " << ms << " ms"): a stream expression, reported as one line.
#define MEASURED(message)                           \
  do {                                              \
    std::ostringstream measured_stream_;            \
    measured_stream_ << message;                    \
    ::tunnel::test::report(measured_stream_.str()); \
  } while (false)

namespace tunnel::test {}  // namespace tunnel::test
