#include "server/service/peer_table.h"

#include "gtest/gtest.h"

namespace persistd {
namespace {

TEST(PeerTableTest, FindsAConnectionByTheNameGrpcGivesIt) {
  PeerTable peers;
  peers.Add(12, PeerCredentials{4242, 1000, 1000});
  std::optional<PeerCredentials> found = peers.Find("fd:12");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->pid, 4242);
  EXPECT_EQ(found->uid, 1000u);
  EXPECT_EQ(peers.PidOf("fd:12"), 4242);
  // Another descriptor, another kind of peer, garbage: unknown.
  EXPECT_EQ(peers.PidOf("fd:13"), -1);
  EXPECT_EQ(peers.PidOf("unix:/tmp/s.sock"), -1);
  EXPECT_EQ(peers.PidOf("fd:12x"), -1);
  EXPECT_EQ(peers.PidOf(""), -1);
  // A descriptor number reused by a new connection names the new peer.
  peers.Add(12, PeerCredentials{777, 1000, 1000});
  EXPECT_EQ(peers.PidOf("fd:12"), 777);
}

}  // namespace
}  // namespace persistd
