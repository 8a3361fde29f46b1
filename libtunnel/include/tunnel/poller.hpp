// The interface every readiness backend implements (epoll today; kqueue can sit beside it).
// The event loop and everything above it only see this header, never epoll itself.
#pragma once

#include <cstdint>
#include <memory>
#include <system_error>
#include <vector>

namespace tunnel {

// Interest and readiness bits. kHangup and kError are always reported, whatever the interest.
enum IoBits : uint32_t {
  kReadable = 1u << 0,
  kWritable = 1u << 1,
  kHangup = 1u << 2,
  kError = 1u << 3,
};

struct ReadyEvent {
  void* owner;      // what was registered with the descriptor; nulled if it unregisters mid-batch
  uint32_t events;  // IoBits
};

// Backends are level-triggered: a descriptor stays ready until its condition is consumed.
// That is forgiving (a handler may stop reading before EAGAIN, e.g. when a pipe is full) at the
// cost of an interest update when a direction stalls, which the relay keeps rare.
class Poller {
 public:
  virtual ~Poller() = default;
  virtual std::error_code add(int fd, uint32_t interest, void* owner) = 0;
  virtual std::error_code modify(int fd, uint32_t interest, void* owner) = 0;
  virtual void remove(int fd) = 0;
  // Waits up to timeout_ms (-1: forever) and appends ready descriptors to `out`.
  virtual std::error_code wait(std::vector<ReadyEvent>& out, int timeout_ms) = 0;
  virtual const char* name() const = 0;
};

// The best backend for this platform.
std::unique_ptr<Poller> make_poller();

}  // namespace tunnel
