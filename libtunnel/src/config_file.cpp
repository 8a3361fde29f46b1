// The TOML --config file: flags for CLI11, tables as data, one-line errors with file and line.
#include "tunnel/config_file.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <iterator>
#include <sstream>

namespace tunnel::config {
namespace {

int start_line(const toml::source_region& where) {
  return static_cast<int>(where.begin.line);
}

// A scalar as the text a flag would be given on the command line.
std::optional<std::string> flag_text(const toml::node& node) {
  if (auto s = node.as_string()) return s->get();
  if (auto i = node.as_integer()) return std::to_string(i->get());
  if (auto b = node.as_boolean()) return b->get() ? "true" : "false";
  return std::nullopt;
}

std::optional<Data> table_data(const toml::node& node) {
  if (auto s = node.as_string()) return Data{s->get()};
  if (auto i = node.as_integer()) return Data{i->get()};
  if (auto b = node.as_boolean()) return Data{b->get()};
  if (auto a = node.as_array()) {
    std::vector<std::string> list;
    for (const toml::node& element : *a) {
      auto s = element.as_string();
      if (!s) return std::nullopt;
      list.push_back(s->get());
    }
    return Data{std::move(list)};
  }
  return std::nullopt;
}

// The n-th line (1-based) of `text`.
std::string_view nth_line(std::string_view text, int n) {
  for (int i = 1; i < n; ++i) {
    auto end = text.find('\n');
    if (end == std::string_view::npos) return {};
    text.remove_prefix(end + 1);
  }
  return text.substr(0, text.find('\n'));
}

// toml++ words `key = some text` as a number or date error; old CLI11 files allowed it.
std::string syntax_hint(std::string_view line) {
  auto eq = line.find('=');
  if (eq == std::string_view::npos) return {};
  auto value = line.substr(eq + 1);
  value.remove_prefix(std::min(value.find_first_not_of(" \t"), value.size()));
  if (value.empty() || std::string_view("\"'[{").find(value.front()) != std::string_view::npos)
    return {};
  return " (strings need double quotes: key = \"text\")";
}

}  // namespace

void fail(const std::string& file, int line, const std::string& what) {
  if (line > 0) throw Error(fmt::format("--config {}:{}: {}", file, line, what));
  throw Error(fmt::format("--config {}: {}", file, what));
}

std::string Table::header() const {
  return fmt::format("[{}.{}]", kind, name);
}

std::vector<const Table*> Tables::of_kind(std::string_view kind) const {
  std::vector<const Table*> out;
  for (const Table& t : tables)
    if (t.kind == kind) out.push_back(&t);
  return out;
}

TableReader::TableReader(const Table& table) : table_(table), read_(table.keys.size(), false) {}

const Value* TableReader::find(std::string_view key) {
  for (size_t i = 0; i < table_.keys.size(); ++i) {
    if (table_.keys[i].first == key) {
      read_[i] = true;
      return &table_.keys[i].second;
    }
  }
  return nullptr;
}

int TableReader::line_of(std::string_view key) const {
  for (const auto& [name, value] : table_.keys)
    if (name == key) return value.line;
  return table_.line;
}

void TableReader::fail_key(std::string_view key, const std::string& reason) const {
  fail(table_.file, line_of(key), fmt::format("{} {}: {}", table_.header(), key, reason));
}

void TableReader::fail_table(const std::string& reason) const {
  fail(table_.file, table_.line, fmt::format("{}: {}", table_.header(), reason));
}

namespace {

template <typename T>
std::optional<T> typed(TableReader& reader, const Value* value, std::string_view key,
                       const char* expected) {
  if (!value) return std::nullopt;
  if (auto v = std::get_if<T>(&value->data)) return *v;
  reader.fail_key(key, fmt::format("expected {}", expected));
}

}  // namespace

std::string TableReader::required_string(std::string_view key) {
  auto value = optional_string(key);
  if (!value) fail_table(fmt::format("missing key '{}'", key));
  return *value;
}

std::optional<std::string> TableReader::optional_string(std::string_view key) {
  return typed<std::string>(*this, find(key), key, "a string in double quotes");
}

std::optional<bool> TableReader::optional_bool(std::string_view key) {
  return typed<bool>(*this, find(key), key, "true or false");
}

std::optional<std::int64_t> TableReader::optional_integer(std::string_view key) {
  return typed<std::int64_t>(*this, find(key), key, "an integer");
}

std::optional<std::vector<std::string>> TableReader::string_list(std::string_view key) {
  return typed<std::vector<std::string>>(*this, find(key), key,
                                         "an array of strings, e.g. [\"a\", \"b\"]");
}

void TableReader::finish() const {
  for (size_t i = 0; i < read_.size(); ++i) {
    if (!read_[i]) {
      const auto& [key, value] = table_.keys[i];
      fail(table_.file, value.line, fmt::format("unknown key '{}' in {}", key, table_.header()));
    }
  }
}

TomlReader::TomlReader(const CLI::App& app, Tables* tables, std::vector<std::string> kinds)
    : app_(app), tables_(tables), kinds_(std::move(kinds)) {}

std::string TomlReader::file_name() const {
  const CLI::Option* option = app_.get_config_ptr();
  return option && option->count() ? option->as<std::string>() : std::string("(config)");
}

std::string TomlReader::to_config(const CLI::App*, bool, bool, std::string) const {
  return {};  // the daemons never write their config
}

int TomlReader::line_of(std::string_view key) const {
  for (const auto& [name, line] : key_lines_)
    if (name == key) return line;
  return 0;
}

std::vector<CLI::ConfigItem> TomlReader::from_config(std::istream& input) const {
  const std::string file = file_name();
  file_ = file;
  key_lines_.clear();
  const std::string text(std::istreambuf_iterator<char>(input), {});
  toml::table root;
  try {
    root = toml::parse(text, file);
  } catch (const toml::parse_error& e) {
    const int line = start_line(e.source());
    fail(file, line, std::string(e.description()) + syntax_hint(nth_line(text, line)));
  }

  // Flags and tables in file order, so the first refusal is the first in the file.
  std::vector<std::pair<int, CLI::ConfigItem>> flags;
  Tables found{file, {}};
  for (const auto& [key, node] : root) {
    const std::string name(key.str());
    const int line = start_line(key.source());
    if (const toml::array* array = node.as_array(); array && array->is_array_of_tables())
      fail(file, line, fmt::format("[[{}]]: arrays of tables are not accepted", name));
    if (const toml::table* kind_table = node.as_table()) {
      if (std::find(kinds_.begin(), kinds_.end(), name) == kinds_.end())
        fail(file, line,
             kinds_.empty() ? fmt::format("[{}]: no table is accepted here", name)
                            : fmt::format("[{}]: unknown table (accepted: [{}.<name>])", name,
                                          fmt::join(kinds_, ".<name>], [")));
      for (const auto& [table_key, table_node] : *kind_table) {
        const std::string table_name(table_key.str());
        const toml::table* entries = table_node.as_table();
        if (!entries)
          fail(file, start_line(table_key.source()),
               fmt::format("{}: expected a table [{}.{}]", name, name, table_name));
        Table table{file, name, table_name, start_line(table_node.source()), {}};
        for (const auto& [entry_key, entry_node] : *entries) {
          const std::string entry(entry_key.str());
          const int entry_line = start_line(entry_key.source());
          if (entry_node.is_table())
            fail(file, entry_line,
                 fmt::format("{} {}: nested tables are not accepted", table.header(), entry));
          auto data = table_data(entry_node);
          if (!data)
            fail(file, entry_line,
                 fmt::format("{} {}: expected a string, an integer, true/false or an array of "
                             "strings",
                             table.header(), entry));
          table.keys.emplace_back(entry, Value{std::move(*data), entry_line});
        }
        std::sort(table.keys.begin(), table.keys.end(),
                  [](const auto& a, const auto& b) { return a.second.line < b.second.line; });
        found.tables.push_back(std::move(table));
      }
      continue;
    }
    const CLI::Option* option = app_.get_option_no_throw("--" + name);
    if (!option) fail(file, line, fmt::format("unknown key '{}'", name));
    // CLI11 would count `flag = 3` as three; a flag in the file is true or false.
    if (option->get_expected_min() == 0 && !node.is_boolean())
      fail(file, line, fmt::format("{}: expected true or false", name));
    key_lines_.emplace_back(name, line);
    CLI::ConfigItem item;
    item.name = name;
    const char* expected = "expected a string, an integer, true/false or an array of them";
    if (const toml::array* array = node.as_array()) {
      for (const toml::node& element : *array) {
        auto text_value = flag_text(element);
        if (!text_value) fail(file, line, fmt::format("{}: {}", name, expected));
        item.inputs.push_back(std::move(*text_value));
      }
    } else if (auto text_value = flag_text(node)) {
      item.inputs.push_back(std::move(*text_value));
    } else {
      fail(file, line, fmt::format("{}: {}", name, expected));
    }
    flags.emplace_back(line, std::move(item));
  }
  std::stable_sort(flags.begin(), flags.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::stable_sort(found.tables.begin(), found.tables.end(),
                   [](const Table& a, const Table& b) { return a.line < b.line; });
  if (tables_) *tables_ = std::move(found);
  std::vector<CLI::ConfigItem> result;
  for (auto& [line, item] : flags) result.push_back(std::move(item));
  return result;
}

}  // namespace tunnel::config
