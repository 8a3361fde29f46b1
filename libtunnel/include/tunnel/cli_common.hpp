// Command-line pieces both daemons share: validators that turn a bad duration or address into one
// clear line naming the option, and the options every daemon has (DaemonOptions, --config,
// --version).
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tunnel/address.hpp"
#include "tunnel/config_file.hpp"
#include "tunnel/daemon_options.hpp"
#include "tunnel/duration.hpp"

namespace tunnel::cli {

// Adds what every daemon has: --heartbeat-interval, --heartbeat-timeout, --drain-timeout,
// --metrics-listen, --log-level, --config and --version. The config file is TOML
// (config_file.hpp): its tables `[<kind>.<name>]` whose kind is in `table_kinds` are stored in
// `tables`, which must outlive the parse; without `tables`, any table is refused.
void add_daemon_options(CLI::App& app, DaemonOptions& options, config::Tables* tables = nullptr,
                        std::vector<std::string> table_kinds = {});

// Whether a duration option may be 0 (e.g. a drain timeout of 0 means "do not wait").
enum class Zero { allowed, refused };

// Options whose value is checked while parsing, so the error names the option (the flag or the
// config file key): a bad duration, a 0 where it makes no sense ("must be longer than 0").
CLI::Option* add_duration(CLI::App& app, const std::string& name, Duration& value,
                          const std::string& help, Zero zero);
CLI::Option* add_address(CLI::App& app, const std::string& name, HostPort& value,
                         bool allow_port_zero, const std::string& help);
// --token-file FILE: the file is read and checked while parsing (token_file.hpp), so a bad one is
// refused before the daemon starts, naming the option, the file and the fix. `token` gets its text.
CLI::Option* add_token_file(CLI::App& app, std::string& token, const std::string& help);
// What --token-file does with its value, for other places that name a token file (a config
// table): resolves the name, reads and checks the file. Throws std::runtime_error saying what is
// wrong, and where a relative name was looked for.
std::string read_token_option(const std::string& value);

// Parses `args` (the arguments after the program name) without printing: returns the one-line
// error (without the program's name), or nullopt to go on. --help and --version are thrown as
// their CLI::ParseError (exit code 0), for app.exit() to print.
std::optional<std::string> parse_quietly(CLI::App& app, const std::vector<std::string>& args);

// Parses argv; on --help/--version prints and returns the exit code 0, on error prints one line
// and returns 2. Returns -1 when the daemon should go on.
int parse(CLI::App& app, int argc, char** argv);

}  // namespace tunnel::cli
