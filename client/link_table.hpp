// Every connection id the server asked the client to serve, from NEW <id> to the end of its relay:
// the client's per-connection state machine. link_table.cpp holds every transition
// (docs/ARCHITECTURE.md, "The client's link table").
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "control_link.hpp"
#include "fail_reason.hpp"
#include "service_catalog.hpp"
#include "tunnel/conn_id.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/log.hpp"
#include "tunnel/relay_set.hpp"
#include "tunnel/stream_socket.hpp"
#include "tunnel/tls_context.hpp"

namespace tunnel::client {

enum class LinkState {
  dialing_both,        // connecting to port B and to the target at once
  waiting_for_target,  // B connected (watched: the server may close it), target still connecting
  dialing_target,      // the server closed B while the target was slow: B is dialed again once
                       // the target answers
  waiting_for_server,  // target connected, B still connecting
  pooled,              // handed on a pooled data connection (TAKEN sent), the target dialing
  relaying,            // DATA <id> (or READY on a pooled connection) sent; bytes flow
  ended,               // finished; the link leaves the table in the same step
};
inline constexpr size_t kLinkStates = static_cast<size_t>(LinkState::ended) + 1;
std::string_view to_string(LinkState state);

class LinkTable {
 public:
  // `service` is an index into the catalog; none for a NEW naming a service we do not have.
  struct Events {
    std::function<void(FailReason, std::optional<size_t> service)> on_failure;  // FAIL sent
    std::function<void(size_t service)> on_relaying;  // a link reached its relay
    // For the byte counters; `service` is the relay's (none only if no record of it is left).
    std::function<void(const RelayOutcome&, std::optional<size_t> service)> on_relay_ended;
  };

  // `server` and `services` (each service's target) must outlive the table.
  // `tls` null: plain TCP to port B.
  LinkTable(EventLoop& loop, ControlLink& control, std::span<const SocketAddress> server,
            const ServiceCatalog& services, Duration dial_timeout,
            std::shared_ptr<tls::ClientContext> tls, Events events);
  ~LinkTable();

  // NEW <id> for the service at `service` in the catalog: its target is dialed. An id already
  // here means the server gave up on the earlier attempt (the session was lost before DATA
  // arrived): that attempt is ended and a fresh one starts.
  void on_new(const ConnId& id, size_t service);
  // NEW <id> naming `service`, which we do not serve: FAIL <id> unknown-service.
  void refuse_unknown(const ConnId& id, std::string_view service);
  // CLOSE <id>: the server will not pair this id; whatever is left of it ends.
  void on_close(const ConnId& id);
  // NEW <id> came on a pooled data connection (`data`, with the visitor's first bytes as
  // unread) for the service at `service`: TAKEN is sent at once, READY once the target answers.
  void on_pooled(const ConnId& id, size_t service, StreamSocket data);
  // The same for a service we do not serve: FAIL <id> unknown-service on that connection.
  void refuse_pooled(const ConnId& id, std::string_view service, StreamSocket data);
  // The control session ended: the server took back what it had handed to pooled connections.
  void on_session_lost();

  // Shutting down: ends every link not yet relaying, then calls `drained` once the relays finish.
  void drain(std::function<void()> drained);
  void abort_relays();

  size_t count(LinkState state) const { return counts_[static_cast<size_t>(state)]; }
  // Links of that service relaying now.
  size_t relaying(size_t service) const { return relaying_by_service_[service]; }
  size_t size() const { return links_.size(); }
  std::optional<LinkState> state_of(const ConnId& id) const;
  const RelaySet& relays() const { return relays_; }

 private:
  struct Link;
  using Links = std::unordered_map<ConnId, std::unique_ptr<Link>, ConnIdHash>;

  void move_to(Link& link, LinkState next);
  void dial_server(Link& link);
  void on_server_dialed(const ConnId& id, Fd fd, std::error_code error);
  void on_target_dialed(const ConnId& id, Fd fd, std::error_code error);
  // B is up (connected, and over TLS its handshake done).
  void on_server_ready(Link& link, StreamSocket data);
  void on_data_readable(const ConnId& id);
  void start_relay(Link& link, StreamSocket data);
  void start_pooled_relay(Link& link);
  void fail(Link& link, FailReason reason);
  // Says FAIL on a pooled connection and closes it without resetting the line away.
  void fail_on(StreamSocket& data, const ConnId& id, FailReason reason);
  void remove(ConnId id);  // by value: callers pass keys of the map it erases from

  EventLoop& loop_;
  ControlLink& control_;
  std::shared_ptr<tls::ClientContext> tls_;
  std::span<const SocketAddress> server_;
  const ServiceCatalog& services_;
  Duration dial_timeout_;
  Events events_;
  Links links_;
  std::array<size_t, kLinkStates> counts_{};
  std::vector<size_t> relaying_by_service_;
  // The service of each relay aborted with its link (CLOSE, NEW again) and not yet reported, for
  // the byte counters: such a relay outlives its link. A relay that ends by itself finds its
  // link, so a running relay costs no entry here (64 bytes each, with the bucket).
  std::unordered_multimap<ConnId, size_t, ConnIdHash> orphan_services_;
  RelaySet relays_;
  log::RateLimit failure_log_;
  log::RateLimit tls_log_;
};

}  // namespace tunnel::client
