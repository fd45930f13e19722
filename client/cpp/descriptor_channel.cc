#include "client/cpp/descriptor_channel.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "client/cpp/random_bytes.h"
#include "common/io/errno_status.h"
#include "common/io/fd_passing.h"

namespace persistd {

namespace {

absl::StatusOr<ScopedFd> ConnectTrusted(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "descriptor socket path ", path, " is longer than a Unix socket name may be (",
        sizeof(addr.sun_path) - 1, " bytes)"));
  }
  memcpy(addr.sun_path, path.data(), path.size());
  ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket for", path, errno);
  int rc;
  do {
    rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int error = errno;
    absl::Status status = ErrnoStatus("connect to the descriptor socket", path, error);
    if (error == ENOENT || error == ECONNREFUSED) {
      return absl::UnavailableError(absl::StrCat(
          status.message(), " (is persistd running, and new enough to pass descriptors?)"));
    }
    return status;
  }
  absl::StatusOr<PeerCredentials> peer = PeerOf(fd.get());
  if (!peer.ok()) return peer.status();
  const uid_t self = ::geteuid();
  if (!TrustedPeer(peer->uid, self)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "the process at ", path, " (pid ", peer->pid, ", uid ", peer->uid,
        ") is not persistd of your user (uid ", self,
        "): refusing to pass it descriptors of your files"));
  }
  return fd;
}

}  // namespace

absl::StatusOr<DescriptorChannel> DescriptorChannel::Connect(const std::string& path) {
  absl::StatusOr<ScopedFd> fd = ConnectTrusted(path);
  if (!fd.ok()) return fd.status();
  return DescriptorChannel(path, *std::move(fd));
}

absl::StatusOr<std::string> DescriptorChannel::Send(const std::vector<int>& fds) {
  // kTokenBytes (16) random bytes: unguessable, and the fixed size the
  // daemon reads each message as.
  absl::StatusOr<std::string> token = RandomBytes(kTokenBytes);
  if (!token.ok()) return token.status();
  absl::Status status = SendFds(socket_.get(), *token, fds);
  if (status.ok()) return token;
  // The daemon drops a connection when it restarts (or when it judged a
  // message abusive). A failed sendmsg delivered nothing (a short one at
  // most a truncated token the daemon expires), so connecting again, with
  // the same peer check, and resending once is safe.
  absl::StatusOr<ScopedFd> fresh = ConnectTrusted(path_);
  if (!fresh.ok()) return fresh.status();
  socket_ = *std::move(fresh);
  status = SendFds(socket_.get(), *token, fds);
  if (!status.ok()) return status;
  return token;
}

}  // namespace persistd
