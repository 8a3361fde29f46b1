// Helpers of the operations tests: temp dirs, prefixed daemons, commands, /proc CPU time.
#include "ops_support.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "support/socket_io.hpp"

namespace tunnel::test::ops {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      std::string(base != nullptr && base[0] != '\0' ? base : "/tmp") + "/tunnel-ops-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::runtime_error("mkdtemp " + pattern + ": " + std::strerror(errno));
  }
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

void write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

std::unique_ptr<Process> start_process(const std::string& name,
                                       const std::vector<std::string>& prefix,
                                       const std::string& binary,
                                       const std::vector<std::string>& args) {
  std::vector<std::string> argv = prefix;
  argv.push_back(binary);
  argv.insert(argv.end(), args.begin(), args.end());
  return std::make_unique<Process>(name, std::move(argv));
}

uint16_t bound_port(const Process& process, const std::string& side, Millis timeout) {
  const std::string line = process.wait_for_line(
      Match::regex("event=listening side=" + side + " addr=127\\.0\\.0\\.1:[0-9]+"), timeout);
  const auto addr = field(line, "addr");
  const int port = std::stoi(addr->substr(addr->rfind(':') + 1));
  if (port <= 0 || port > 65535) throw std::runtime_error("bad port in: " + line);
  return static_cast<uint16_t>(port);
}

std::vector<std::string> server_listen_args(uint16_t port_a, uint16_t port_b) {
  return {"--listen-a", loopback(port_a), "--listen-b", loopback(port_b)};
}

std::vector<std::string> concat(std::vector<std::string> args,
                                const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

std::pair<uint16_t, uint16_t> two_free_ports() {
  const uint16_t first = refused_port();
  uint16_t second = refused_port();
  while (second == first) second = refused_port();
  return {first, second};
}

std::string find_program(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  // Debian keeps some administration tools in sbin, which a test runner's PATH may lack.
  dirs += ":/usr/sbin:/sbin:/usr/bin:/bin";
  std::istringstream in(dirs);
  for (std::string dir; std::getline(in, dir, ':');) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/" + program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

std::string CommandResult::output() const {
  std::string out;
  for (const auto& line : lines) out += "  " + line + "\n";
  return out;
}

CommandResult run_command(const std::vector<std::string>& argv, Millis timeout) {
  Process process(argv.at(0).substr(argv.at(0).rfind('/') + 1), argv);
  CommandResult result;
  result.status = process.wait_exit(timeout);
  for (const auto& line : process.log().lines()) result.lines.push_back(line.text);
  return result;
}

Millis cpu_time(pid_t pid) {
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  // The command name (field 2) may hold spaces: the fields that matter come after its ')'.
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::vector<std::string> fields;
  for (std::string f; rest >> f;) fields.push_back(f);
  // Field 3 (state) is fields[0]; utime and stime are fields 14 and 15.
  if (fields.size() < 13) throw std::runtime_error("short /proc/PID/stat: " + stat);
  const long long ticks = std::stoll(fields[11]) + std::stoll(fields[12]);
  return Millis(ticks * 1000 / ::sysconf(_SC_CLK_TCK));
}

std::vector<long long> retry_values(const LineLog& log, const Match& match, size_t from) {
  std::vector<long long> values;
  const auto lines = log.lines();
  for (size_t i = from; i < lines.size(); ++i) {
    if (!match(lines[i].text)) continue;
    const auto value = field(lines[i].text, "retry_in_ms");
    if (!value) throw std::runtime_error("no retry_in_ms in: " + lines[i].text);
    values.push_back(std::stoll(*value));
  }
  return values;
}

std::string join(const std::vector<long long>& values) {
  std::string out;
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(values[i]);
  }
  return out;
}

}  // namespace tunnel::test::ops
