// The life of one connection id on the client (docs/ARCHITECTURE.md has the table):
//   NEW <id> [service]  -> dialing_both         B and that service's target are dialed at once
//   dialing_both        -> waiting_for_target   B connected first
//   dialing_both        -> waiting_for_server   the target connected first
//   waiting_for_target  -> dialing_target       the server closed B meanwhile (its handshake
//                                               timeout is shorter than the target's answer)
//   dialing_target      -> waiting_for_server   the target answered: B is dialed again
//   waiting_for_*       -> relaying             both connected: DATA <id> sent, relay started
//   any but relaying    -> ended                a dial failed (FAIL <id> <reason> sent), CLOSE
//                                               <id>, NEW <id> again, shutdown
//   relaying            -> ended                the relay finished, or the server disowned the
//                                               id (CLOSE or NEW for it again)
//   NEW on a pooled connection -> pooled        TAKEN sent there, the service's target dialed
//   pooled              -> relaying             the target connected: READY sent, relay started
//   pooled              -> ended                the target failed (FAIL <id> <reason> on the
//                                               pooled connection), the server closed it, the
//                                               session ended, shutdown
// Every change of state goes through move_to(); a link leaves the table only in remove().
#include "link_table.hpp"

#include <poll.h>
#include <sys/socket.h>

#include "tunnel/channel.hpp"
#include "tunnel/connector.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/socket.hpp"
#include "tunnel/tls_handshake.hpp"

namespace tunnel::client {
namespace {

// Dials of port B per link: the first, and a couple more if the server closed the earlier one
// before DATA could be sent (a slow target). Past this the link fails as data-connect-failed.
constexpr int kMaxServerDials = 3;

// The peer has sent its FIN (or reset): poll(POLLRDHUP) sees it even behind unread bytes.
bool peer_finished(int fd) {
  pollfd state{fd, POLLRDHUP, 0};
  return ::poll(&state, 1, 0) == 1 && (state.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

}  // namespace

std::string_view to_string(LinkState state) {
  switch (state) {
    case LinkState::dialing_both:
      return "dialing-both";
    case LinkState::waiting_for_target:
      return "waiting-for-target";
    case LinkState::dialing_target:
      return "dialing-target";
    case LinkState::waiting_for_server:
      return "waiting-for-server";
    case LinkState::pooled:
      return "pooled";
    case LinkState::relaying:
      return "relaying";
    case LinkState::ended:
      return "ended";
  }
  return "?";
}

struct LinkTable::Link {
  ConnId id;
  size_t service = 0;  // index in the catalog: which target, and the name in logs
  LinkState state = LinkState::dialing_both;
  std::unique_ptr<Connector> server_dial;
  std::unique_ptr<tls::Handshake> server_tls;  // over TLS: after the dial, before B counts as up
  std::unique_ptr<Connector> target_dial;
  // The data connection while it waits for the target. The server sends nothing on it before
  // DATA, so readability here means the server closed it (over TLS, or sent a session ticket).
  // Allocated apart: a relaying link (the relay owns the socket) does not carry an empty Channel.
  std::unique_ptr<Channel> data;
  std::unique_ptr<tls::Stream> data_tls;  // after `data`: freed first, while the socket is open
  Fd target;
  int server_dials = 0;
  std::string unread;  // pooled: the visitor's bytes that came with the NEW line (over TLS)
};

LinkTable::LinkTable(EventLoop& loop, ControlLink& control, std::span<const SocketAddress> server,
                     const ServiceCatalog& services, Duration dial_timeout,
                     std::shared_ptr<tls::ClientContext> tls, Events events)
    : loop_(loop),
      control_(control),
      tls_(std::move(tls)),
      server_(server),
      services_(services),
      dial_timeout_(dial_timeout),
      events_(std::move(events)),
      relaying_by_service_(services.size()),
      relays_(loop, [this](const ConnId& id, const RelayOutcome& outcome, Duration lasted) {
        // A relay still in the set under this id is a newer one (the id was announced again and
        // this one aborted): then this report is about a relay whose link is gone.
        auto it = links_.find(id);
        const bool own_link =
            it != links_.end() && it->second->state == LinkState::relaying && !relays_.contains(id);
        std::optional<size_t> service;
        if (own_link) {
          service = it->second->service;
        } else if (auto found = orphan_services_.find(id); found != orphan_services_.end()) {
          service = found->second;
          orphan_services_.erase(found);
        }
        TLOG_DEBUG(
            "event=conn-closed conn={} service={} bytes_to_target={} bytes_from_target={} "
            "duration_ms={} reason=\"{}\"",
            id.short_hex(), service ? services_.name(*service) : "?", outcome.bytes_to_service,
            outcome.bytes_to_visitor, lasted.count(), outcome.reason);
        events_.on_relay_ended(outcome, service);
        if (own_link) remove(id);
      }) {}

LinkTable::~LinkTable() = default;

std::optional<LinkState> LinkTable::state_of(const ConnId& id) const {
  auto it = links_.find(id);
  if (it == links_.end()) return std::nullopt;
  return it->second->state;
}

void LinkTable::move_to(Link& link, LinkState next) {
  TLOG_DEBUG("event=link-state conn={} service={} from={} to={}", link.id.short_hex(),
             services_.name(link.service), to_string(link.state), to_string(next));
  --counts_[static_cast<size_t>(link.state)];
  if (link.state == LinkState::relaying) --relaying_by_service_[link.service];
  link.state = next;
  if (next != LinkState::ended) ++counts_[static_cast<size_t>(next)];  // ended links are not kept
  if (next == LinkState::relaying) ++relaying_by_service_[link.service];
}

void LinkTable::on_new(const ConnId& id, size_t service) {
  if (links_.contains(id)) {
    // Ids are never reused, so a repeat is the server announcing it again to a new session: the
    // earlier attempt's DATA was refused or never arrived. Nothing of it may block the new one.
    TLOG_DEBUG("event=link-restarted conn={} service={} reason=announced-again", id.short_hex(),
               services_.name(service));
    remove(id);
  }
  auto link = std::make_unique<Link>();
  link->id = id;
  link->service = service;
  Link& added = *links_.emplace(id, std::move(link)).first->second;
  ++counts_[static_cast<size_t>(LinkState::dialing_both)];
  added.target_dial = std::make_unique<Connector>(
      loop_, services_.target(service), dial_timeout_,
      [this, id](Fd fd, std::error_code ec) { on_target_dialed(id, std::move(fd), ec); });
  dial_server(added);
}

void LinkTable::refuse_unknown(const ConnId& id, std::string_view service) {
  control_.send_line(protocol::fail(id, to_string(FailReason::unknown_service)));
  events_.on_failure(FailReason::unknown_service, std::nullopt);
  uint64_t suppressed = 0;
  if (failure_log_.allow(suppressed))
    TLOG_WARN("event=unknown-service conn={} service={} suppressed={}", id.short_hex(), service,
              suppressed);
}

void LinkTable::dial_server(Link& link) {
  ++link.server_dials;
  if (link.server_dial) {
    link.server_dial->cancel();
    loop_.destroy_later(std::move(link.server_dial));
  }
  ConnId id = link.id;
  link.server_dial = std::make_unique<Connector>(
      loop_, server_, dial_timeout_,
      [this, id](Fd fd, std::error_code ec) { on_server_dialed(id, std::move(fd), ec); });
}

void LinkTable::on_server_dialed(const ConnId& id, Fd fd, std::error_code error) {
  auto it = links_.find(id);
  if (it == links_.end()) return;
  Link& link = *it->second;
  // Its work is done: freed after this batch (inside its own handler), not kept while relaying.
  loop_.destroy_later(std::move(link.server_dial));
  if (error) return fail(link, FailReason::data_connect_failed);
  if (!tls_) return on_server_ready(link, StreamSocket{std::move(fd), nullptr, {}});
  // Resumes the session of the control connection (a ticket), so no full handshake each time
  // (unless --tls-resume false, which the context applies).
  auto stream = tls_->new_stream(fd.get());
  link.server_tls = std::make_unique<tls::Handshake>(
      loop_, std::move(fd), std::move(stream), dial_timeout_,
      [this, id](Fd connection, std::unique_ptr<tls::Stream> established) {
        auto found = links_.find(id);
        if (found == links_.end()) return;
        // Inside the handshake's own callback (event_loop.hpp, the lifetime rule).
        loop_.destroy_later(std::move(found->second->server_tls));
        on_server_ready(*found->second,
                        StreamSocket{std::move(connection), std::move(established), {}});
      },
      [this, id](Fd, tls::Failure failure, std::string_view detail) {
        auto found = links_.find(id);
        if (found == links_.end()) return;
        uint64_t suppressed = 0;
        if (tls_log_.allow(suppressed))
          TLOG_WARN("event=tls-failed conn={} reason={} detail=\"{}\" service={} suppressed={}",
                    id.short_hex(), tls::to_string(failure), log::escaped(detail),
                    services_.name(found->second->service), suppressed);
        loop_.destroy_later(std::move(found->second->server_tls));
        fail(*found->second, FailReason::data_connect_failed);
      });
}

void LinkTable::on_server_ready(Link& link, StreamSocket data) {
  const ConnId id = link.id;
  switch (link.state) {
    case LinkState::dialing_both:
      link.data = std::make_unique<Channel>(loop_, std::move(data.fd), kReadable,
                                            [this, id](uint32_t) { on_data_readable(id); });
      link.data_tls = std::move(data.tls);
      return move_to(link, LinkState::waiting_for_target);
    case LinkState::waiting_for_server:
      return start_relay(link, std::move(data));
    case LinkState::waiting_for_target:
    case LinkState::dialing_target:
    case LinkState::pooled:
    case LinkState::relaying:
    case LinkState::ended:
      return;  // no dial of B is in flight in these states
  }
}

void LinkTable::on_target_dialed(const ConnId& id, Fd fd, std::error_code error) {
  auto it = links_.find(id);
  if (it == links_.end()) return;
  Link& link = *it->second;
  // As for B's dial: the Connector (256 bytes) is not kept for the relay's lifetime.
  loop_.destroy_later(std::move(link.target_dial));
  if (error) return fail(link, target_failure(classify_connect_error(error)));
  link.target = std::move(fd);
  switch (link.state) {
    case LinkState::pooled:
      return start_pooled_relay(link);
    case LinkState::dialing_both:
      return move_to(link, LinkState::waiting_for_server);
    case LinkState::waiting_for_target: {
      // The watch ends: the relay takes the socket.
      StreamSocket data{link.data->release(), std::move(link.data_tls), {}};
      link.data.reset();
      return start_relay(link, std::move(data));
    }
    case LinkState::dialing_target:
      move_to(link, LinkState::waiting_for_server);
      return dial_server(link);
    case LinkState::waiting_for_server:
    case LinkState::relaying:
    case LinkState::ended:
      return;  // no dial of the target is in flight in these states
  }
}

void LinkTable::on_data_readable(const ConnId& id) {
  auto it = links_.find(id);
  if (it == links_.end() || it->second->state != LinkState::waiting_for_target) return;
  Link& link = *it->second;
  if (link.data_tls) {
    // TLS 1.3 sends session tickets after the handshake: taking one is not the server closing.
    char nothing_expected[256];
    auto result = link.data_tls->read({nothing_expected, sizeof nothing_expected});
    if (result.status == tls::IoStatus::want_read) return;
    if (result.status == tls::IoStatus::want_write) {
      link.data->set_interest(kReadable | kWritable);
      return;
    }
  }
  TLOG_DEBUG(
      "event=data-closed-early conn={} service={} detail=\"server closed B before the target "
      "answered\"",
      id.short_hex(), services_.name(link.service));
  // Inside the channel's own handler: close it now, free it later.
  link.data->close();
  link.data_tls.reset();
  move_to(link, LinkState::dialing_target);
}

void LinkTable::start_relay(Link& link, StreamSocket data) {
  auto hello = control_.data_hello(link.id);
  // The first bytes on a fresh socket always fit its send buffer; anything less means the server
  // closed it meanwhile: dial again while the target waits.
  bool sent = false;
  if (data.tls) {
    auto result = data.tls->write({hello.data(), hello.size()});
    sent = result.status == tls::IoStatus::ok && result.bytes == hello.size();
  } else {
    sent =
        send_nosignal(data.fd.get(), hello.data(), hello.size()) == static_cast<long>(hello.size());
  }
  if (!sent) {
    if (link.server_dials >= kMaxServerDials) return fail(link, FailReason::data_connect_failed);
    move_to(link, LinkState::waiting_for_server);
    return dial_server(link);
  }
  move_to(link, LinkState::relaying);
  set_keepalive(data.fd.get());
  events_.on_relaying(link.service);
  if (data.tls)
    relays_.start(link.id, std::move(data.fd), std::move(link.target), TlsSide::visitor,
                  std::move(data.tls));
  else
    relays_.start(link.id, std::move(data.fd), std::move(link.target));
  TLOG_DEBUG("event=relaying conn={} service={}", link.id.short_hex(),
             services_.name(link.service));
}

void LinkTable::fail(Link& link, FailReason reason) {
  // Tell the server first, so the external connection is closed at once with the right reason
  // (or given to another client).
  if (link.state == LinkState::pooled) {
    StreamSocket data{link.data->release(), std::move(link.data_tls), {}};
    link.data.reset();
    fail_on(data, link.id, reason);
  } else {
    control_.send_line(protocol::fail(link.id, to_string(reason)));
  }
  events_.on_failure(reason, link.service);
  uint64_t suppressed = 0;
  if (failure_log_.allow(suppressed))
    TLOG_WARN("event={} conn={} service={} reason={} suppressed={}",
              reason == FailReason::data_connect_failed ? "data-connect-failed" : "target-failed",
              link.id.short_hex(), services_.name(link.service), to_string(reason), suppressed);
  remove(link.id);
}

void LinkTable::on_pooled(const ConnId& id, size_t service, StreamSocket data) {
  if (links_.contains(id)) remove(id);  // an earlier attempt under this id is void
  // A server that gave up on this connection already (we were slow) has reset it: the target is
  // not even dialed.
  if (peer_finished(data.fd.get())) {
    TLOG_DEBUG("event=link-cancelled conn={} reason=pooled-connection-reset", id.short_hex());
    return;
  }
  // TAKEN first: the server knows this connection is alive and waits for READY.
  if (!send_now(data, protocol::taken(id))) return;  // the server closed it meanwhile
  auto link = std::make_unique<Link>();
  link->id = id;
  link->service = service;
  link->state = LinkState::pooled;
  link->unread = std::move(data.unread);
  link->data_tls = std::move(data.tls);
  // No read interest: the visitor's bytes wait in the socket for the relay. A reset still wakes us
  // (the server gave the visitor to someone else, or it left).
  link->data = std::make_unique<Channel>(loop_, std::move(data.fd), 0, [this, id](uint32_t) {
    auto found = links_.find(id);
    if (found == links_.end() || found->second->state != LinkState::pooled) return;
    TLOG_DEBUG("event=link-cancelled conn={} reason=pooled-connection-closed", id.short_hex());
    remove(id);
  });
  Link& added = *links_.emplace(id, std::move(link)).first->second;
  ++counts_[static_cast<size_t>(LinkState::pooled)];
  added.target_dial = std::make_unique<Connector>(
      loop_, services_.target(service), dial_timeout_,
      [this, id](Fd fd, std::error_code ec) { on_target_dialed(id, std::move(fd), ec); });
  TLOG_DEBUG("event=pooled-handed conn={} service={}", id.short_hex(), services_.name(service));
}

void LinkTable::refuse_pooled(const ConnId& id, std::string_view service, StreamSocket data) {
  fail_on(data, id, FailReason::unknown_service);
  events_.on_failure(FailReason::unknown_service, std::nullopt);
  uint64_t suppressed = 0;
  if (failure_log_.allow(suppressed))
    TLOG_WARN("event=unknown-service conn={} service={} suppressed={}", id.short_hex(), service,
              suppressed);
}

void LinkTable::start_pooled_relay(Link& link) {
  StreamSocket data{link.data->release(), std::move(link.data_tls), std::move(link.unread)};
  link.data.reset();
  // A server that gave up on this connection (it took too long to answer) has closed it: then
  // nothing of the visitor's may reach the target, which another attempt serves.
  if (peer_finished(data.fd.get()) || !send_now(data, protocol::ready(link.id))) {
    TLOG_DEBUG("event=link-cancelled conn={} reason=pooled-connection-closed", link.id.short_hex());
    return remove(link.id);
  }
  move_to(link, LinkState::relaying);
  events_.on_relaying(link.service);
  if (data.tls)
    relays_.start(link.id, std::move(data.fd), std::move(link.target), TlsSide::visitor,
                  std::move(data.tls), data.unread);
  else
    relays_.start(link.id, std::move(data.fd), std::move(link.target));
  TLOG_DEBUG("event=relaying conn={} service={} pooled=1", link.id.short_hex(),
             services_.name(link.service));
}

void LinkTable::fail_on(StreamSocket& data, const ConnId& id, FailReason reason) {
  send_now(data, protocol::fail(id, to_string(reason)));
  if (data.tls) data.tls->shutdown_write();
  ::shutdown(data.fd.get(), SHUT_WR);
  // Unread bytes at close() would send a reset, which may overtake the FAIL line: take them off
  // first (the visitor's early bytes; bounded by what the server sends before READY).
  char discarded[16384];
  for (int reads = 0; reads < 8; ++reads)
    if (::recv(data.fd.get(), discarded, sizeof discarded, MSG_DONTWAIT) <= 0) break;
}

void LinkTable::on_session_lost() {
  std::vector<ConnId> pooled;
  for (const auto& [id, link] : links_)
    if (link->state == LinkState::pooled) pooled.push_back(id);
  for (const ConnId& id : pooled) remove(id);
}

void LinkTable::on_close(const ConnId& id) {
  auto it = links_.find(id);
  if (it == links_.end()) return;
  // The external side left before pairing, or the server refused our DATA after its deadline:
  // either way no relay of this id can serve anyone.
  TLOG_DEBUG("event=link-cancelled conn={} service={} state={}", id.short_hex(),
             services_.name(it->second->service), to_string(it->second->state));
  remove(id);
}

// We may be inside one of the link's own handlers (a connector's, the data channel's): sockets
// are closed now, the link itself is freed after this batch (event_loop.hpp, the lifetime rule).
void LinkTable::remove(ConnId id) {
  auto it = links_.find(id);
  if (it == links_.end()) return;
  auto link = std::move(it->second);
  links_.erase(it);
  if (link->state == LinkState::relaying && relays_.contains(id)) {
    relays_.abort(id, "the server disowned this id");
    orphan_services_.emplace(id, link->service);  // its report comes later, without the link
  }
  move_to(*link, LinkState::ended);
  // The link is freed after this batch; quiet it now so that nothing it had pending (a connect
  // completing in this batch) reaches a link that a new NEW <id> creates under the same id.
  if (link->server_dial) link->server_dial->cancel();
  if (link->server_tls) link->server_tls->cancel();
  if (link->target_dial) link->target_dial->cancel();
  if (link->data) link->data->close();
  link->target.reset();
  loop_.destroy_later(std::move(link));
}

void LinkTable::drain(std::function<void()> drained) {
  for (auto it = links_.begin(); it != links_.end();) {
    auto next = std::next(it);
    if (it->second->state != LinkState::relaying) remove(it->first);
    it = next;
  }
  relays_.when_drained(std::move(drained));
}

void LinkTable::abort_relays() {
  relays_.abort_all("client stopping");
}

}  // namespace tunnel::client
