// The TLS relay: two flows, one from the plain side into the Stream (SSL_write) and one out of it
// (SSL_read), each through a buffer taken while it moves bytes. The plain side is read with recv
// and written with send; splice cannot help, since the bytes are encrypted on one side.
//
// The Stream is in bulk mode: a write of several records sends them with one send, and while
// bytes stream, one recv reads several records ahead. A flow's buffer starts at one record and
// grows to four once a read fills it. The flows' buffers and the Stream's are kept while bytes
// move and given back once a whole kReleaseAfter passed without a wake-up (on_release): taking
// and freeing them at every wake-up cost allocations per burst, and with more than 128 KiB freed
// at once glibc gave the memory back to the kernel (brk) and faulted it in again at the next one.
//
// What the Stream asks of its user (tls_stream.hpp) and where it is done here:
// - bytes no poller reports (has_buffered_input()): top_up() after each pump, and the kick timer
//   (needs_kick) for the one case pump cannot cover, the start;
// - records written that the socket did not take (unsent()): the flow into the Stream waits for
//   writability and flushes them (write), before anything else it writes and before its end;
// - a read that wants writability, a write that wants readability: each flow records what it
//   waits for (read_wait, write_wait), which update_interest asks of the poller and on_ready
//   matches against the events;
// - a write repeated with the same bytes: the buffer only grows at its end while bytes are in it,
//   and its start moves only by what a write took, so a repeat starts at the same byte with at
//   least as many bytes;
// - shutdown_write only with no write unfinished: only once the buffer is empty.
#include "tunnel/tls_relay.hpp"

#include <fmt/format.h>
#include <sys/socket.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <span>

#include "tunnel/socket.hpp"

namespace tunnel {
namespace {

// Read/write rounds per wake-up, as in the plain relay: a burst moves without another poll, and
// the loop's other connections get their turn.
constexpr int kRoundsPerEvent = 4;

const char* side_name(int side) {
  return side == 0 ? "the visitor side" : "the service side";
}

}  // namespace

struct TlsRelay::Flow {
  int from = 0;                      // side index bytes come from
  int to = 1;                        // side index they go to
  bool decrypts = false;             // `from` is the TLS side (else `to` is)
  std::unique_ptr<char[]> buffer;    // while it moves bytes (until on_release)
  size_t capacity = 0;               // of `buffer`
  size_t wanted = kFirstBufferSize;  // the capacity of the next buffer taken
  size_t start = 0;                  // first byte not yet written to `to`
  size_t pending = 0;                // bytes from `start` on, read and not yet written
  uint32_t read_wait = kReadable;    // what `from` must be ready for before the next read
  uint32_t write_wait = kWritable;   // what `to` must be ready for before the next write
  bool eof = false;                  // `from` will send nothing more
  bool drained = false;              // the last read took all `from` had for now
  bool shut = false;                 // that end was passed on to `to`
  uint64_t delivered = 0;

  size_t room() const { return buffer ? capacity - start - pending : wanted; }
  bool wants_read() const { return !eof && room() > 0; }
  // Bytes to write, or the end to pass on.
  bool wants_write() const { return pending > 0 || (eof && !shut); }
  void take_buffer(size_t size) {
    if (buffer) return;
    buffer = std::make_unique_for_overwrite<char[]>(size);
    capacity = size;
    start = 0;
  }
  // A read filled the buffer: the source has more than it holds, so the next one is the large
  // one, taken as soon as this one is empty.
  void grow_later() {
    if (capacity < kBufferSize) wanted = kBufferSize;
  }
  void drop_buffer() {
    buffer.reset();
    capacity = 0;
    start = 0;
    pending = 0;
  }
};

TlsRelay::TlsRelay(EventLoop& loop, Fd visitor_side, Fd service_side, TlsSide tls_side,
                   std::unique_ptr<tls::Stream> stream, std::string_view initial, Done done)
    : loop_(loop),
      tls_(tls_side == TlsSide::visitor ? kVisitor : kService),
      stream_(std::move(stream)),
      kick_(loop, [this] { on_kick(); }),
      release_(loop, [this] { on_release(); }),
      done_(std::move(done)) {
  Fd fds[2] = {std::move(visitor_side), std::move(service_side)};
  assert(stream_ && stream_->established() && stream_->fd() == fds[tls_].get());
  set_nodelay(fds[kVisitor].get());
  set_nodelay(fds[kService].get());
  for (Side side : {kVisitor, kService}) {
    flow_[side] = std::make_unique<Flow>();
    flow_[side]->from = side;
    flow_[side]->to = 1 - side;
    flow_[side]->decrypts = side == tls_;
  }
  stream_->enable_bulk();
  if (!initial.empty()) {
    // May be larger than one buffer (a line reader's leftover): taken whole, once.
    Flow& out_of_tls = *flow_[tls_];
    out_of_tls.take_buffer(std::max(kFirstBufferSize, initial.size()));
    std::memcpy(out_of_tls.buffer.get(), initial.data(), initial.size());
    out_of_tls.pending = initial.size();
  }
  for (Side side : {kVisitor, kService}) {
    side_[side] =
        std::make_unique<Channel>(loop_, std::move(fds[side]), kReadable,
                                  [this, side](uint32_t events) { on_ready(side, events); });
  }
  // Bytes the Stream already decrypted (the rest of the first line's record) are reported by no
  // poller: update_interest arms the kick for them, which runs from the loop, never from here.
  update_interest();
}

TlsRelay::~TlsRelay() = default;

uint64_t TlsRelay::bytes_to_service() const {
  return flow_[kVisitor]->delivered;
}
uint64_t TlsRelay::bytes_to_visitor() const {
  return flow_[kService]->delivered;
}

size_t TlsRelay::buffers_held() const {
  return (flow_[0]->buffer ? 1 : 0) + (flow_[1]->buffer ? 1 : 0);
}

RelayOutcome TlsRelay::outcome(bool reset, std::string reason) const {
  return {bytes_to_service(), bytes_to_visitor(), reset, std::move(reason)};
}

void TlsRelay::abort(std::string reason) {
  if (!finished_) fail(std::move(reason));
}

void TlsRelay::on_ready(Side side, uint32_t events) {
  if (finished_) return;
  if (events & kError) {
    if (auto ec = take_socket_error(side_[side]->fd())) {
      fail(fmt::format("{} on {}", ec.message(), side_name(side)));
      return;
    }
  }
  // As in Relay::on_ready: a hang-up comes whatever the interest; the reads and writes below turn
  // it into an end or an error when they can run, and update_interest suspends the side when not.
  if (events & kHangup) hung_up_[side] = true;
  bool hangup = events & (kHangup | kError);
  Flow& reading = *flow_[side];      // reads this side
  Flow& writing = *flow_[1 - side];  // writes to this side
  if ((events & reading.read_wait) || hangup) pump(reading);
  if (finished_) return;
  if ((events & writing.write_wait) || hangup) pump(writing);
  if (finished_) return;
  after_wake();
}

// The end of every wake-up: finish if both ways have ended, else ask the poller for what the flows
// wait for, and note the wake-up for on_release.
void TlsRelay::after_wake() {
  maybe_finish();
  if (finished_) return;
  update_interest();
  woken_ = true;
  if (!release_.armed()) release_.arm(kReleaseAfter);
}

void TlsRelay::on_kick() {
  if (finished_) return;
  pump(*flow_[tls_]);
  if (finished_) return;
  after_wake();
}

// Reads what `from` has (as room allows) and writes what is pending to `to`, a few rounds at most.
void TlsRelay::pump(Flow& flow) {
  for (int round = 0; round < kRoundsPerEvent; ++round) {
    bool progressed = false;
    if (flow.wants_read() && side_[flow.from]->fd() >= 0) {
      flow.take_buffer(flow.wanted);
      size_t before = flow.pending;
      if (!read(flow)) return;
      progressed = flow.pending > before;
    }
    if (flow.pending > 0 || unsent(flow)) {
      size_t before = flow.pending;
      if (!write(flow)) return;
      progressed = progressed || flow.pending < before;
    }
    if (flow.pending == 0) {
      flow.start = 0;
      if (flow.capacity < flow.wanted) flow.drop_buffer();  // the large one comes next
    }
    if (flow.pending == 0 && !unsent(flow)) {
      if (flow.eof && !flow.shut) {
        pass_on_end(flow);
        if (finished_) return;
      }
    }
    // A drained source would only answer EAGAIN now: the poller says when more comes.
    if (!progressed || flow.eof || flow.drained) break;
  }
  if (flow.decrypts) {
    top_up(flow);
    if (finished_) return;
  }
}

// Fills the buffer's room from `from` as far as it has bytes now: one recv on the plain side (a
// short one means the socket is empty), reads from the Stream until the room is full or it waits
// for the socket. False when the relay failed.
bool TlsRelay::read(Flow& flow) {
  flow.drained = false;
  if (!flow.decrypts) {
    size_t room = flow.room();
    ssize_t n =
        ::recv(side_[flow.from]->fd(), flow.buffer.get() + flow.start + flow.pending, room, 0);
    if (n > 0) {
      flow.pending += static_cast<size_t>(n);
      flow.drained = static_cast<size_t>(n) < room;
      if (flow.room() == 0) flow.grow_later();
    } else if (n == 0) {
      flow.eof = true;
    } else if (errno == EAGAIN) {
      flow.drained = true;
    } else if (errno != EINTR) {
      fail(fmt::format("{} reading {}", std::strerror(errno), side_name(flow.from)));
      return false;
    }
    return true;
  }
  // Each read() takes the records one recv brought; when it stops with room left, the next
  // recv may bring more (read-ahead reads the rest of a cut record exactly, then many at once),
  // unless the last one emptied the socket.
  tls::IoResult result;
  do {
    result =
        stream_->read(std::span<char>(flow.buffer.get() + flow.start + flow.pending, flow.room()));
    if (result.status == tls::IoStatus::ok) flow.pending += result.bytes;
  } while (result.status == tls::IoStatus::ok && flow.room() > 0 && !stream_->socket_drained());
  switch (result.status) {
    case tls::IoStatus::ok:
      flow.read_wait = kReadable;
      if (flow.room() == 0)
        flow.grow_later();
      else
        flow.drained = true;
      return true;
    case tls::IoStatus::want_read:
      flow.read_wait = kReadable;
      flow.drained = true;
      return true;
    case tls::IoStatus::want_write:  // the Stream must send before it reads on (tls_stream.hpp)
      flow.read_wait = kWritable;
      return true;
    case tls::IoStatus::eof:  // close_notify
      flow.read_wait = kReadable;
      flow.eof = true;
      return true;
    case tls::IoStatus::reset:  // a reset, or a FIN without close_notify (error): a truncation
    case tls::IoStatus::error:
      break;
  }
  fail(fmt::format("{} on {}", result.detail, side_name(flow.from)));
  return false;
}

// One write of the pending bytes to `to`. False when the relay failed.
bool TlsRelay::write(Flow& flow) {
  const char* from = flow.buffer.get() + flow.start;
  size_t written = 0;
  if (flow.decrypts) {
    long n = send_nosignal(side_[flow.to]->fd(), from, flow.pending);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return true;
      fail(fmt::format("{} writing {}", std::strerror(errno), side_name(flow.to)));
      return false;
    }
    written = static_cast<size_t>(n);
  } else {
    // After want_read/want_write this repeats the previous write: the same first byte, and at
    // least as many bytes (reads only append). With nothing new, only what the socket did not
    // take of earlier writes goes.
    tls::IoResult result = flow.pending > 0
                               ? stream_->write(std::span<const char>(from, flow.pending))
                               : stream_->flush();
    switch (result.status) {
      case tls::IoStatus::ok:
        flow.write_wait = kWritable;  // for what the socket did not take, if any
        written = result.bytes;
        break;
      case tls::IoStatus::want_write:
        flow.write_wait = kWritable;
        return true;
      case tls::IoStatus::want_read:
        flow.write_wait = kReadable;
        return true;
      case tls::IoStatus::eof:  // not a write status; taken as the error it would be
      case tls::IoStatus::reset:
      case tls::IoStatus::error:
        fail(fmt::format("{} on {}", result.detail, side_name(flow.to)));
        return false;
    }
  }
  flow.pending -= written;
  flow.start += written;
  flow.delivered += written;
  return true;
}

// `from` ended and every byte before its end is delivered: tell `to`.
void TlsRelay::pass_on_end(Flow& flow) {
  if (flow.decrypts) {
    ::shutdown(side_[flow.to]->fd(), SHUT_WR);
    flow.shut = true;
    return;
  }
  tls::IoResult result = stream_->shutdown_write();  // close_notify, then a FIN
  switch (result.status) {
    case tls::IoStatus::ok:
      flow.shut = true;
      flow.write_wait = kWritable;
      return;
    case tls::IoStatus::want_write:
      flow.write_wait = kWritable;
      return;
    case tls::IoStatus::want_read:
      flow.write_wait = kReadable;
      return;
    case tls::IoStatus::eof:
    case tls::IoStatus::reset:
    case tls::IoStatus::error:
      break;
  }
  fail(fmt::format("{} on {}", result.detail, side_name(flow.to)));
}

// Takes the bytes the Stream has already decrypted, as far as the buffer has room: those are
// reported by no poller, and pump() may have stopped at its round limit with some left. These
// reads come from the Stream's memory, not the socket.
void TlsRelay::top_up(Flow& flow) {
  while (flow.wants_read() && flow.read_wait == kReadable && stream_ &&
         stream_->has_buffered_input()) {
    flow.take_buffer(flow.wanted);
    size_t before = flow.pending;
    if (!read(flow)) return;
    if (flow.pending == before) return;
  }
}

bool TlsRelay::needs_kick() const {
  const Flow& flow = *flow_[tls_];
  return stream_ && side_[tls_]->fd() >= 0 && flow.wants_read() && flow.read_wait == kReadable &&
         stream_->has_buffered_input();
}

bool TlsRelay::unsent(const Flow& flow) const {
  return !flow.decrypts && stream_ && stream_->unsent() > 0;
}

bool TlsRelay::wants_write(const Flow& flow) const {
  return flow.wants_write() || unsent(flow);
}

// A whole kReleaseAfter without a wake-up: what holds no bytes goes back, so that an idle
// direction holds no buffer and an idle relay none at all, its Stream included. Not armed again
// until the next wake-up: a stalled direction keeps its bytes without waking the loop.
void TlsRelay::on_release() {
  if (finished_) return;
  if (woken_) {  // still busy: look again one period later (one timer, not one per wake-up)
    woken_ = false;
    release_.arm(kReleaseAfter);
    return;
  }
  for (auto& flow : flow_) {
    if (flow->pending > 0) continue;
    flow->drop_buffer();
    flow->wanted = kFirstBufferSize;  // a burst after a pause starts small again
  }
  if (stream_ && flow_[kVisitor]->pending == 0 && flow_[kService]->pending == 0)
    stream_->release_buffers();
}

void TlsRelay::close_side(Side side) {
  side_[side]->close();
  // Nothing will call the Stream again; it sends nothing when freed (tls_stream.hpp).
  if (side == tls_) stream_.reset();
}

void TlsRelay::update_interest() {
  for (Side side : {kVisitor, kService}) {
    Channel& channel = *side_[side];
    if (channel.fd() < 0) continue;
    const Flow& reading = *flow_[side];
    const Flow& writing = *flow_[1 - side];
    if (reading.eof && writing.shut) {
      // Nothing more crosses this socket either way (see Relay::update_interest).
      close_side(side);
      continue;
    }
    uint32_t interest = 0;
    if (reading.wants_read()) interest |= reading.read_wait;
    if (wants_write(writing)) interest |= writing.write_wait;
    channel.set_interest(interest);
    // A hung-up side with nothing asked of it leaves the poller until it has something to do
    // (Relay::update_interest explains why); one that has not hung up stays registered, so that a
    // reset on it is seen at once.
    if (interest == 0 && hung_up_[side]) {
      channel.suspend();
    } else if (auto ec = channel.resume()) {
      fail(fmt::format("{} watching {} again", ec.message(), side_name(side)));
      return;
    }
  }
  if (needs_kick()) kick_.arm(Clock::duration::zero());
}

void TlsRelay::maybe_finish() {
  if (!flow_[0]->shut || !flow_[1]->shut) return;
  finished_ = true;
  kick_.cancel();
  release_.cancel();
  for (auto& flow : flow_) flow->drop_buffer();  // both empty: every byte was delivered
  close_side(kVisitor);
  close_side(kService);
  loop_.defer([done = std::move(done_), ended = outcome(false, "closed")] { done(ended); });
}

void TlsRelay::fail(std::string reason) {
  finished_ = true;
  kick_.cancel();
  release_.cancel();
  for (Side side : {kVisitor, kService}) {
    // A reset, not a FIN, and no close_notify: the peer must not take this for a clean end.
    if (side_[side]->fd() >= 0) set_linger_reset(side_[side]->fd());
    close_side(side);
  }
  for (auto& flow : flow_) flow->drop_buffer();
  loop_.defer([done = std::move(done_), ended = outcome(true, std::move(reason))] { done(ended); });
}

}  // namespace tunnel
