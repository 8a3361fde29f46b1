// A Stream's handshake on the event loop: interest follows OpenSSL's WANT_READ / WANT_WRITE, the
// deadline ends it, and the owner hears once.
#include "tunnel/tls_handshake.hpp"

#include <fmt/format.h>

#include <cassert>
#include <string>

namespace tunnel::tls {

Handshake::Handshake(EventLoop& loop, Fd fd, std::unique_ptr<Stream> stream, Duration timeout,
                     Done done, Failed failed)
    : loop_(loop),
      stream_(std::move(stream)),
      timeout_(timeout),
      deadline_(loop, [this] { on_timeout(); }),
      done_(std::move(done)),
      failed_(std::move(failed)) {
  assert(stream_ && stream_->fd() == fd.get());
  // Both interests at first: a connected socket is writable at once, so the first step runs from
  // the loop's next round (never from here), and then waits for what OpenSSL asks.
  channel_.emplace(loop_, std::move(fd), kReadable | kWritable, [this](uint32_t) { step(); });
  deadline_.arm(timeout_);
}

void Handshake::step() {
  if (finished_) return;
  HandshakeStep result = stream_->handshake();
  switch (result.progress) {
    case Progress::want_read:
      channel_->set_interest(kReadable);
      return;
    case Progress::want_write:
      channel_->set_interest(kWritable);
      return;
    case Progress::failed:
      return fail(result.failure, result.detail);
    case Progress::done:
      break;
  }
  finished_ = true;
  deadline_.cancel();
  Fd fd = channel_->release();
  auto done = std::move(done_);
  done_ = nullptr;
  failed_ = nullptr;
  // Nothing of this object is touched after the callback (the owner may retire it there).
  if (done) done(std::move(fd), std::move(stream_));
}

void Handshake::on_timeout() {
  if (finished_) return;
  bool server = stream_->role() == Role::server;
  std::string why;
  if (stream_->bytes_received() == 0)
    why = server ? "the client sent nothing"
                 : "the server sent nothing back: does it speak TLS on this port?";
  else
    why = server ? "the client stalled mid-handshake" : "the server stalled mid-handshake";
  fail(Failure::timeout,
       fmt::format("TLS handshake timed out after {} ({})", format_duration(timeout_), why));
}

void Handshake::fail(Failure failure, std::string_view detail) {
  std::string text(detail);  // `detail` may live in the stream, freed below
  finished_ = true;
  deadline_.cancel();
  Fd fd = channel_->release();
  stream_.reset();
  auto failed = std::move(failed_);
  failed_ = nullptr;
  done_ = nullptr;
  if (failed) failed(std::move(fd), failure, text);
}

void Handshake::cancel() {
  finished_ = true;
  done_ = nullptr;
  failed_ = nullptr;
  deadline_.cancel();
  if (channel_) channel_->close();
}

}  // namespace tunnel::tls
