// Connection is the client's side of the protocol (proto/persistd.proto):
// one gRPC channel with its session (the Attach stream), the descriptor
// socket, and the Load, Dump and Status calls in the protocol's own terms.
// The public API (include/persistd/client.h) is built on it and keeps it,
// and the proto types, out of its users' sight.
//
// Thread-safe: gRPC stubs are, and the descriptor socket is used under a
// mutex (a token and its descriptors must go out as one message, and a
// reconnect replaces the socket).
#ifndef PERSISTD_CLIENT_CPP_CONNECTION_H_
#define PERSISTD_CLIENT_CPP_CONNECTION_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/io/mapped_region.h"
#include "proto/persistd.grpc.pb.h"
#include "proto/persistd.pb.h"

namespace persistd {

class DescriptorChannel;

namespace internal {

class Connection;

// A segment the daemon made for one Load, as this process sees it: mapped
// read-only (or, for a small result the daemon sent inline, held in
// memory), and leased, so the daemon keeps its file until ~Lease.
//
// Invariant: segment() is valid and unchanged for the object's lifetime.
class Lease {
 public:
  ~Lease();
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  absl::string_view segment() const {
    return mapping_.size() > 0 ? mapping_.view() : absl::string_view(inline_);
  }

 private:
  friend class Connection;
  Lease() = default;

  std::shared_ptr<Connection> connection_;  // to release over; may be null
  std::string id_;                          // "" when nothing is leased
  MappedRegion mapping_;
  std::string inline_;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // Connects to the daemon at `socket_path` ("" for DefaultSocketPath()),
  // checks its protocol version, connects to its descriptor socket (and
  // checks who runs it) and opens a session.
  static absl::StatusOr<std::shared_ptr<Connection>> Open(
      const std::string& socket_path);
  ~Connection();

  struct Loaded {
    std::unique_ptr<Lease> lease;
    // The daemon's reply, every extent in it checked to lie inside
    // lease->segment(); segment_inline is moved into the lease.
    v1::LoadReply reply;
  };
  // Opens `path` (regular files only) and has the daemon load it.
  absl::StatusOr<Loaded> Load(const std::string& path);

  // An array of DumpPickle: the NumpyArrayWrapper state pickle, and the
  // element bytes in the order that state names.
  struct RawArray {
    std::string state_pickle;
    absl::string_view bytes;
  };
  // Writes a joblib file at `path` from a pickle `skeleton` whose
  // persistent ids 0..n-1 stand for `arrays`. See Client::Dump for what
  // the file looks like when it appears.
  absl::Status DumpPickle(const std::string& path, absl::string_view skeleton,
                          const std::vector<RawArray>& arrays, v1::Codec codec,
                          int level);

  absl::StatusOr<v1::StatusReply> Status();

  const std::string& socket_path() const { return socket_path_; }

 private:
  Connection() = default;

  // Sends `fds` over the descriptor socket; returns their token.
  absl::StatusOr<std::string> SendFds(const std::vector<int>& fds);
  // Opens the session: the daemon's first event on the stream names it.
  absl::Status Attach();
  // Ends a lease taken by Load (best effort: the daemon drops them all
  // when the session ends anyway).
  void Release(const std::string& lease_id);
  friend class Lease;

  std::string socket_path_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Persistd::Stub> stub_;
  // The session: open from Open() until destruction.
  grpc::ClientContext attach_context_;
  std::unique_ptr<grpc::ClientReader<v1::AttachEvent>> attach_;
  std::string session_id_;

  absl::Mutex descriptors_mutex_;
  std::unique_ptr<DescriptorChannel> descriptors_
      ABSL_GUARDED_BY(descriptors_mutex_);
};

}  // namespace internal
}  // namespace persistd

#endif  // PERSISTD_CLIENT_CPP_CONNECTION_H_
