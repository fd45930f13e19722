// A listening AF_UNIX socket at a path, created so that it is never open to
// anyone but its owner, and refused when another live process serves it.
#ifndef PERSISTD_SERVER_IO_UNIX_SOCKET_H_
#define PERSISTD_SERVER_IO_UNIX_SOCKET_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/io/scoped_fd.h"

namespace persistd {

// Binds and listens at `path` with mode 0600. A stale socket file (nobody
// answers) is replaced; a live one is FailedPrecondition.
absl::StatusOr<ScopedFd> ListenUnix(const std::string& path);

// Checks that `dir` is a directory owned by this process's euid (or root)
// that nobody else may write to or list: mode 0700 or narrower, not a
// symlink. Anyone who could write there could swap our socket for theirs.
absl::Status CheckPrivateDirectory(const std::string& dir);

}  // namespace persistd

#endif  // PERSISTD_SERVER_IO_UNIX_SOCKET_H_
