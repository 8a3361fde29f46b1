// The client's warm pool (docs/PROTOCOL.md, "Warm pool"): for each `PARK <id>` the server sends,
// a data connection is opened (TLS handshake and data proof included) and left idle, so that a
// visitor handed to it needs no dial. When the server writes `NEW <id> [<service>]` on one, it is
// taken out of the pool and given to the link table with whatever followed the line.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <unordered_map>

#include "control_link.hpp"
#include "tunnel/address.hpp"
#include "tunnel/conn_id.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/event_loop.hpp"
#include "tunnel/log.hpp"
#include "tunnel/stream_socket.hpp"
#include "tunnel/tls_context.hpp"

namespace tunnel::client {

class WarmPool {
 public:
  // A visitor was handed to a pooled connection: `id` and `service` from its NEW line (`service`
  // empty when the server names none), `socket` with what followed the line as unread.
  using OnHanded =
      std::function<void(const ConnId& id, std::string_view service, StreamSocket socket)>;

  // `server` must outlive the pool. `tls` null: plain TCP to port B.
  WarmPool(EventLoop& loop, ControlLink& control, std::span<const SocketAddress> server,
           Duration dial_timeout, std::shared_ptr<tls::ClientContext> tls, OnHanded on_handed);
  ~WarmPool();

  // PARK <id>: opens a pooled connection for it.
  void on_park(const ConnId& id);
  // The session ended: its PARK ids are void, every pooled connection closes.
  void clear();

  size_t parked() const { return parked_; }
  size_t opening() const { return entries_.size() - parked_; }

 private:
  struct Entry;
  void on_dialed(const ConnId& id, Fd fd, std::error_code error);
  void on_ready(Entry& entry, StreamSocket socket);
  void on_readable(const ConnId& id);
  // A parked connection ended or broke the protocol: the server is told (FAIL <id>), then drop.
  void lost(const ConnId& id);
  // Ends the entry without a word (the server learns it from the closed connection, or the FAIL
  // sent for one that never opened).
  void drop(const ConnId& id);

  EventLoop& loop_;
  ControlLink& control_;
  std::span<const SocketAddress> server_;
  Duration dial_timeout_;
  std::shared_ptr<tls::ClientContext> tls_;
  OnHanded on_handed_;
  std::unordered_map<ConnId, std::unique_ptr<Entry>, ConnIdHash> entries_;
  size_t parked_ = 0;
  log::RateLimit failure_log_;
};

}  // namespace tunnel::client
