// Transitions of a client connection before relaying:
//   dialing_both -> waiting_for_server | waiting_for_target -> done (ready: DATA <id> sent)
//   any -> done (failed: the caller sends FAIL <id> <reason>)
#include "data_link.hpp"

#include "tunnel/log.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/socket.hpp"

namespace tunnel::client {
namespace {

const char* name_of(LinkState state) {
  switch (state) {
    case LinkState::dialing_both:
      return "dialing-both";
    case LinkState::waiting_for_server:
      return "waiting-for-server";
    case LinkState::waiting_for_target:
      return "waiting-for-target";
    case LinkState::done:
      return "done";
  }
  return "?";
}

}  // namespace

DataLink::DataLink(EventLoop& loop, const ConnId& id, std::span<const SocketAddress> server,
                   std::span<const SocketAddress> target, Duration dial_timeout, Ready ready,
                   Failed failed)
    : id_(id), ready_(std::move(ready)), failed_(std::move(failed)) {
  server_dial_ = std::make_unique<Connector>(
      loop, server, dial_timeout,
      [this](Fd fd, std::error_code ec) { on_server(std::move(fd), ec); });
  target_dial_ = std::make_unique<Connector>(
      loop, target, dial_timeout,
      [this](Fd fd, std::error_code ec) { on_target(std::move(fd), ec); });
}

void DataLink::move_to(LinkState next) {
  TLOG_TRACE("event=link-state conn={} from={} to={}", id_.short_hex(), name_of(state_),
             name_of(next));
  state_ = next;
}

void DataLink::on_server(Fd fd, std::error_code error) {
  if (error) return give_up("data-connect-failed", false);
  data_ = std::move(fd);
  if (state_ == LinkState::waiting_for_server) return complete();
  move_to(LinkState::waiting_for_target);
}

void DataLink::on_target(Fd fd, std::error_code error) {
  if (error) return give_up(connect_failure_word(error), true);
  target_ = std::move(fd);
  if (state_ == LinkState::waiting_for_target) return complete();
  move_to(LinkState::waiting_for_server);
}

void DataLink::complete() {
  auto hello = protocol::data_hello(id_);
  // The first bytes on a fresh socket always fit its send buffer; anything less means it broke.
  if (send_nosignal(data_.get(), hello.data(), hello.size()) != static_cast<long>(hello.size()))
    return give_up("data-connect-failed", false);
  move_to(LinkState::done);
  auto ready = std::move(ready_);
  ready(std::move(data_), std::move(target_));
}

void DataLink::give_up(std::string_view reason, bool to_target) {
  if (state_ == LinkState::done) return;
  move_to(LinkState::done);
  auto failed = std::move(failed_);
  failed(reason, to_target);
}

}  // namespace tunnel::client
