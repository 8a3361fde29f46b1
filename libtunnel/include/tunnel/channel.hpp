// A descriptor registered with an event loop: owns the Fd, unregisters before closing it, and calls
// its handler with IoBits when the descriptor is ready for what was asked.
#pragma once

#include <cstdint>
#include <functional>
#include <system_error>

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
  // Changes what wakes the handler; a no-op (no system call) when nothing changes. A suspended
  // channel records it and stays suspended.
  void set_interest(uint32_t interest);

  // Takes the descriptor out of the poller and keeps it open: nothing wakes the handler, not even
  // a hang-up or an error, which a poller reports whatever the interest. For a descriptor that has
  // hung up while its owner can do nothing with it for now: left registered, it would wake the
  // loop on every poll (level-triggered) until the owner could act.
  void suspend();
  // Registers a suspended descriptor again with its interest. Level-triggered, so whatever became
  // ready meanwhile (the hang-up included) is reported at the next poll. No-op unless suspended;
  // on failure the channel stays suspended.
  [[nodiscard]] std::error_code resume();
  bool suspended() const { return fd_ && !registered_; }

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
