// The request load: worker threads running one short connection after another.
#include "support/request_load.hpp"

#include <cerrno>
#include <cstring>
#include <exception>

#include "support/payload.hpp"
#include "support/socket_io.hpp"

namespace tunnel::test {

namespace {

constexpr size_t kErrorsKept = 5;

// One request/response: what came back, or why not.
Attempt attempt_once(uint16_t port, const std::string& request, Millis timeout) {
  Attempt a;
  a.start = Clock::now();
  try {
    Socket s = connect_tcp(port, timeout);
    int error = 0;
    if (!try_send_all(s, request, timeout, error)) {
      a.error = std::string("sending the request: ") + std::strerror(error);
    } else {
      shutdown_write(s);
      const ReadResult r = read_to_end(s, timeout, request.size() + 4096);
      const size_t newline = r.data.find('\n');
      if (newline != std::string::npos) a.banner = r.data.substr(0, newline);
      const std::string body = newline == std::string::npos ? "" : r.data.substr(newline + 1);
      if (r.end != End::eof) {
        a.error = "the answer ended with " + r.describe();
      } else if (newline == std::string::npos || body != request) {
        a.error = "wrong answer: " + std::to_string(r.data.size()) + " bytes, banner '" + a.banner +
                  "', body " + (body.size() == request.size() ? "differs" : "size ") +
                  (body.size() == request.size() ? "" : std::to_string(body.size()));
      } else {
        a.ok = true;
      }
    }
  } catch (const std::exception& e) {
    a.error = e.what();
  }
  a.end = Clock::now();
  return a;
}

}  // namespace

RequestLoad::RequestLoad(uint16_t port, size_t threads, size_t request_size, Millis attempt_timeout)
    : port_(port), request_size_(request_size), attempt_timeout_(attempt_timeout) {
  for (size_t i = 0; i < threads; ++i) workers_.emplace_back([this, i] { work(i); });
}

RequestLoad::~RequestLoad() {
  stop();
}

void RequestLoad::stop() {
  stop_ = true;
  for (auto& worker : workers_)
    if (worker.joinable()) worker.join();
}

void RequestLoad::work(size_t worker) {
  for (uint64_t n = 0; !stop_; ++n) {
    const std::string request = make_payload((uint64_t{worker} << 32) | n, request_size_);
    Attempt a = attempt_once(port_, request, attempt_timeout_);
    std::lock_guard lock(mutex_);
    attempts_.push_back(std::move(a));
  }
}

std::vector<Attempt> RequestLoad::attempts() const {
  std::lock_guard lock(mutex_);
  return attempts_;
}

size_t RequestLoad::finished() const {
  std::lock_guard lock(mutex_);
  return attempts_.size();
}

void RequestLoad::wait_for_more(size_t n, Millis timeout) const {
  const size_t target = finished() + n;
  if (!poll_until([&] { return finished() >= target; }, timeout)) {
    throw WaitTimeout("request load: " + std::to_string(n) + " more attempts did not finish in " +
                      std::to_string(timeout.count()) + " ms (" + std::to_string(finished()) +
                      " finished, wanted " + std::to_string(target) + ")");
  }
}

std::vector<Attempt> started_since(const std::vector<Attempt>& attempts, Clock::time_point since) {
  std::vector<Attempt> out;
  for (const auto& a : attempts)
    if (a.start >= since) out.push_back(a);
  return out;
}

LoadSummary summarize(const std::vector<Attempt>& attempts) {
  LoadSummary s;
  s.total = attempts.size();
  for (const auto& a : attempts) {
    if (a.ok) {
      ++s.by_banner[a.banner];
      continue;
    }
    if (s.failed++ < kErrorsKept) s.first_errors += "\n  " + a.error;
  }
  return s;
}

std::string LoadSummary::describe() const {
  std::string out = std::to_string(total) + " attempts, " + std::to_string(failed) + " failed";
  for (const auto& [banner, count] : by_banner) out += ", " + banner + ": " + std::to_string(count);
  return out + first_errors;
}

}  // namespace tunnel::test
