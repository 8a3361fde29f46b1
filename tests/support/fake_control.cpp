// The scripted control peer: handshake, PING/PONG, and collection of announcements.
#include "support/fake_control.hpp"

#include <random>
#include <stdexcept>

namespace tunnel::test {

FakeControl::FakeControl(uint16_t port_b, std::string first_line, Millis timeout)
    : socket_(connect_tcp(port_b, timeout)) {
  send_all(socket_, first_line + "\n", timeout);
  ReadResult r = read_line(socket_, timeout, 512);
  answer_ = r.end == End::complete ? r.data : "<no answer line: " + r.describe() + ">";
  if (online()) {
    thread_ = std::thread([this] { run(); });
  }
}

FakeControl::~FakeControl() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void FakeControl::run() {
  while (!stop_) {
    ReadResult r = read_line(socket_, Millis(20), 512);
    if (r.end == End::timeout) {
      // A partial line stays in the kernel buffer only if nothing was read; keep what was read.
      if (!r.data.empty()) {
        ReadResult rest = read_line(socket_, Millis(5000), 512);
        r.data += rest.data;
        r.end = rest.end;
      } else {
        continue;
      }
    }
    if (r.end != End::complete) {
      closed_ = true;
      new_arrived_.notify_all();
      return;
    }
    const std::string& line = r.data;
    if (line.rfind("PING ", 0) == 0) {
      ++pings_;
      if (answer_pings_) send_line("PONG " + line.substr(5));
    } else if (line.rfind("NEW ", 0) == 0) {
      {
        std::lock_guard lock(mutex_);
        news_.push_back(line.substr(4));
      }
      new_arrived_.notify_all();
    } else if (line.rfind("CLOSE ", 0) == 0) {
      std::lock_guard lock(mutex_);
      closes_.push_back(line.substr(6));
    } else {
      std::lock_guard lock(mutex_);
      others_.push_back(line);
    }
  }
}

std::string FakeControl::wait_new(Millis timeout) {
  std::unique_lock lock(mutex_);
  if (!new_arrived_.wait_for(lock, timeout, [this] { return !news_.empty() || closed_; }) ||
      news_.empty()) {
    throw WaitTimeout(std::string("fake control: no NEW <id> within ") +
                      std::to_string(timeout.count()) + " ms" +
                      (closed_ ? " (the server closed the control connection)" : ""));
  }
  std::string id = news_.front();
  news_.pop_front();
  return id;
}

std::vector<std::string> FakeControl::closes() const {
  std::lock_guard lock(mutex_);
  return closes_;
}

std::vector<std::string> FakeControl::other_lines() const {
  std::lock_guard lock(mutex_);
  return others_;
}

void FakeControl::send_line(const std::string& line) {
  std::lock_guard lock(send_mutex_);
  int error = 0;
  try_send_all(socket_, line + "\n", Millis(5000), error);
}

std::string random_id() {
  static std::mutex mutex;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lock(mutex);
  static const char* hex = "0123456789abcdef";
  std::string id;
  for (int i = 0; i < 32; ++i) id += hex[rng() & 15];
  return id;
}

}  // namespace tunnel::test
