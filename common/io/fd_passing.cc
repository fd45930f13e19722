#include "common/io/fd_passing.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "absl/strings/str_cat.h"
#include "common/io/errno_status.h"

namespace persistd {

absl::Status SendFds(int socket, absl::string_view tag,
                     const std::vector<int>& fds) {
  if (fds.size() > static_cast<size_t>(kMaxFds) || tag.size() != kTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a descriptor message carries a ", kTokenBytes,
        "-byte token and at most ", kMaxFds, " descriptors"));
  }
  iovec iov{const_cast<char*>(tag.data()), tag.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    ssize_t sent = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
    if (sent == static_cast<ssize_t>(tag.size())) return absl::OkStatus();
    if (sent >= 0) {
      return absl::UnavailableError("sendmsg: short write of a descriptor message");
    }
    if (errno != EINTR) return ErrnoStatus("sendmsg", "descriptor socket", errno);
  }
}

absl::StatusOr<FdMessage> ReceiveFds(int socket) {
  char tag[kTokenBytes];
  iovec iov{tag, sizeof(tag)};
  // Room for more than we accept, so an oversized batch is seen and closed
  // rather than silently truncated (MSG_CTRUNC would leak nothing, but
  // would hide the sender's mistake).
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds * 4)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t got;
  do {
    got = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (got < 0 && errno == EINTR);
  if (got < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return absl::UnavailableError("no message ready");
    }
    return ErrnoStatus("recvmsg", "descriptor socket", errno);
  }
  FdMessage out;
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr;
       cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
      out.fds.emplace_back(fd);  // owned from here on, even if refused below
    }
  }
  if (got == 0 && out.fds.empty()) return absl::NotFoundError("end of stream");
  if (out.fds.size() > static_cast<size_t>(kMaxFds) ||
      (msg.msg_flags & MSG_CTRUNC) != 0 ||
      static_cast<size_t>(got) != kTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a descriptor message must be a ", kTokenBytes,
        "-byte token with at most ", kMaxFds, " descriptors"));
  }
  out.tag.assign(tag, static_cast<size_t>(got));
  return out;
}

absl::StatusOr<PeerCredentials> PeerOf(int socket) {
  ucred cred;
  socklen_t len = sizeof(cred);
  if (::getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return ErrnoStatus("getsockopt(SO_PEERCRED)", "socket", errno);
  }
  return PeerCredentials{cred.pid, cred.uid, cred.gid};
}

}  // namespace persistd
