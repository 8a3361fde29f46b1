// Pooled data connections: dial, (TLS,) DATA line, park, wait for the server's NEW line.
#include "warm_pool.hpp"

#include <sys/socket.h>

#include <cerrno>

#include "fail_reason.hpp"
#include "tunnel/channel.hpp"
#include "tunnel/connector.hpp"
#include "tunnel/line_reader.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/socket.hpp"
#include "tunnel/tls_handshake.hpp"

namespace tunnel::client {

struct WarmPool::Entry {
  ConnId id;
  std::unique_ptr<Connector> dial;
  std::unique_ptr<tls::Handshake> handshake;
  std::optional<Channel> channel;    // parked: watched for the NEW line
  std::unique_ptr<tls::Stream> tls;  // after channel: freed first, while the socket is open
  std::string line;                  // the NEW line so far
};

WarmPool::WarmPool(EventLoop& loop, ControlLink& control, std::span<const SocketAddress> server,
                   Duration dial_timeout, std::shared_ptr<tls::ClientContext> tls,
                   OnHanded on_handed)
    : loop_(loop),
      control_(control),
      server_(server),
      dial_timeout_(dial_timeout),
      tls_(std::move(tls)),
      on_handed_(std::move(on_handed)) {}

WarmPool::~WarmPool() {
  clear();
}

void WarmPool::on_park(const ConnId& id) {
  if (entries_.contains(id)) return;  // never sent twice by tunnel-server; the first stands
  auto entry = std::make_unique<Entry>();
  entry->id = id;
  entry->dial = std::make_unique<Connector>(
      loop_, server_, dial_timeout_,
      [this, id](Fd fd, std::error_code error) { on_dialed(id, std::move(fd), error); });
  entries_.emplace(id, std::move(entry));
}

void WarmPool::on_dialed(const ConnId& id, Fd fd, std::error_code error) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  Entry& entry = *it->second;
  // Inside the connector's own callback (event_loop.hpp, the lifetime rule).
  loop_.destroy_later(std::move(entry.dial));
  if (error) {
    uint64_t suppressed = 0;
    if (failure_log_.allow(suppressed))
      TLOG_WARN("event=pool-connect-failed conn={} reason=\"{}\" suppressed={}", id.short_hex(),
                error.message(), suppressed);
    // The server stops waiting for it and asks for another later.
    control_.send_line(protocol::fail(id, to_string(FailReason::data_connect_failed)));
    return drop(id);
  }
  if (!tls_) return on_ready(entry, StreamSocket{std::move(fd), nullptr, {}});
  auto stream = tls_->new_stream(fd.get());
  entry.handshake = std::make_unique<tls::Handshake>(
      loop_, std::move(fd), std::move(stream), dial_timeout_,
      [this, id](Fd connection, std::unique_ptr<tls::Stream> established) {
        auto found = entries_.find(id);
        if (found == entries_.end()) return;
        loop_.destroy_later(std::move(found->second->handshake));
        on_ready(*found->second, StreamSocket{std::move(connection), std::move(established), {}});
      },
      [this, id](Fd, tls::Failure failure, std::string_view detail) {
        auto found = entries_.find(id);
        if (found == entries_.end()) return;
        loop_.destroy_later(std::move(found->second->handshake));
        uint64_t suppressed = 0;
        if (failure_log_.allow(suppressed))
          TLOG_WARN("event=pool-connect-failed conn={} reason={} detail=\"{}\" suppressed={}",
                    id.short_hex(), tls::to_string(failure), log::escaped(detail), suppressed);
        control_.send_line(protocol::fail(id, to_string(FailReason::data_connect_failed)));
        drop(id);
      });
}

void WarmPool::on_ready(Entry& entry, StreamSocket socket) {
  // The data line proves the connection under the current session's key, like any data line.
  if (!send_now(socket, control_.data_hello(entry.id))) return lost(entry.id);
  set_keepalive(socket.fd.get());
  // TAKEN, READY and the target's first bytes go out apart: none may wait for an ACK (Nagle).
  set_nodelay(socket.fd.get());
  ConnId id = entry.id;
  entry.tls = std::move(socket.tls);
  entry.channel.emplace(loop_, std::move(socket.fd), kReadable,
                        [this, id](uint32_t) { on_readable(id); });
  ++parked_;
}

void WarmPool::on_readable(const ConnId& id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  Entry& entry = *it->second;
  const int fd = entry.channel->fd();
  char buffer[kMaxLineLength];
  std::string rest;  // what followed the line in the same TLS read: the visitor's first bytes
  for (;;) {
    if (entry.tls) {
      auto result = entry.tls->read({buffer, sizeof buffer});
      // A session ticket arrives after the handshake and is not a line: keep waiting.
      if (result.status == tls::IoStatus::want_read) return;
      if (result.status != tls::IoStatus::ok) return lost(id);
      entry.line.append(buffer, result.bytes);
    } else {
      // Only the line is taken off the socket: the visitor's bytes after it are the relay's.
      ssize_t n = ::recv(fd, buffer, sizeof buffer, MSG_PEEK | MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
      if (n <= 0) return lost(id);  // closed or reset (by the server, or by a box on the way)
      std::string_view peeked(buffer, static_cast<size_t>(n));
      auto end = peeked.find('\n');
      size_t take = end == std::string_view::npos ? peeked.size() : end + 1;
      if (::recv(fd, buffer, take, MSG_DONTWAIT) != static_cast<ssize_t>(take)) return lost(id);
      entry.line.append(buffer, take);
    }
    auto end = entry.line.find('\n');
    if (end != std::string::npos) {
      rest = entry.line.substr(end + 1);
      entry.line.resize(end);
      break;
    }
    if (entry.line.size() >= kMaxLineLength) return lost(id);
  }
  auto parsed = protocol::parse_message(entry.line);
  auto* message = std::get_if<protocol::Message>(&parsed);
  if (!message || message->verb != protocol::Verb::new_conn) {
    TLOG_WARN("event=pool-unexpected conn={} line=\"{}\"", id.short_hex(),
              log::escaped(entry.line));
    return lost(id);
  }
  StreamSocket socket{entry.channel->release(), std::move(entry.tls), std::move(rest)};
  const ConnId handed = message->id;
  const std::string service = message->service;
  // We are inside the entry's own channel handler (event_loop.hpp, the lifetime rule).
  loop_.destroy_later(std::move(it->second));
  entries_.erase(it);
  --parked_;
  on_handed_(handed, service, std::move(socket));
}

void WarmPool::lost(const ConnId& id) {
  TLOG_DEBUG("event=pool-connection-lost conn={}", id.short_hex());
  // The server may not see it (a proxy on the way may keep its side open): it is told, so that it
  // neither hands a visitor to it nor waits for an answer on it.
  control_.send_line(protocol::fail(id, to_string(FailReason::data_connect_failed)));
  drop(id);
}

void WarmPool::drop(const ConnId& id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  auto entry = std::move(it->second);
  entries_.erase(it);
  if (entry->channel) {
    --parked_;
    entry->channel->close();
  }
  if (entry->dial) entry->dial->cancel();
  if (entry->handshake) entry->handshake->cancel();
  // We may be inside one of its own handlers (event_loop.hpp, the lifetime rule).
  loop_.destroy_later(std::move(entry));
}

void WarmPool::clear() {
  while (!entries_.empty()) drop(entries_.begin()->first);
}

}  // namespace tunnel::client
