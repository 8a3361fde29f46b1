// A connection accepted on port A behind a load balancer, until its PROXY protocol header has
// arrived. The header is only peeked until it is complete, then exactly its bytes are consumed:
// everything after it stays in the kernel for the relay. TCP sockets only (see the .cpp for why).
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

#include "tunnel/address.hpp"
#include "tunnel/channel.hpp"
#include "tunnel/duration.hpp"
#include "tunnel/fd.hpp"
#include "tunnel/proxy_protocol.hpp"
#include "tunnel/timer.hpp"

namespace tunnel::server {

// Why a connection never produced a PROXY header.
enum class ProxyHeaderFailure {
  timeout,  // no complete header within the timeout
  invalid,  // not a PROXY header, or a broken or oversized one (the detail says which)
  closed,   // the peer closed before a complete header
  reset,    // the peer reset, or a read failed
};
std::string_view to_string(ProxyHeaderFailure failure);

// What a complete header said. For v1 UNKNOWN and v2 LOCAL (a health check, or a proxy that does
// not know) the header carries no addresses: source and destination are then the socket's own
// peer and local addresses, so the owner always has a visitor address to use.
struct ProxiedAddresses {
  proxy_protocol::Version version = proxy_protocol::Version::v1;
  bool from_header = false;  // false: the socket's own addresses stand in
  SocketAddress source;
  SocketAddress destination;
};

class ProxyHeaderReader {
 public:
  // Exactly one of the two is called, once, from the reader's own handlers (the owner hands a
  // finished reader to EventLoop::destroy_later). Both hand the socket back: on_done with the
  // header consumed and nothing else, on_failed for the owner to close (or reset).
  using OnDone = std::function<void(Fd fd, const ProxiedAddresses& addresses)>;
  using OnFailed = std::function<void(Fd fd, ProxyHeaderFailure failure, std::string_view detail)>;

  ProxyHeaderReader(EventLoop& loop, Fd fd, Duration timeout, OnDone on_done, OnFailed on_failed);
  // Closes the socket and calls neither callback (shutting down). An owner retiring a reader that
  // has not finished calls this first: destroy_later frees it only after the batch.
  void cancel();

  // How many times the reader has looked at the socket (tests: a stalled header costs nothing).
  uint64_t peeks() const { return peeks_; }

 private:
  void on_event();
  // Asks the kernel to report the socket readable only once it holds more than `bytes`.
  bool wait_for_more_than(size_t bytes);
  void complete(const proxy_protocol::Parsed& parsed);
  void give_up(ProxyHeaderFailure failure, std::string_view detail);

  Channel channel_;
  Timer deadline_;
  Timer retry_;  // after a wake-up that brought nothing: listen again a moment later
  OnDone on_done_;
  OnFailed on_failed_;
  size_t seen_ = 0;  // bytes peeked so far; the socket is readable again past these
  uint64_t peeks_ = 0;
  bool done_ = false;
};

}  // namespace tunnel::server
