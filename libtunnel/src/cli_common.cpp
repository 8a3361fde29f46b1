// Shared command-line handling: checked durations and addresses, and one-line errors.
#include "tunnel/cli_common.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>

#include "tunnel/log.hpp"
#include "tunnel/token_file.hpp"

namespace tunnel::cli {
namespace {

// Runs `parse` to check a value; its exception text becomes CLI11's error, which names the option.
template <typename Parse>
CLI::Validator checked_by(Parse parse, std::string kind) {
  return CLI::Validator(
      [parse](std::string& text) -> std::string {
        try {
          parse(text);
          return {};
        } catch (const std::exception& e) {
          return e.what();
        }
      },
      std::move(kind));
}

}  // namespace

CLI::Option* add_duration(CLI::App& app, const std::string& name, Duration& value,
                          const std::string& help, Zero zero) {
  auto parse = [zero](const std::string& text) {
    Duration d = parse_duration(text);
    if (zero == Zero::refused && d <= Duration::zero())
      throw std::invalid_argument("must be longer than 0");
    return d;
  };
  return app
      .add_option_function<std::string>(
          name, [&value, parse](const std::string& text) { value = parse(text); }, help)
      ->default_str(format_duration(value))
      ->check(checked_by(parse, ""))
      ->type_name("DURATION");
}

CLI::Option* add_address(CLI::App& app, const std::string& name, HostPort& value,
                         bool allow_port_zero, const std::string& help) {
  auto parse = [allow_port_zero](const std::string& t) {
    return parse_host_port(t, allow_port_zero);
  };
  auto* option = app.add_option_function<std::string>(
      name, [&value, parse](const std::string& text) { value = parse(text); }, help);
  if (value.port != 0 || !value.host.empty()) option->default_str(value.to_string());
  return option->check(checked_by(parse, ""))->type_name("HOST:PORT");
}

std::string read_token_option(const std::string& value) {
  std::string path = resolve_token_path(value);
  try {
    return read_token_file(path);
  } catch (const std::exception& e) {
    // A relative name that was not found as a credential: say where it was looked for.
    std::string hint;
    if (path == value && !value.starts_with('/'))
      hint = std::getenv("CREDENTIALS_DIRECTORY")
                 ? " (not in $CREDENTIALS_DIRECTORY either)"
                 : " (a relative name is first looked up in $CREDENTIALS_DIRECTORY, "
                   "which is not set: under systemd, use LoadCredential=)";
    throw std::runtime_error(e.what() + hint);
  }
}

CLI::Option* add_token_file(CLI::App& app, std::string& token, const std::string& help) {
  return app
      .add_option_function<std::string>(
          "--token-file",
          [&token](const std::string& value) {
            try {
              token = read_token_option(value);
            } catch (const std::exception& e) {
              throw CLI::ValidationError("--token-file", e.what());
            }
          },
          help)
      ->type_name("FILE");
}

void add_daemon_options(CLI::App& app, DaemonOptions& options, config::Tables* tables,
                        std::vector<std::string> table_kinds) {
  add_duration(app, "--heartbeat-interval", options.heartbeat.interval,
               "How often to PING the other end of the control connection", Zero::refused);
  add_duration(app, "--heartbeat-timeout", options.heartbeat.timeout,
               "Silence on the control connection after which it is declared dead", Zero::refused);
  add_duration(app, "--drain-timeout", options.drain_timeout,
               "On SIGTERM/SIGINT, how long connections in flight may take to finish (0: do not "
               "wait)",
               Zero::allowed);
  auto parse_metrics = [](const std::string& t) { return parse_host_port(t, true); };
  app.add_option_function<std::string>(
         "--metrics-listen",
         [&options, parse_metrics](const std::string& text) {
           options.metrics_listen = parse_metrics(text);
         },
         "Serve Prometheus metrics at http://HOST:PORT/metrics (off unless set)")
      ->check(checked_by(parse_metrics, ""))
      ->type_name("HOST:PORT");
  app.set_config("--config", "",
                 "Read options from this TOML file (key = value, one per line); flags given on "
                 "the command line win")
      ->type_name("FILE");
  app.config_formatter(std::make_shared<config::TomlReader>(app, tables, std::move(table_kinds)));
  app.allow_config_extras(CLI::config_extras_mode::error);
  app.set_version_flag("--version", app.get_name() + " " + TUNNEL_VERSION);
  app.add_option("--log-level", options.log_level,
                 "Least severe level written: trace, debug, info, warn, error, off")
      ->capture_default_str()
      ->check(checked_by([](const std::string& t) { log::parse_level(t); }, ""))
      ->type_name("LEVEL");
  app.callback([&options] {
    const auto& heartbeat = options.heartbeat;
    if (heartbeat.timeout <= heartbeat.interval)
      throw CLI::ValidationError("--heartbeat-timeout", "must be longer than --heartbeat-interval");
  });
}

namespace {

// "--name: what" about a value the config file gave (the flag is not on the command line):
// prefixed with the file and the key's line, like the reader's own refusals.
std::string with_file_line(const CLI::App& app, const std::vector<std::string>& args,
                           std::string what) {
  auto reader = std::dynamic_pointer_cast<const config::TomlReader>(app.get_config_formatter());
  if (!reader || !what.starts_with("--")) return what;
  const std::string flag = what.substr(0, what.find(':'));
  const int line = reader->line_of(flag.substr(2));
  const bool on_command_line = std::any_of(args.begin(), args.end(), [&](const std::string& a) {
    return a == flag || a.starts_with(flag + "=");
  });
  if (line == 0 || on_command_line) return what;
  return fmt::format("--config {}:{}: {}", reader->file(), line, what);
}

}  // namespace

std::optional<std::string> parse_quietly(CLI::App& app, const std::vector<std::string>& args) {
  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them backwards
    app.parse(reversed);
  } catch (const config::Error& e) {
    return e.what();
  } catch (const CLI::ConfigError& e) {
    // CLI11 words an unknown key as "INI was not able to parse <key>"; say it plainly.
    std::string what = e.what();
    const std::string unparsed = "INI was not able to parse ";
    if (what.starts_with(unparsed)) what = "unknown option '" + what.substr(unparsed.size()) + "'";
    auto* config = app.get_config_ptr();
    return fmt::format("--config {}: {}",
                       config && config->count() ? config->as<std::string>() : "", what);
  } catch (const CLI::FileError& e) {
    // Only the config file is read while parsing; CLI11's message names the file, not the option.
    return fmt::format("--config: {}", e.what());
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) throw;
    return with_file_line(app, args, e.what());
  }
  return std::nullopt;
}

int parse(CLI::App& app, int argc, char** argv) {
  try {
    if (auto error = parse_quietly(app, std::vector<std::string>(argv + 1, argv + argc))) {
      // One line: which option, what is wrong. No usage dump after it.
      fmt::print(stderr, "{}: {}\n", app.get_name(), *error);
      return 2;
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return -1;
}

}  // namespace tunnel::cli
