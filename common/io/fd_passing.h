// Descriptor passing over AF_UNIX stream sockets (SCM_RIGHTS), and the
// kernel's word on who is at the other end (SO_PEERCRED).
//
// A message is a token of exactly kTokenBytes plus up to kMaxFds
// descriptors; the receiver gets its own descriptors, close-on-exec, for
// the same open file descriptions the sender held. The fixed size keeps
// tokens and descriptors paired on a stream socket: each recvmsg reads
// one token, and the kernel never delivers one writer's descriptors with
// another message's bytes.
#ifndef PERSISTD_COMMON_IO_FD_PASSING_H_
#define PERSISTD_COMMON_IO_FD_PASSING_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/io/scoped_fd.h"

namespace persistd {

inline constexpr int kMaxFds = 4;
inline constexpr size_t kTokenBytes = 16;

// Sends `tag` (kTokenBytes long) with `fds` attached in one sendmsg(2).
absl::Status SendFds(int socket, absl::string_view tag,
                     const std::vector<int>& fds);

struct FdMessage {
  std::string tag;
  std::vector<ScopedFd> fds;
};
// Receives one message. NotFound at end of stream, Unavailable when a
// non-blocking socket has nothing (EAGAIN), InvalidArgument when the peer
// sent more descriptors than kMaxFds (all are closed) or a short token.
absl::StatusOr<FdMessage> ReceiveFds(int socket);

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};
absl::StatusOr<PeerCredentials> PeerOf(int socket);

// True when a peer of uid `peer` may talk to a process of uid `self`:
// the same user, or root on either side's behalf.
inline bool TrustedPeer(uid_t peer, uid_t self) {
  return peer == self || peer == 0;
}

}  // namespace persistd

#endif  // PERSISTD_COMMON_IO_FD_PASSING_H_
