#include "server/service/listener.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "grpcpp/server_posix.h"
#include "server/io/errno_status.h"
#include "server/io/fd_passing.h"
#include "server/io/unix_socket.h"

namespace persistd {


absl::StatusOr<std::unique_ptr<Listener>> Listener::Bind(
    const std::string& socket_path) {
  absl::StatusOr<ScopedFd> fd = ListenUnix(socket_path);
  if (!fd.ok()) return fd.status();
  ScopedFd wake(::eventfd(0, EFD_CLOEXEC));
  if (!wake.valid()) return ErrnoStatus("eventfd", socket_path, errno);
  return std::unique_ptr<Listener>(
      new Listener(socket_path, *std::move(fd), std::move(wake)));
}

Listener::~Listener() {
  Stop();
  ::unlink(socket_path_.c_str());
}

void Listener::Start(grpc::Server* server) {
  thread_ = std::thread([this, server] { AcceptLoop(server); });
}

void Listener::Stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  ssize_t ignored = ::write(wake_fd_.get(), &one, sizeof(one));
  (void)ignored;
  thread_.join();
}

void Listener::AcceptLoop(grpc::Server* server) {
  const uid_t self = ::geteuid();
  for (;;) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      fprintf(stderr, "persistd: poll: %s\n", strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    // gRPC's event engine expects a non-blocking descriptor.
    int conn = ::accept4(listen_fd_.get(), nullptr, nullptr,
                         SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (conn < 0) {
      if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
        fprintf(stderr, "persistd: accept: %s\n", strerror(errno));
      }
      continue;
    }
    absl::StatusOr<PeerCredentials> peer = PeerOf(conn);
    if (!peer.ok() || !TrustedPeer(peer->uid, self)) {
      fprintf(stderr,
              "persistd: refused a connection from uid %d (pid %d): only uid %d "
              "may use this daemon\n",
              peer.ok() ? static_cast<int>(peer->uid) : -1,
              peer.ok() ? static_cast<int>(peer->pid) : -1, static_cast<int>(self));
      ::close(conn);
      continue;
    }
    // gRPC takes ownership of `conn`.
    grpc::AddInsecureChannelFromFd(server, conn);
  }
}

}  // namespace persistd
