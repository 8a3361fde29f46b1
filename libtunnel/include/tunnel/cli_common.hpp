// Command-line pieces both daemons share: validators that turn a bad duration or address into one
// clear line naming the option, and the options every daemon has (--config, --log-level, --version).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "tunnel/address.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/heartbeat.hpp"

namespace tunnel::cli {

// Adds --config, --log-level and --version to `app`; `log_level` receives the chosen level.
void add_common_options(CLI::App& app, std::string& log_level);

// Options whose value is checked while parsing, so the error names the option.
CLI::Option* add_duration(CLI::App& app, const std::string& name, Duration& value,
                          const std::string& help);
CLI::Option* add_address(CLI::App& app, const std::string& name, HostPort& value,
                         bool allow_port_zero, const std::string& help);

// --heartbeat-interval and --heartbeat-timeout, the same on both daemons.
void add_heartbeat_options(CLI::App& app, HeartbeatSettings& settings);

// --drain-timeout, the same on both daemons.
void add_drain_option(CLI::App& app, Duration& drain_timeout);

// Parses argv; on --help/--version prints and returns the exit code 0, on error prints one line
// and returns 2. Returns -1 when the daemon should go on.
int parse(CLI::App& app, int argc, char** argv);

}  // namespace tunnel::cli
