#include "server/io/unix_socket.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/io/errno_status.h"

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

absl::StatusOr<ScopedFd> ListenUnix(const std::string& path) {
  absl::StatusOr<sockaddr_un> addr = Address(path);
  if (!addr.ok()) return addr.status();

  // Is a live daemon already there?
  {
    ScopedFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&*addr),
                  sizeof(*addr)) == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "another persistd is already serving ", path,
          "; stop it first or pass a different --socket"));
    }
    if (errno == ECONNREFUSED) ::unlink(path.c_str());  // stale
  }

  ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket", path, errno);
  // Bind under a restrictive umask so the socket is never briefly open to
  // others, then make its mode explicit.
  mode_t old_mask = ::umask(0177);
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof(*addr));
  int bind_errno = errno;
  ::umask(old_mask);
  if (rc != 0) return ErrnoStatus("bind", path, bind_errno);
  if (::chmod(path.c_str(), 0600) != 0) return ErrnoStatus("chmod", path, errno);
  if (::listen(fd.get(), 128) != 0) return ErrnoStatus("listen", path, errno);
  return fd;
}

absl::Status CheckPrivateDirectory(const std::string& dir) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) return ErrnoStatus("stat", dir, errno);
  if (S_ISLNK(st.st_mode)) {
    return absl::PermissionDeniedError(absl::StrCat(
        dir, " is a symbolic link; persistd keeps its socket, store and log "
        "only in real directories: use the directory it points to"));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(dir, " is not a directory"));
  }
  const uid_t self = ::geteuid();
  if (st.st_uid != self && st.st_uid != 0) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "%s belongs to uid %d, not to uid %d (or root): another user could "
        "replace persistd's files there; use a directory of your own",
        dir, static_cast<int>(st.st_uid), static_cast<int>(self)));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "%s has mode %04o; persistd needs it private (0700): run `chmod 700 %s`",
        dir, static_cast<unsigned>(st.st_mode & 07777), dir));
  }
  return absl::OkStatus();
}

}  // namespace persistd
