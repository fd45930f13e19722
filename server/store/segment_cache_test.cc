#include "server/store/segment_cache.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace persistd {
namespace {

std::string MakeTempDir() {
  char name[] = "/tmp/persistd_cache_test.XXXXXX";
  EXPECT_NE(::mkdtemp(name), nullptr);
  return name;
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// A builder that writes `size` bytes and counts its calls.
SegmentCache::Builder FakeBuilder(uint64_t size, std::atomic<int>* calls) {
  return [size, calls](const std::string& path, uint64_t* out_size)
             -> absl::StatusOr<v1::LoadReply> {
    ++*calls;
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) return absl::InternalError("open");
    std::string data(size, 'x');
    if (::write(fd, data.data(), data.size()) != static_cast<ssize_t>(size)) {
      return absl::InternalError("write");
    }
    ::close(fd);
    *out_size = size;
    v1::LoadReply reply;
    reply.set_segment_path(path);
    return reply;
  };
}

SourceVersion Version(uint64_t ino, int64_t mtime = 1) {
  SourceVersion v;
  v.dev = 1;
  v.ino = ino;
  v.size = 100;
  v.mtime_ns = mtime;
  return v;
}

TEST(SegmentCacheTest, SecondAcquireIsAHit) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  std::atomic<int> calls{0};
  auto first = cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "s");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->hit);
  auto second = cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "s");
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second->hit);
  EXPECT_EQ(first->segment->path, second->segment->path);
  EXPECT_EQ(calls, 1);
  EXPECT_NE(first->lease_id, second->lease_id);
}

TEST(SegmentCacheTest, ChangedSourceGetsNewSegmentOldStaysWhileLeased) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  std::atomic<int> calls{0};
  auto old_seg = cache.Acquire(Version(1, 1), true, FakeBuilder(10, &calls), "s");
  ASSERT_TRUE(old_seg.ok());
  auto new_seg = cache.Acquire(Version(1, 2), true, FakeBuilder(10, &calls), "s");
  ASSERT_TRUE(new_seg.ok());
  EXPECT_FALSE(new_seg->hit);
  EXPECT_NE(old_seg->segment->generation, new_seg->segment->generation);
  EXPECT_TRUE(Exists(old_seg->segment->path));  // still leased
  cache.Release("s", old_seg->lease_id);
  EXPECT_FALSE(Exists(old_seg->segment->path));  // retired and unleased
  EXPECT_TRUE(Exists(new_seg->segment->path));
}

TEST(SegmentCacheTest, EvictsOnlyUnleasedSegmentsOverBudget) {
  SegmentCache cache(MakeTempDir(), 25);
  std::atomic<int> calls{0};
  auto a = cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "s");
  auto b = cache.Acquire(Version(2), true, FakeBuilder(10, &calls), "s");
  auto c = cache.Acquire(Version(3), true, FakeBuilder(10, &calls), "s");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  // 30 bytes > 25, but everything is leased: nothing may go.
  EXPECT_TRUE(Exists(a->segment->path));
  EXPECT_EQ(cache.stats().bytes, 30u);
  cache.Release("s", a->lease_id);  // a is unleased and least recent: evicted
  EXPECT_FALSE(Exists(a->segment->path));
  EXPECT_TRUE(Exists(b->segment->path));
  EXPECT_EQ(cache.stats().evictions, 1u);
}

TEST(SegmentCacheTest, EndSessionReleasesEverything) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  std::atomic<int> calls{0};
  ASSERT_TRUE(cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "s").ok());
  ASSERT_TRUE(cache.Acquire(Version(2), true, FakeBuilder(10, &calls), "s").ok());
  EXPECT_EQ(cache.stats().leased_segments, 2u);
  cache.EndSession("s");
  EXPECT_EQ(cache.stats().leased_segments, 0u);
  EXPECT_EQ(cache.stats().segments, 2u);  // cached for the next user
}

TEST(SegmentCacheTest, ConcurrentLoadsBuildOnce) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  std::atomic<int> calls{0};
  auto slow = [&calls](const std::string& path, uint64_t* size) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return FakeBuilder(10, &calls)(path, size);
  };
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      if (cache.Acquire(Version(7), true, slow, "s" + std::to_string(i)).ok()) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, 8);
  EXPECT_EQ(calls, 1);
}

TEST(SegmentCacheTest, FailedBuildLeavesNothing) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  auto failing = [](const std::string&, uint64_t*) -> absl::StatusOr<v1::LoadReply> {
    return absl::DataLossError("corrupt");
  };
  auto result = cache.Acquire(Version(1), true, failing, "s");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(cache.stats().segments, 0u);
  std::atomic<int> calls{0};
  EXPECT_TRUE(cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "s").ok());
}

TEST(SegmentCacheRestartTest, RecordedSegmentsSurviveARestart) {
  std::string dir = MakeTempDir();
  std::atomic<int> calls{0};
  std::string path;
  {
    SegmentCache cache(dir, 1 << 20);
    auto a = cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "s");
    ASSERT_TRUE(a.ok());
    path = a->segment->path;
  }
  // A half-built segment (no record) from a crash is garbage.
  std::string orphan = dir + "/999.seg";
  ::close(::open(orphan.c_str(), O_CREAT | O_WRONLY, 0600));
  SegmentCache restarted(dir, 1 << 20);
  EXPECT_FALSE(Exists(orphan));
  auto again = restarted.Acquire(Version(1), true, FakeBuilder(10, &calls), "s");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->hit);
  EXPECT_EQ(again->segment->path, path);
  EXPECT_EQ(calls, 1);
  // New generations never collide with adopted ones.
  auto other = restarted.Acquire(Version(2), true, FakeBuilder(10, &calls), "s");
  ASSERT_TRUE(other.ok());
  EXPECT_GT(other->segment->generation, again->segment->generation);
}

}  // namespace
}  // namespace persistd
