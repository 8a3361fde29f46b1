// One connection ID on the client, from `NEW <id>` until its relay starts: dials the server's port
// B and the target at the same time; announces `DATA <id>` only once both are connected, so a
// target that refuses leaves nothing half-paired on the server. The client's per-connection state
// machine.
#pragma once

#include <functional>
#include <memory>
#include <string_view>

#include "tunnel/conn_id.hpp"
#include "tunnel/connector.hpp"

namespace tunnel::client {

enum class LinkState {
  dialing_both,        // connecting to B and to the target
  waiting_for_server,  // target connected, B still connecting
  waiting_for_target,  // B connected, target still connecting
  done,                // handed to a relay, or failed
};

class DataLink {
 public:
  using Ready = std::function<void(Fd data, Fd target)>;
  // `reason` is a FAIL reason word (connection-refused, timeout, ...); `to_target` says which dial.
  using Failed = std::function<void(std::string_view reason, bool to_target)>;

  // `server` and `target` must outlive the link.
  DataLink(EventLoop& loop, const ConnId& id, std::span<const SocketAddress> server,
           std::span<const SocketAddress> target, Duration dial_timeout, Ready ready,
           Failed failed);
  LinkState state() const { return state_; }

 private:
  void on_server(Fd fd, std::error_code error);
  void on_target(Fd fd, std::error_code error);
  void move_to(LinkState next);
  void complete();
  void give_up(std::string_view reason, bool to_target);

  ConnId id_;
  LinkState state_ = LinkState::dialing_both;
  Fd data_;
  Fd target_;
  Ready ready_;
  Failed failed_;
  std::unique_ptr<Connector> server_dial_;
  std::unique_ptr<Connector> target_dial_;
};

}  // namespace tunnel::client
