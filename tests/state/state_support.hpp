// What the in-process state-machine tests stand on: a loop on a manual clock, bounded pumping of
// that loop until a condition holds, socketpairs, and a loopback listener the test accepts from.
// Nothing here waits on the wall clock for a timer: time moves only by EventLoop::advance().
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tunnel/address.hpp"
#include "tunnel/event_loop.hpp"
#include "tunnel/fd.hpp"
#include "tunnel/stream_socket.hpp"

namespace state_tests {

// A loop whose clock only the test moves.
struct ManualLoop {
  tunnel::EventLoop loop;
  ManualLoop() { loop.use_manual_clock(); }
  // Runs rounds until `done` holds; each round waits for I/O at most 10 ms (the kernel moving bytes
  // between local sockets), never for a timer. False when `done` never held in `max_rounds`.
  bool pump_until(const std::function<bool()>& done, int max_rounds = 500);
  // Runs rounds until nothing is ready (I/O settled, deferred work done).
  void settle(int rounds = 5);
  void advance(tunnel::Clock::duration by) { loop.advance(by); }
};

// A connected pair of non-blocking stream sockets: `ours` for the code under test, `theirs` for
// the test playing the peer.
struct SocketPair {
  tunnel::Fd ours;
  tunnel::Fd theirs;
};
SocketPair socket_pair();

// A socket as the daemons hand it on, over plain TCP.
inline tunnel::StreamSocket plain(tunnel::Fd fd) {
  return tunnel::StreamSocket{std::move(fd), nullptr, {}};
}

// A TCP listener on 127.0.0.1 with an ephemeral port; the test accepts from it by hand.
class LoopbackListener {
 public:
  // A small backlog (0) lets a test fill the accept queue so that further connects stall.
  explicit LoopbackListener(int backlog = 128);
  const tunnel::SocketAddress& address() const { return address_; }
  const tunnel::SocketAddresses& addresses() const { return addresses_; }
  // A connection waiting in the backlog, or an empty Fd.
  tunnel::Fd accept_one();
  void close() { fd_.reset(); }

 private:
  tunnel::Fd fd_;
  tunnel::SocketAddress address_;
  tunnel::SocketAddresses addresses_;
};

// Reads what is there now (non-blocking) and appends it to `into`. Returns false once the peer has
// closed (read 0) or reset.
bool read_available(int fd, std::string& into);
// Everything written, or false.
bool write_all(int fd, std::string_view bytes);
// True when the peer closed or reset `fd` (a non-blocking read returns 0 or an error).
bool peer_closed(int fd);
// A TCP address on 127.0.0.1 where nothing listens (bound, never listening, so connects are
// refused for as long as the returned Fd lives).
std::pair<tunnel::Fd, tunnel::SocketAddresses> refusing_address();

// The test's end of a line-speaking connection (the peer of a control connection): every line it
// has read, whether it saw the close, and a transcript for failure messages.
struct LinePeer {
  LinePeer(std::string who, tunnel::Fd end) : name(std::move(who)), fd(std::move(end)) {}
  std::string name;
  tunnel::Fd fd;
  std::string partial;
  std::vector<std::string> lines;
  bool closed = false;

  // Reads what has arrived and splits it into lines.
  void poll();
  bool got(std::string_view line);
  bool got_prefix(std::string_view prefix);
  bool saw_close();
  // Writes a line (with its `\n`); fails the test if it cannot.
  void say(std::string_view line);
  std::string transcript() const;
};

}  // namespace state_tests
