// DescriptorChannel is the client's end of the daemon's descriptor socket
// (<socket>.fds; the daemon's end is server/service/descriptor_inbox.h).
//
// gRPC cannot carry descriptors, so before a Dump or Load the client sends
// the files it opened itself over this Unix socket, under a random token
// that the gRPC request then names. The daemon thus only ever touches files
// the client opened with its own credentials, umask and symlink semantics.
//
// Invariant: socket_ is a connected socket whose peer, when it connected,
// ran as this process's euid or as root.
//
// Thread-compatible.
#ifndef PERSISTD_CLIENT_CPP_DESCRIPTOR_CHANNEL_H_
#define PERSISTD_CLIENT_CPP_DESCRIPTOR_CHANNEL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/io/scoped_fd.h"

namespace persistd {

class DescriptorChannel {
 public:
  // Connects to `path` and checks (SO_PEERCRED) who listens there: the
  // descriptors we send give their holder our files, so only persistd of
  // our own user (or root) may have them.
  static absl::StatusOr<DescriptorChannel> Connect(const std::string& path);

  DescriptorChannel(DescriptorChannel&&) = default;
  DescriptorChannel& operator=(DescriptorChannel&&) = default;

  // Sends `fds` (at most kMaxFds) under a fresh random token in one
  // message and returns the token for the request's fds_token.
  absl::StatusOr<std::string> Send(const std::vector<int>& fds);

  const std::string& path() const { return path_; }

 private:
  DescriptorChannel(std::string path, ScopedFd socket)
      : path_(std::move(path)), socket_(std::move(socket)) {}

  std::string path_;
  ScopedFd socket_;
};

}  // namespace persistd

#endif  // PERSISTD_CLIENT_CPP_DESCRIPTOR_CHANNEL_H_
