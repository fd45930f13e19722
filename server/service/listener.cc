#include "server/service/listener.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/io/errno_status.h"
#include "common/io/fd_passing.h"
#include "common/log/log.h"
#include "grpcpp/server_posix.h"
#include "server/io/acceptor.h"
#include "server/io/rate_limited_log.h"
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

void Listener::Start(grpc::Server* server, PeerTable* peers) {
  peers_ = peers;
  thread_ = std::thread([this, server] { AcceptLoop(server); });
}

void Listener::Stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  ssize_t ignored = ::write(wake_fd_.get(), &one, sizeof(one));
  (void)ignored;
  thread_.join();
}

bool Listener::WaitOrStop(std::chrono::milliseconds delay) {
  pollfd wake = {wake_fd_.get(), POLLIN, 0};
  const auto deadline = std::chrono::steady_clock::now() + delay;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    int rc = ::poll(&wake, 1, static_cast<int>(left.count()));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return false;
  }
}

void Listener::AcceptLoop(grpc::Server* server) {
  const uid_t self = ::geteuid();
  Acceptor acceptor(listen_fd_.get());
  RateLimitedLog log;
  for (;;) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      log::Error("listener: poll: %s; no new connections are accepted",
                 strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    // gRPC's event engine expects a non-blocking descriptor.
    Acceptor::Result accepted =
        acceptor.Accept(SOCK_CLOEXEC | SOCK_NONBLOCK);
    switch (accepted.outcome) {
      case Acceptor::Outcome::kAccepted:
        break;
      case Acceptor::Outcome::kNothing:
        continue;
      case Acceptor::Outcome::kShed:
        log.Log(absl::StrCat(
            "accept: ", strerror(accepted.error),
            ": closed a new connection (the daemon is at its descriptor "
            "limit; raise it with ulimit -n or LimitNOFILE=)"));
        if (WaitOrStop(acceptor.backoff())) return;
        continue;
      case Acceptor::Outcome::kExhausted:
      case Acceptor::Outcome::kError:
        log.Log(absl::StrCat("accept: ", strerror(accepted.error)));
        if (WaitOrStop(std::max(acceptor.backoff(),
                                std::chrono::milliseconds(10)))) {
          return;
        }
        continue;
    }
    log.Flush();  // the repeats of a condition that has passed
    const int conn = accepted.conn.get();
    absl::StatusOr<PeerCredentials> peer = PeerOf(conn);
    if (!peer.ok() || !TrustedPeer(peer->uid, self)) {
      log.Log(absl::StrFormat(
          "refused a connection from uid %d (pid %d): only uid %d "
          "may use this daemon",
          peer.ok() ? static_cast<int>(peer->uid) : -1,
          peer.ok() ? static_cast<int>(peer->pid) : -1, static_cast<int>(self)));
      continue;  // closed by accepted.conn
    }
    peers_->Add(conn, *peer);
    log::Debug("connection from pid %d (uid %d) on fd %d", static_cast<int>(peer->pid),
               static_cast<int>(peer->uid), conn);
    // gRPC takes ownership of `conn`.
    grpc::AddInsecureChannelFromFd(server, accepted.conn.Release());
  }
}

}  // namespace persistd
