// DescriptorInbox receives the descriptors clients pass for their calls.
//
// gRPC cannot carry descriptors, so the daemon listens on a second Unix
// socket (<socket>.fds) beside the gRPC one. A client connects once per
// process, checks with SO_PEERCRED that the daemon is its own user (or
// root), and before each Dump or Load that needs them sends one message: a
// random token plus the descriptors (SCM_RIGHTS). The gRPC request names
// the token; Take() hands the descriptors to that call. The daemon thus
// never opens a path for a client: no confused deputy, no FIFO, symlink or
// permission trick, and files get the client's own modes.
//
// Invariants (under mu_): every entry of pending_ holds open descriptors
// that nothing else refers to, received less than kTokenLifetime ago (older
// ones are closed); pending_fds_ is their total count, never above
// kMaxPendingFds (a client past it is disconnected).
//
// Thread-safe.
#ifndef PERSISTD_SERVER_SERVICE_DESCRIPTOR_INBOX_H_
#define PERSISTD_SERVER_SERVICE_DESCRIPTOR_INBOX_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/io/scoped_fd.h"

namespace persistd {

class DescriptorInbox {
 public:
  // Listens at `socket_path` (mode 0600; a live daemon there is an error).
  static absl::StatusOr<std::unique_ptr<DescriptorInbox>> Bind(
      const std::string& socket_path);
  ~DescriptorInbox();  // stops, closes pending descriptors, unlinks the socket
  DescriptorInbox(const DescriptorInbox&) = delete;
  DescriptorInbox& operator=(const DescriptorInbox&) = delete;

  void Start();
  void Stop();

  // What a call receives: its descriptors, and whether the connection
  // they came on is still open. That connection lives as long as the
  // client process, so its end is how a long call learns that its client
  // died (gRPC's sync server does not report a vanished peer to a unary
  // handler that is still running).
  struct Delivery {
    std::vector<ScopedFd> fds;
    std::shared_ptr<const std::atomic<bool>> sender_alive;
  };
  // The descriptors sent under `token`, exactly `count` of them, waiting up
  // to `wait` for them to arrive (the client sends them just before its
  // call, on another connection, so they may trail it by microseconds).
  absl::StatusOr<Delivery> Take(const std::string& token, size_t count,
                                absl::Duration wait);

  const std::string& socket_path() const { return socket_path_; }

 private:
  DescriptorInbox(std::string socket_path, ScopedFd listen_fd, ScopedFd wake_fd)
      : socket_path_(std::move(socket_path)),
        listen_fd_(std::move(listen_fd)),
        wake_fd_(std::move(wake_fd)) {}
  void Loop();
  // Reads every message `conn` has ready; false when it must be dropped.
  bool Drain(int conn, const std::shared_ptr<std::atomic<bool>>& alive);
  void ExpireLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  struct Pending {
    std::vector<ScopedFd> fds;
    absl::Time received;
    std::shared_ptr<std::atomic<bool>> sender_alive;
  };

  const std::string socket_path_;
  ScopedFd listen_fd_;
  ScopedFd wake_fd_;
  std::thread thread_;

  absl::Mutex mu_;
  absl::CondVar arrived_;
  std::map<std::string, Pending> pending_ ABSL_GUARDED_BY(mu_);
  size_t pending_fds_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_SERVICE_DESCRIPTOR_INBOX_H_
