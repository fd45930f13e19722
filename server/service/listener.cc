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

namespace persistd {

namespace {

absl::StatusOr<sockaddr_un> Address(const std::string& path) {
  sockaddr_un addr;
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "socket path ", path, " is ", path.size(), " bytes; Unix sockets allow ",
        sizeof(addr.sun_path) - 1, ": choose a shorter --socket"));
  }
  memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Listener>> Listener::Bind(
    const std::string& socket_path) {
  absl::StatusOr<sockaddr_un> addr = Address(socket_path);
  if (!addr.ok()) return addr.status();

  // Is a live daemon already there?
  {
    ScopedFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&*addr),
                  sizeof(*addr)) == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "another persistd is already serving ", socket_path,
          "; stop it first or pass a different --socket"));
    }
    if (errno == ECONNREFUSED) ::unlink(socket_path.c_str());  // stale
  }

  ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket", socket_path, errno);
  // Bind under a restrictive umask so the socket is never briefly open to
  // others, then make its mode explicit.
  mode_t old_mask = ::umask(0177);
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof(*addr));
  int bind_errno = errno;
  ::umask(old_mask);
  if (rc != 0) return ErrnoStatus("bind", socket_path, bind_errno);
  if (::chmod(socket_path.c_str(), 0600) != 0) {
    return ErrnoStatus("chmod", socket_path, errno);
  }
  if (::listen(fd.get(), 128) != 0) return ErrnoStatus("listen", socket_path, errno);
  ScopedFd wake(::eventfd(0, EFD_CLOEXEC));
  if (!wake.valid()) return ErrnoStatus("eventfd", socket_path, errno);
  return std::unique_ptr<Listener>(
      new Listener(socket_path, std::move(fd), std::move(wake)));
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
    ucred cred;
    socklen_t len = sizeof(cred);
    if (::getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        (cred.uid != self && cred.uid != 0)) {
      fprintf(stderr,
              "persistd: refused a connection from uid %d (pid %d): only uid %d "
              "may use this daemon\n",
              static_cast<int>(cred.uid), static_cast<int>(cred.pid),
              static_cast<int>(self));
      ::close(conn);
      continue;
    }
    // gRPC takes ownership of `conn`.
    grpc::AddInsecureChannelFromFd(server, conn);
  }
}

}  // namespace persistd
