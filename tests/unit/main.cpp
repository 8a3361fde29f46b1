// The Catch2 entry point of the unit-test executable; the tests live in the *_test.cpp files.
// SIGPIPE is counted instead of killing the run, so that a test can say which code raised it
// (the library must never raise it: a write to a closed peer has to fail with EPIPE instead).
#define CATCH_CONFIG_MAIN
#include <signal.h>

#include <catch2/catch.hpp>

namespace {

volatile sig_atomic_t g_sigpipes = 0;

void on_sigpipe(int) {
  g_sigpipes = g_sigpipes + 1;
}

const bool g_sigpipe_counted = [] {
  struct sigaction action {};
  action.sa_handler = on_sigpipe;
  ::sigemptyset(&action.sa_mask);
  return ::sigaction(SIGPIPE, &action, nullptr) == 0;
}();

}  // namespace

namespace unit_tests {

int sigpipe_count() {
  return g_sigpipes;
}

}  // namespace unit_tests
