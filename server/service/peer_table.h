// PeerTable remembers who is at the other end of each connection the
// daemon hands to gRPC, so that a call can name its client (logs, the
// sessions `persistctl status` lists) from the kernel's word
// (SO_PEERCRED) rather than from a claim in the request.
//
// gRPC names a connection added from a descriptor "fd:N" in
// ServerContext::peer(), and N stays that connection's descriptor until
// gRPC closes it. Invariant (under mu_): for every connection gRPC serves,
// peers_[its fd] holds the credentials the Listener read when it accepted
// it -- the entry is written before gRPC gets the descriptor, and no other
// connection can get that number while it is open. Entries of closed
// connections linger until their number is reused (at most one per
// descriptor the process may have).
//
// Thread-safe.
#ifndef PERSISTD_SERVER_SERVICE_PEER_TABLE_H_
#define PERSISTD_SERVER_SERVICE_PEER_TABLE_H_

#include <map>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/io/fd_passing.h"

namespace persistd {

class PeerTable {
 public:
  PeerTable() = default;
  PeerTable(const PeerTable&) = delete;
  PeerTable& operator=(const PeerTable&) = delete;

  // REQUIRES: `fd` is an accepted connection not yet given to gRPC.
  void Add(int fd, const PeerCredentials& peer);

  // The peer of a call, given its ServerContext::peer(); nullopt for a
  // peer that is not a descriptor this table knows.
  std::optional<PeerCredentials> Find(absl::string_view grpc_peer) const;

  // The client's pid, or -1 when unknown.
  int PidOf(absl::string_view grpc_peer) const;

 private:
  mutable absl::Mutex mu_;
  std::map<int, PeerCredentials> peers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_SERVICE_PEER_TABLE_H_
