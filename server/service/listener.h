// Listener owns the daemon's Unix socket. It accepts connections itself so
// it can check each peer's uid with SO_PEERCRED (gRPC cannot), and hands
// the accepted fds to the gRPC server (grpc::AddInsecureChannelFromFd).
//
// At the process's descriptor limit it neither spins nor floods the log:
// pending connections are shed with a reserve descriptor (see Acceptor),
// accepting backs off, and repeated log lines are rate-limited.
//
// Invariant: while the Listener lives, socket_path_ is a socket bound by
// this process with mode 0600; the destructor unlinks it.
#ifndef PERSISTD_SERVER_SERVICE_LISTENER_H_
#define PERSISTD_SERVER_SERVICE_LISTENER_H_

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/io/scoped_fd.h"
#include "grpcpp/server.h"
#include "server/service/peer_table.h"

namespace persistd {

class Listener {
 public:
  // Binds `socket_path`. Refuses (FailedPrecondition) if another process
  // answers on it; removes a stale socket file left by a dead daemon.
  static absl::StatusOr<std::unique_ptr<Listener>> Bind(
      const std::string& socket_path);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Accepts connections on a background thread until Stop(), passing those
  // of allowed peers (same uid as the daemon, or root) to `server` after
  // recording each one's credentials in `peers` (which must outlive the
  // Listener).
  void Start(grpc::Server* server, PeerTable* peers);
  void Stop();

 private:
  Listener(std::string socket_path, ScopedFd listen_fd, ScopedFd wake_fd)
      : socket_path_(std::move(socket_path)),
        listen_fd_(std::move(listen_fd)),
        wake_fd_(std::move(wake_fd)) {}
  void AcceptLoop(grpc::Server* server);
  // Waits `delay` unless Stop() comes first; true if it did.
  bool WaitOrStop(std::chrono::milliseconds delay);

  const std::string socket_path_;
  ScopedFd listen_fd_;
  ScopedFd wake_fd_;  // eventfd that interrupts the accept loop
  PeerTable* peers_ = nullptr;  // set by Start
  std::thread thread_;
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_SERVICE_LISTENER_H_
