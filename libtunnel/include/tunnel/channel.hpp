// A descriptor registered with an event loop: owns the Fd, unregisters before closing it, and calls
// its handler with IoBits when the descriptor is ready for what was asked.
#pragma once

#include <cstdint>
#include <functional>

#include "tunnel/event_loop.hpp"
#include "tunnel/fd.hpp"

namespace tunnel {

class Channel {
 public:
  using Handler = std::function<void(uint32_t events)>;

  Channel(EventLoop& loop, Fd fd, uint32_t interest, Handler handler);
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  int fd() const { return fd_.get(); }
  uint32_t interest() const { return interest_; }
  // Changes what wakes the handler; a no-op (no system call) when nothing changes.
  void set_interest(uint32_t interest);
  // Unregisters and hands the descriptor to a new owner.
  Fd release();
  // Unregisters and closes now. Safe from inside the handler; the object stays valid (fd() == -1).
  void close();

  // Runs the handler. Destroying the Channel from inside it breaks the lifetime rule
  // (event_loop.hpp); debug builds assert it.
  void dispatch(uint32_t events);

 private:
  void unregister();

  EventLoop& loop_;
  Fd fd_;
  uint32_t interest_;
  Handler handler_;
  bool registered_ = false;
  bool dispatching_ = false;
};

}  // namespace tunnel
