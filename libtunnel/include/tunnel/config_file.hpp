// The --config file: TOML. Top-level `key = value` lines are flags (the long name without its
// dashes) and go to CLI11 as before; tables `[<kind>.<name>]` (a service, a client) are kept as
// data for the daemon to check with TableReader. Every refusal is one line naming the file, the
// line, the key and the reason, thrown as config::Error (nothing is printed here), so the same
// parse serves start-up and a SIGHUP reload.
//
// A daemon uses it in one call, then reads the tables after parsing:
//   config::Tables tables;
//   cli::add_daemon_options(app, config.daemon, &tables, {"service"});
//   ... parse ...
//   for (const config::Table& t : tables.of_kind("service")) {
//     config::TableReader r(t);
//     std::string target = r.required_string("target");
//     std::optional<bool> b = r.optional_bool("send-proxy");
//     r.finish();  // "unknown key 'x' in [service.web]" for a key nothing read
//   }
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace tunnel::config {

// A refused config file: the whole line, "--config FILE:LINE: what is wrong".
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws Error for `file` at `line` (1-based; 0: the file as a whole).
[[noreturn]] void fail(const std::string& file, int line, const std::string& what);

// A value in a table: the types a daemon accepts there.
using Data = std::variant<std::string, std::int64_t, bool, std::vector<std::string>>;

struct Value {
  Data data;
  int line = 0;
};

// One `[<kind>.<name>]` table, its keys in file order.
struct Table {
  std::string file;
  std::string kind;
  std::string name;
  int line = 0;
  std::vector<std::pair<std::string, Value>> keys;

  // "[service.web]", as messages name it.
  std::string header() const;
};

// The tables of the config file (empty without --config), in file order.
struct Tables {
  std::string file;
  std::vector<Table> tables;

  std::vector<const Table*> of_kind(std::string_view kind) const;
};

// Reads one table's keys by type; a missing required key, a wrong type or a key nothing read
// is an Error naming the file, the line, the table and the key.
class TableReader {
 public:
  explicit TableReader(const Table& table);

  std::string required_string(std::string_view key);
  std::optional<std::string> optional_string(std::string_view key);
  std::optional<bool> optional_bool(std::string_view key);
  std::optional<std::int64_t> optional_integer(std::string_view key);
  // An array of strings; absent: nullopt.
  std::optional<std::vector<std::string>> string_list(std::string_view key);

  // Refuses the key's value (which must be present) or the table itself, for the daemon's own
  // checks: "--config FILE:LINE: [service.web] listen: <reason>".
  [[noreturn]] void fail_key(std::string_view key, const std::string& reason) const;
  [[noreturn]] void fail_table(const std::string& reason) const;
  // The line of a key (the table's line when absent).
  int line_of(std::string_view key) const;

  // Refuses the first key no accessor asked for.
  void finish() const;

  const Table& table() const { return table_; }

 private:
  const Value* find(std::string_view key);

  const Table& table_;
  std::vector<bool> read_;
};

// CLI11's config reader for the TOML file. `app` gives the file name (its --config option) and
// the flags a top-level key may name; tables whose kind is in `kinds` land in `tables`, anything
// else is refused. Install it with app.config_formatter(...) after set_config(), or through
// cli::add_daemon_options, which does.
class TomlReader : public CLI::Config {
 public:
  TomlReader(const CLI::App& app, Tables* tables, std::vector<std::string> kinds);

  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override;
  std::string to_config(const CLI::App*, bool, bool, std::string) const override;

  // The file and the line of a top-level key after a parse ("" and 0 when the file has none), so
  // that a flag's own check failing on the file's value can name the line.
  const std::string& file() const { return file_; }
  int line_of(std::string_view key) const;

 private:
  std::string file_name() const;

  const CLI::App& app_;
  Tables* tables_;
  std::vector<std::string> kinds_;
  mutable std::string file_;
  mutable std::vector<std::pair<std::string, int>> key_lines_;
};

}  // namespace tunnel::config
