// The Catch2 entry point of the unit-test executable; the tests live in the *_test.cpp files.
// SIGPIPE keeps its fatal meaning (the library must never raise it), but is turned into an abort
// so that Catch names the test that raised it instead of the run ending silently.
#define CATCH_CONFIG_MAIN
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>

namespace {

void on_sigpipe(int) {
  static const char message[] = "unit-tests: SIGPIPE: a write to a closed socket or pipe\n";
  [[maybe_unused]] auto written = ::write(STDERR_FILENO, message, sizeof message - 1);
  std::abort();
}

const bool sigpipe_reported = [] {
  struct sigaction action {};
  action.sa_handler = on_sigpipe;
  ::sigemptyset(&action.sa_mask);
  return ::sigaction(SIGPIPE, &action, nullptr) == 0;
}();

}  // namespace
