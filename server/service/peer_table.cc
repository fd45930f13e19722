#include "server/service/peer_table.h"

#include "absl/strings/strip.h"
#include "absl/strings/numbers.h"

namespace persistd {

void PeerTable::Add(int fd, const PeerCredentials& peer) {
  absl::MutexLock lock(&mu_);
  peers_[fd] = peer;
}

std::optional<PeerCredentials> PeerTable::Find(absl::string_view grpc_peer) const {
  int fd = -1;
  if (!absl::ConsumePrefix(&grpc_peer, "fd:") || !absl::SimpleAtoi(grpc_peer, &fd)) {
    return std::nullopt;
  }
  absl::MutexLock lock(&mu_);
  auto it = peers_.find(fd);
  if (it == peers_.end()) return std::nullopt;
  return it->second;
}

int PeerTable::PidOf(absl::string_view grpc_peer) const {
  std::optional<PeerCredentials> peer = Find(grpc_peer);
  return peer.has_value() ? static_cast<int>(peer->pid) : -1;
}

}  // namespace persistd
