// nodelay_preload: an LD_PRELOAD library for experiments, not for production. It turns Nagle off
// (TCP_NODELAY) on every socket the process connects or accepts, before anything is written on
// it. bench/run.sh's TUNNEL_PRELOAD puts it under the tunnel's daemons, to check whether a first
// byte that waits one extra round trip waits for Nagle (a small segment held back until the one
// before it is acknowledged) rather than for the protocol.
// Build: g++ -O2 -std=c++20 -shared -fPIC bench/nodelay_preload.cpp -o nodelay_preload.so -ldl
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>

namespace {

// Not a TCP socket (a Unix socket, UDP): setsockopt fails, and errno is left as it was.
void nodelay(int fd) {
  int saved = errno;
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  errno = saved;
}

template <typename F>
F next(const char* name) {
  return reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" {

int connect(int fd, const sockaddr* addr, socklen_t len) {
  static auto real = next<int (*)(int, const sockaddr*, socklen_t)>("connect");
  nodelay(fd);
  return real(fd, addr, len);
}

int accept(int fd, sockaddr* addr, socklen_t* len) {
  static auto real = next<int (*)(int, sockaddr*, socklen_t*)>("accept");
  int conn = real(fd, addr, len);
  if (conn >= 0) nodelay(conn);
  return conn;
}

int accept4(int fd, sockaddr* addr, socklen_t* len, int flags) {
  static auto real = next<int (*)(int, sockaddr*, socklen_t*, int)>("accept4");
  int conn = real(fd, addr, len, flags);
  if (conn >= 0) nodelay(conn);
  return conn;
}

}  // extern "C"
