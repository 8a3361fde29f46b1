// The relay: two flows (visitor -> service, service -> visitor), each moving bytes through a pooled
// pipe with splice(2), or through a buffer when no pipe is free or the descriptors cannot splice.
#include "tunnel/relay.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "tunnel/socket.hpp"

namespace tunnel {
namespace {

constexpr size_t kBufferSize = 64 * 1024;
// Read/write rounds per wake-up: enough to move a burst without another poll, few enough to stay
// fair to the loop's other connections.
constexpr int kRoundsPerEvent = 4;
constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

const char* side_name(int side) {
  return side == 0 ? "the visitor side" : "the service side";
}

// splice(2) into a socket has no MSG_NOSIGNAL: a peer gone mid-write raises SIGPIPE, which kills a
// process that did not ignore it. The relay's thread keeps SIGPIPE blocked, and the one raised by
// a failed splice is taken back at once, so the error is just EPIPE, as with send_nosignal().
void block_sigpipe_in_this_thread() {
  thread_local bool blocked = false;
  if (blocked) return;
  sigset_t pipe_only;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, nullptr);
  blocked = true;
}

void take_back_sigpipe() {
  sigset_t pipe_only;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  timespec no_wait{0, 0};
  while (sigtimedwait(&pipe_only, nullptr, &no_wait) == SIGPIPE) {
  }
}

}  // namespace

size_t Relay::Flow::room() const {
  switch (mode) {
    case Mode::pipe:
      return pipe.capacity - pending;
    case Mode::buffer:
      return kBufferSize - buffer_start - pending;
    case Mode::idle:
      break;
  }
  return kBufferSize;
}

Relay::Relay(EventLoop& loop, PipePool& pipes, Fd visitor_side, Fd service_side, Done done)
    : loop_(loop), pipes_(pipes), done_(std::move(done)) {
  block_sigpipe_in_this_thread();
  set_nodelay(visitor_side.get());
  set_nodelay(service_side.get());
  Fd fds[2] = {std::move(visitor_side), std::move(service_side)};
  for (Side side : {kVisitor, kService}) {
    flow_[side].from = side;
    flow_[side].to = 1 - side;
    side_[side].emplace(loop_, std::move(fds[side]), kReadable,
                        [this, side](uint32_t events) { on_ready(side, events); });
  }
}

Relay::~Relay() {
  for (auto& flow : flow_)
    if (flow.mode == Flow::Mode::pipe) pipes_.discard(std::move(flow.pipe));
}

uint64_t Relay::bytes_to_service() const {
  return flow_[kVisitor].delivered;
}
uint64_t Relay::bytes_to_visitor() const {
  return flow_[kService].delivered;
}

RelayOutcome Relay::outcome(bool reset, std::string reason) const {
  return {bytes_to_service(), bytes_to_visitor(), reset, std::move(reason)};
}

void Relay::abort(std::string reason) {
  if (!finished_) fail(std::move(reason));
}

void Relay::on_ready(Side side, uint32_t events) {
  if (finished_) return;
  if (events & kError) {
    if (auto ec = take_socket_error(side_[side]->fd())) {
      fail(fmt::format("{} on {}", ec.message(), side_name(side)));
      return;
    }
  }
  // A hang-up is delivered whatever we asked for. The read and write below surface it as end of
  // stream or as an error when they can run; when they cannot, update_interest suspends the side.
  if (events & kHangup) hung_up_[side] = true;
  bool hangup = events & (kHangup | kError);
  if ((events & kReadable) || hangup) pump(flow_[side]);
  if (finished_) return;
  if ((events & kWritable) || hangup) pump(flow_[1 - side]);
  if (finished_) return;
  maybe_finish();
  if (!finished_) update_interest();
}

// Reads what `from` has (as room allows) and writes what is pending to `to`, a few rounds at most.
void Relay::pump(Flow& flow) {
  int from_fd = side_[flow.from]->fd();
  int to_fd = side_[flow.to]->fd();
  // A read that got less than it asked for emptied the socket: another would only say EAGAIN (a
  // system call per message on a ping-pong). The poller is level-triggered, so whatever arrives
  // later, or a pipe out of slots that cut the read short, is reported again.
  bool drained = false;
  for (int round = 0; round < kRoundsPerEvent; ++round) {
    bool progressed = false;

    if (flow.wants_read() && from_fd >= 0 && !drained) {
      if (flow.mode == Flow::Mode::idle) {
        if (!flow.splice_unsupported) flow.pipe = pipes_.acquire();
        if (flow.pipe) {
          flow.mode = Flow::Mode::pipe;
        } else {
          if (!flow.buffer) flow.buffer = std::make_unique_for_overwrite<char[]>(kBufferSize);
          flow.mode = Flow::Mode::buffer;
        }
      }
      ssize_t n;
      const size_t room = flow.room();
      if (flow.mode == Flow::Mode::pipe) {
        n = ::splice(from_fd, nullptr, flow.pipe.write_end.get(), nullptr, room, kSpliceFlags);
        if (n < 0 && errno == EINVAL && flow.pending == 0) {
          // This pair of descriptors cannot splice: use the buffer path from now on.
          flow.splice_unsupported = true;
          pipes_.release(std::move(flow.pipe));
          flow.pipe = {};
          flow.mode = Flow::Mode::idle;
          continue;
        }
      } else {
        n = ::recv(from_fd, flow.buffer.get() + flow.buffer_start + flow.pending, room, 0);
      }
      if (n > 0) {
        flow.pending += static_cast<size_t>(n);
        drained = static_cast<size_t>(n) < room;
        progressed = true;
      } else if (n == 0) {
        flow.eof = true;
      } else if (errno == EAGAIN) {
        // With bytes in the pipe, EAGAIN may mean the pipe is out of slots, not the socket empty.
        if (flow.mode == Flow::Mode::pipe && flow.pending > 0) flow.pipe_full = true;
      } else if (errno != EINTR) {
        fail(fmt::format("{} reading {}", std::strerror(errno), side_name(flow.from)));
        return;
      }
    }

    if (flow.pending > 0) {
      ssize_t n;
      if (flow.mode == Flow::Mode::pipe) {
        n = ::splice(flow.pipe.read_end.get(), nullptr, to_fd, nullptr, flow.pending, kSpliceFlags);
      } else {
        n = send_nosignal(to_fd, flow.buffer.get() + flow.buffer_start, flow.pending);
      }
      if (n > 0) {
        flow.pending -= static_cast<size_t>(n);
        flow.pipe_full = false;
        flow.delivered += static_cast<uint64_t>(n);
        if (flow.mode == Flow::Mode::buffer) flow.buffer_start += static_cast<size_t>(n);
        progressed = true;
      } else if (errno != EAGAIN && errno != EINTR) {
        int error = errno;
        if (error == EPIPE) take_back_sigpipe();
        fail(fmt::format("{} writing {}", std::strerror(error), side_name(flow.to)));
        return;
      }
    }

    if (flow.pending == 0) {
      // Empty: give the pipe back so an idle connection holds none.
      if (flow.mode == Flow::Mode::pipe) pipes_.release(std::move(flow.pipe));
      flow.pipe = {};
      flow.buffer_start = 0;
      flow.mode = Flow::Mode::idle;
      if (flow.eof && !flow.shut) {
        ::shutdown(to_fd, SHUT_WR);
        flow.shut = true;
      }
    }
    if (!progressed || flow.eof) break;
  }
  // A buffer taken because no pipe was free goes back once empty, so an idle relay holds no memory
  // beyond its own state. Only descriptors that cannot splice keep theirs, being on it for good.
  if (flow.pending == 0 && !flow.splice_unsupported) flow.buffer.reset();
}

void Relay::update_interest() {
  for (Side side : {kVisitor, kService}) {
    Channel& channel = *side_[side];
    if (channel.fd() < 0) continue;
    const Flow& reading = flow_[side];
    const Flow& writing = flow_[1 - side];
    if (reading.eof && writing.shut) {
      // Nothing more will cross this socket either way. Closing it now also stops the hang-up
      // that epoll would otherwise keep reporting while the other direction finishes.
      channel.close();
      continue;
    }
    uint32_t interest = 0;
    if (reading.wants_read()) interest |= kReadable;
    if (writing.pending > 0) interest |= kWritable;
    channel.set_interest(interest);
    // A hung-up socket (both ways shut at the TCP level, e.g. our FIN out and the peer's in) is
    // reported on every poll whatever the interest. With nothing to ask of it (its flow waits for
    // the other side to drain, nothing is pending for it), the relay cannot act on that report:
    // left registered, it would wake the loop again and again until the other side drains, forever
    // if nobody reads there. So it leaves the poller until it has something to do again; the other
    // side's writable event that frees room for its flow brings us back here. A side that has not
    // hung up stays registered even with no interest, so that a reset on it is seen at once.
    if (interest == 0 && hung_up_[side]) {
      channel.suspend();
    } else if (auto ec = channel.resume()) {
      fail(fmt::format("{} watching {} again", ec.message(), side_name(side)));
      return;
    }
  }
}

void Relay::maybe_finish() {
  if (!flow_[0].shut || !flow_[1].shut) return;
  finished_ = true;
  side_[0]->close();
  side_[1]->close();
  loop_.defer([done = std::move(done_), ended = outcome(false, "closed")] { done(ended); });
}

void Relay::fail(std::string reason) {
  finished_ = true;
  for (auto& side : side_) {
    if (side->fd() >= 0) set_linger_reset(side->fd());
    side->close();
  }
  for (auto& flow : flow_) {
    if (flow.mode == Flow::Mode::pipe) pipes_.discard(std::move(flow.pipe));
    flow.pipe = {};
    flow.mode = Flow::Mode::idle;
  }
  loop_.defer([done = std::move(done_), ended = outcome(true, std::move(reason))] { done(ended); });
}

}  // namespace tunnel
