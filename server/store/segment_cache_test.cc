#include "server/store/segment_cache.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "proto/store.pb.h"

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
  return [size, calls](const std::string& path, const SegmentCache::Wanted&,
                       uint64_t* out_size)
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
  auto first = cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "s", nullptr);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->hit);
  auto second = cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "s", nullptr);
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second->hit);
  EXPECT_EQ(first->segment->path, second->segment->path);
  EXPECT_EQ(calls, 1);
  EXPECT_NE(first->lease_id, second->lease_id);
}

TEST(SegmentCacheTest, ChangedSourceGetsNewSegmentOldStaysWhileLeased) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  std::atomic<int> calls{0};
  auto old_seg = cache.Acquire(Version(1, 1), true, FakeBuilder(10, &calls), "s", nullptr);
  ASSERT_TRUE(old_seg.ok());
  auto new_seg = cache.Acquire(Version(1, 2), true, FakeBuilder(10, &calls), "s", nullptr);
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
  auto a = cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "s", nullptr);
  auto b = cache.Acquire(Version(2), true, FakeBuilder(10, &calls), "s", nullptr);
  auto c = cache.Acquire(Version(3), true, FakeBuilder(10, &calls), "s", nullptr);
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
  ASSERT_TRUE(cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "s", nullptr).ok());
  ASSERT_TRUE(cache.Acquire(Version(2), true, FakeBuilder(10, &calls), "s", nullptr).ok());
  EXPECT_EQ(cache.stats().leased_segments, 2u);
  cache.EndSession("s");
  EXPECT_EQ(cache.stats().leased_segments, 0u);
  EXPECT_EQ(cache.stats().segments, 2u);  // cached for the next user
}

TEST(SegmentCacheTest, ConcurrentLoadsBuildOnce) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  std::atomic<int> calls{0};
  auto slow = [&calls](const std::string& path, const SegmentCache::Wanted& wanted,
                       uint64_t* size) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return FakeBuilder(10, &calls)(path, wanted, size);
  };
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      if (cache.Acquire(Version(7), true, slow, "s" + std::to_string(i), nullptr).ok()) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, 8);
  EXPECT_EQ(calls, 1);
}

TEST(SegmentCacheTest, FailedBuildLeavesNothing) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  auto failing = [](const std::string&, const SegmentCache::Wanted&,
                    uint64_t*) -> absl::StatusOr<v1::LoadReply> {
    return absl::DataLossError("corrupt");
  };
  auto result = cache.Acquire(Version(1), true, failing, "s", nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(cache.stats().segments, 0u);
  std::atomic<int> calls{0};
  EXPECT_TRUE(cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "s", nullptr).ok());
}

// A builder that writes part of a segment, waits until `waiters` other
// requests wait for it (or `release` is set), then fails with `error`.
struct GatedFailure {
  std::atomic<int>* calls;
  std::atomic<bool>* release;
  absl::Status error;
  std::string* written;

  absl::StatusOr<v1::LoadReply> operator()(const std::string& path,
                                           const SegmentCache::Wanted&,
                                           uint64_t*) const {
    ++*calls;
    *written = path;
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd >= 0) {
      EXPECT_EQ(::write(fd, "partial", 7), 7);
      ::close(fd);
    }
    while (!release->load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return error;
  }
};

TEST(SegmentCacheTest, FailedBuildGivesItsWaitersTheErrorAndDropsItsFile) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  std::atomic<int> calls{0};
  std::atomic<bool> release{false};
  std::string written;
  GatedFailure failing{&calls, &release, absl::DataLossError("corrupt"),
                       &written};
  std::vector<std::thread> threads;
  std::vector<absl::Status> results(6);
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] {
      results[i] = cache.Acquire(Version(3), true, failing, "s", nullptr).status();
    });
  }
  // All six are in Acquire: one builds, five wait for it.
  while (calls.load() == 0) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  release = true;
  for (auto& t : threads) t.join();
  // One build, one error for all: the waiters did not build again.
  EXPECT_EQ(calls, 1);
  for (const absl::Status& status : results) {
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
    EXPECT_EQ(status.message(), "corrupt");
  }
  EXPECT_FALSE(Exists(written));
  EXPECT_EQ(cache.stats().segments, 0u);
  // A later request builds again.
  std::atomic<int> good_calls{0};
  EXPECT_TRUE(cache.Acquire(Version(3), true, FakeBuilder(10, &good_calls), "s", nullptr)
                  .ok());
  EXPECT_EQ(good_calls, 1);
}

TEST(SegmentCacheTest, ABuilderThatThrowsFailsItsRequestsNotTheSource) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  std::atomic<bool> started{false}, release{false};
  auto throwing = [&](const std::string& path, const SegmentCache::Wanted&,
                      uint64_t*) -> absl::StatusOr<v1::LoadReply> {
    ::close(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
    started = true;
    while (!release.load()) std::this_thread::yield();
    throw std::bad_alloc();
  };
  absl::Status waiter_status;
  std::thread builder([&] {
    absl::Status status = cache.Acquire(Version(4), true, throwing, "s", nullptr).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  });
  while (!started.load()) std::this_thread::yield();
  std::atomic<int> calls{0};
  std::thread waiter([&] {
    waiter_status =
        cache.Acquire(Version(4), true, FakeBuilder(10, &calls), "s", nullptr).status();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  release = true;
  builder.join();
  waiter.join();
  EXPECT_EQ(waiter_status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(calls, 0);
  // Not wedged: the next request builds.
  EXPECT_TRUE(cache.Acquire(Version(4), true, FakeBuilder(10, &calls), "s", nullptr).ok());
  EXPECT_EQ(calls, 1);
}

TEST(SegmentCacheTest, ShutdownReleasesRequestsWaitingForABuild) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  std::atomic<int> calls{0};
  std::atomic<bool> release{false};
  std::string written;
  GatedFailure stuck{&calls, &release, absl::DataLossError("late"), &written};
  std::thread builder([&] { (void)cache.Acquire(Version(5), true, stuck, "s", nullptr); });
  while (calls.load() == 0) std::this_thread::yield();
  absl::Status waiter_status;
  std::atomic<bool> waiter_done{false};
  std::atomic<int> other_calls{0};
  std::thread waiter([&] {
    waiter_status = cache.Acquire(Version(5), true,
                                  FakeBuilder(10, &other_calls), "s", nullptr).status();
    waiter_done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(waiter_done.load());
  cache.Shutdown();
  waiter.join();  // returns although the build still runs
  EXPECT_EQ(waiter_status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(cache.Acquire(Version(6), true, FakeBuilder(10, &other_calls), "s", nullptr)
                .status()
                .code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(other_calls, 0);
  release = true;
  builder.join();
}

TEST(SegmentCacheRestartTest, RecordedSegmentsSurviveARestart) {
  std::string dir = MakeTempDir();
  std::atomic<int> calls{0};
  std::string path;
  {
    SegmentCache cache(dir, 1 << 20);
    auto a = cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "s", nullptr);
    ASSERT_TRUE(a.ok());
    path = a->segment->path;
  }
  // A half-built segment (no record) from a crash is garbage.
  std::string orphan = dir + "/999.seg";
  ::close(::open(orphan.c_str(), O_CREAT | O_WRONLY, 0600));
  SegmentCache restarted(dir, 1 << 20);
  EXPECT_FALSE(Exists(orphan));
  auto again = restarted.Acquire(Version(1), true, FakeBuilder(10, &calls), "s", nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->hit);
  EXPECT_EQ(again->segment->path, path);
  EXPECT_EQ(calls, 1);
  // New generations never collide with adopted ones.
  auto other = restarted.Acquire(Version(2), true, FakeBuilder(10, &calls), "s", nullptr);
  ASSERT_TRUE(other.ok());
  EXPECT_GT(other->segment->generation, again->segment->generation);
}

// Builds a recorded segment, changes its record with `change`, restarts:
// the record must not be adopted (its segment is deleted and rebuilt).
void ExpectNotAdoptedOnceChanged(
    const std::function<void(v1::SegmentRecord*)>& change) {
  std::string dir = MakeTempDir();
  std::atomic<int> calls{0};
  std::string path;
  {
    SegmentCache cache(dir, 1 << 20);
    auto a = cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "s", nullptr);
    ASSERT_TRUE(a.ok());
    path = a->segment->path;
  }
  const std::string meta = path.substr(0, path.size() - 4) + ".meta";
  v1::SegmentRecord record;
  {
    std::ifstream in(meta, std::ios::binary);
    ASSERT_TRUE(record.ParseFromIstream(&in));
  }
  EXPECT_EQ(record.index_version(), SegmentCache::kIndexVersion);
  EXPECT_FALSE(record.boot_id().empty());
  change(&record);
  {
    std::ofstream out(meta, std::ios::binary | std::ios::trunc);
    ASSERT_TRUE(record.SerializeToOstream(&out));
  }
  SegmentCache restarted(dir, 1 << 20);
  EXPECT_FALSE(Exists(path));
  auto again = restarted.Acquire(Version(1), true, FakeBuilder(10, &calls), "s", nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->hit);
  EXPECT_EQ(calls, 2);
}

TEST(SegmentCacheRestartTest, RecordsOfAnOlderIndexAreNotAdopted) {
  // A daemon from before LoadArray.path wrote records without
  // index_version: its segments are rebuilt, so every reply has paths.
  ExpectNotAdoptedOnceChanged(
      [](v1::SegmentRecord* record) { record->clear_index_version(); });
}

TEST(SegmentCacheRestartTest, RecordsOfAnotherBootAreNotAdopted) {
  // Segments are not fsynced: after a power loss (a new boot) a record may
  // name a segment whose pages never reached the disk.
  ExpectNotAdoptedOnceChanged(
      [](v1::SegmentRecord* record) { record->set_boot_id("another boot"); });
}

TEST(SegmentCacheTest, SegmentFileRemovedByHandIsRebuilt) {
  const std::string dir = MakeTempDir();
  SegmentCache cache(dir, 1 << 20);
  std::atomic<int> calls{0};
  auto first = cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "", nullptr);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(::unlink(first->segment->path.c_str()), 0);
  auto second = cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "s", nullptr);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(second->hit);
  EXPECT_EQ(calls, 2);
  EXPECT_TRUE(Exists(second->segment->path));
  EXPECT_EQ(cache.stats().bytes, 10u);  // the lost file no longer counts
  // Even the whole segments directory.
  ASSERT_EQ(::unlink(second->segment->path.c_str()), 0);
  ::unlink((second->segment->path.substr(0, second->segment->path.size() - 4) + ".meta").c_str());
  ASSERT_EQ(::rmdir(dir.c_str()), 0);
  auto third = cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "s", nullptr);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_TRUE(Exists(third->segment->path));
}

TEST(SegmentCacheTest, ListShowsSegmentsAndTheirLeases) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  std::atomic<int> calls{0};
  ASSERT_TRUE(cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "", nullptr).ok());
  ASSERT_TRUE(cache.Acquire(Version(2), true, FakeBuilder(20, &calls), "s1", nullptr).ok());
  ASSERT_TRUE(cache.Acquire(Version(2), true, FakeBuilder(20, &calls), "s2", nullptr).ok());
  std::vector<SegmentCache::Listing> listed = cache.List();
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].segment->version.ino, 1u);  // unleased, in LRU order first
  EXPECT_TRUE(listed[0].lease_sessions.empty());
  EXPECT_EQ(listed[1].segment->version.ino, 2u);
  EXPECT_EQ(listed[1].lease_sessions.size(), 2u);
  EXPECT_TRUE(listed[1].current);
}

TEST(SegmentCacheTest, EvictRemovesUnleasedAndRetiresLeased) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  std::atomic<int> calls{0};
  auto a = cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "", nullptr);
  auto b = cache.Acquire(Version(2), true, FakeBuilder(20, &calls), "s", nullptr);
  ASSERT_TRUE(a.ok() && b.ok());
  SegmentCache::Evicted evicted = cache.Evict([](const Segment&) { return true; });
  EXPECT_EQ(evicted.segments.size(), 2u);
  EXPECT_EQ(evicted.pending, 1u);
  EXPECT_EQ(evicted.freed_bytes, 10u);
  EXPECT_FALSE(Exists(a->segment->path));
  EXPECT_TRUE(Exists(b->segment->path));  // mapped by its lessee
  cache.Release("s", b->lease_id);
  EXPECT_FALSE(Exists(b->segment->path));
  // The next load builds anew.
  auto again = cache.Acquire(Version(1), true, FakeBuilder(10, &calls), "", nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->hit);
  EXPECT_EQ(cache.Evict([](const Segment& s) { return s.version.ino == 9; }).segments.size(), 0u);
}


// -- remote sources: claims and fetch tickets ---------------------------------

// A builder that writes part of a segment, then works -- asking `wanted`
// as a real one does -- until `wanted` says to stop (it returns that
// error) or `finish` is set (it completes the segment). It gives up
// waiting after a minute, so a broken cache fails the test, not hangs it.
struct LoopingBuilder {
  std::atomic<int>* calls;
  std::atomic<bool>* finish;
  std::string* written;

  absl::StatusOr<v1::LoadReply> operator()(const std::string& path,
                                           const SegmentCache::Wanted& wanted,
                                           uint64_t* size) const {
    ++*calls;
    *written = path;
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) return absl::InternalError("open");
    EXPECT_EQ(::write(fd, "partial", 7), 7);
    ::close(fd);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    while (!finish->load() && std::chrono::steady_clock::now() < give_up) {
      absl::Status status = wanted();
      if (!status.ok()) return status;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    *size = 7;
    v1::LoadReply reply;
    reply.set_segment_path(path);
    return reply;
  }
};

// Whether a request was abandoned, as its service would tell, counting how
// often it was asked and told so.
struct Requester {
  std::atomic<bool> gone{false};
  std::atomic<int> asked{0};
  std::atomic<int> told_gone{0};
  SegmentCache::Abandoned hook() {
    return [this] {
      ++asked;
      if (!gone.load()) return false;
      ++told_gone;
      return true;
    };
  }
  // Returns once the cache asked again after the call.
  void AwaitQuestion() {
    const int before = asked.load();
    while (asked.load() <= before) std::this_thread::yield();
  }
  // Returns once the cache learnt that the request is gone (the builder's
  // Wanted then decided, in the same call, whether the build goes on).
  void AwaitTold() {
    while (told_gone.load() == 0) std::this_thread::yield();
  }
};

// A build of one version that runs until told to `finish` (LoopingBuilder),
// requested by `builder`, and optionally a second request for the same
// version by `waiter`; each request runs on its own thread and keeps its
// result. The destructor lets the build finish and joins both.
struct AbandonScene {
  SegmentCache cache{MakeTempDir(), 1 << 20};
  std::atomic<int> calls{0}, other_calls{0};
  std::atomic<bool> finish{false};
  std::string written;
  Requester builder, waiter;
  absl::StatusOr<SegmentCache::Acquired> built = absl::UnknownError("");
  absl::StatusOr<SegmentCache::Acquired> waited = absl::UnknownError("");
  std::thread build_thread, wait_thread;

  ~AbandonScene() {
    finish = true;
    JoinBuild();
    JoinWaiter();
  }
  // Returns once the build runs.
  void StartBuild() {
    build_thread = std::thread([this] {
      built = cache.Acquire(Version(1), true, LoopingBuilder{&calls, &finish, &written},
                            "s1", builder.hook());
    });
    while (calls.load() == 0) std::this_thread::yield();
  }
  // Returns once the waiter waits for the build.
  void StartWaiter() {
    wait_thread = std::thread([this] {
      waited = cache.Acquire(Version(1), true, FakeBuilder(10, &other_calls), "s2",
                             waiter.hook());
    });
    waiter.AwaitQuestion();
  }
  void JoinBuild() {
    if (build_thread.joinable()) build_thread.join();
  }
  void JoinWaiter() {
    if (wait_thread.joinable()) wait_thread.join();
  }
};

TEST(SegmentCacheAbandonTest, ABuildNobodyWantsStopsAndLeavesNothing) {
  AbandonScene scene;
  scene.StartBuild();
  scene.builder.gone = true;  // its client cancelled the call
  scene.JoinBuild();          // ...and the build stopped, finish never set
  EXPECT_EQ(scene.built.status().code(), absl::StatusCode::kCancelled) << scene.built.status();
  EXPECT_FALSE(Exists(scene.written));
  EXPECT_FALSE(Exists(scene.written.substr(0, scene.written.size() - 4) + ".meta"));
  EXPECT_EQ(scene.cache.stats().segments, 0u);
  EXPECT_TRUE(scene.cache.List().empty());
  // Not shared as a failure: the next load builds again.
  std::atomic<int> again{0};
  EXPECT_TRUE(scene.cache.Acquire(Version(1), true, FakeBuilder(10, &again), "s", nullptr)
                  .ok());
  EXPECT_EQ(again, 1);
}

TEST(SegmentCacheAbandonTest, ABuildALiveWaiterWantsFinishesAndServesBoth) {
  AbandonScene scene;
  scene.StartBuild();
  scene.StartWaiter();
  scene.builder.gone = true;
  scene.builder.AwaitTold();  // the build learnt that its builder is gone...
  scene.finish = true;        // ...and went on for the waiter
  scene.JoinBuild();
  scene.JoinWaiter();
  ASSERT_TRUE(scene.waited.ok()) << scene.waited.status();
  ASSERT_TRUE(scene.built.ok()) << scene.built.status();
  EXPECT_EQ(scene.waited->segment->path, scene.written);
  EXPECT_EQ(scene.built->segment->path, scene.written);
  EXPECT_TRUE(Exists(scene.written));
  EXPECT_EQ(scene.calls, 1);
  EXPECT_EQ(scene.other_calls, 0);
}

TEST(SegmentCacheAbandonTest, AWaiterThatGivesUpDoesNotStopALiveBuild) {
  AbandonScene scene;
  scene.StartBuild();
  scene.StartWaiter();
  scene.waiter.gone = true;
  scene.JoinWaiter();  // the waiter stops waiting...
  EXPECT_EQ(scene.waited.status().code(), absl::StatusCode::kCancelled)
      << scene.waited.status();
  scene.builder.AwaitQuestion();
  scene.builder.AwaitQuestion();  // ...and the build goes on for its builder
  scene.finish = true;
  scene.JoinBuild();
  ASSERT_TRUE(scene.built.ok()) << scene.built.status();
  EXPECT_TRUE(Exists(scene.written));
  EXPECT_EQ(scene.calls, 1);
  EXPECT_EQ(scene.other_calls, 0);
}

TEST(SegmentCacheAbandonTest, TheLastWaiterLeavingStopsAnAbandonedBuild) {
  AbandonScene scene;
  scene.StartBuild();
  scene.StartWaiter();
  scene.builder.gone = true;
  scene.builder.AwaitTold();  // it builds on for the waiter, until:
  scene.waiter.gone = true;
  scene.JoinWaiter();
  scene.JoinBuild();  // finish never set
  EXPECT_EQ(scene.waited.status().code(), absl::StatusCode::kCancelled)
      << scene.waited.status();
  EXPECT_EQ(scene.built.status().code(), absl::StatusCode::kCancelled)
      << scene.built.status();
  EXPECT_FALSE(Exists(scene.written));
  EXPECT_EQ(scene.cache.stats().segments, 0u);
  EXPECT_EQ(scene.other_calls, 0);
}

SourceVersion Remote(const std::string& etag, int64_t mtime = 7) {
  SourceVersion v;
  v.url = "s3://bucket/model.pkl";
  v.path = v.url;
  v.etag = etag;
  v.size = 100;
  v.mtime_ns = mtime;
  return v;
}

SegmentCache::FetchBuilder FakeFetch(uint64_t size, std::atomic<int>* calls) {
  SegmentCache::Builder build = FakeBuilder(size, calls);
  return [build](const SourceVersion&, const std::string& path, uint64_t* out) {
    return build(path, SegmentCache::Wanted(), out);
  };
}

TEST(SegmentCacheRemoteTest, OneClaimantFetchesAndTheOthersWaitForIt) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  auto claimed = cache.Claim(Remote("e1"), "s1", nullptr);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_FALSE(claimed->ticket.empty());
  EXPECT_EQ(claimed->acquired.segment, nullptr);
  std::vector<absl::StatusOr<SegmentCache::Claimed>> waited(3, absl::UnknownError(""));
  std::vector<std::thread> waiters;
  for (int i = 0; i < 3; ++i) {
    waiters.emplace_back([&, i] { waited[i] = cache.Claim(Remote("e1"), "s2", nullptr); });
  }
  std::atomic<int> calls{0};
  auto built = cache.Fulfill(claimed->ticket, "s1", FakeFetch(10, &calls));
  ASSERT_TRUE(built.ok()) << built.status();
  for (auto& t : waiters) t.join();
  EXPECT_EQ(calls, 1);
  for (const auto& w : waited) {
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_TRUE(w->ticket.empty());
    EXPECT_EQ(w->acquired.segment->path, built->segment->path);
    EXPECT_FALSE(w->acquired.lease_id.empty());
  }
  // A ticket is redeemed once.
  EXPECT_EQ(cache.Fulfill(claimed->ticket, "s1", FakeFetch(10, &calls)).status().code(),
            absl::StatusCode::kAborted);
}

TEST(SegmentCacheRemoteTest, TheEtagIsTheVersionAndTheMtimeCountsWithoutOne) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  std::atomic<int> calls{0};
  auto first = cache.Claim(Remote("e1", 7), "s", nullptr);
  ASSERT_TRUE(cache.Fulfill(first->ticket, "s", FakeFetch(10, &calls)).ok());
  EXPECT_TRUE(cache.Claim(Remote("e1", 8), "s", nullptr)->ticket.empty());   // same etag
  EXPECT_FALSE(cache.Claim(Remote("e2", 8), "s", nullptr)->ticket.empty());  // changed
  SegmentCache other(MakeTempDir(), 1 << 20);
  auto no_etag = other.Claim(Remote("", 7), "s", nullptr);
  ASSERT_TRUE(other.Fulfill(no_etag->ticket, "s", FakeFetch(10, &calls)).ok());
  EXPECT_TRUE(other.Claim(Remote("", 7), "s", nullptr)->ticket.empty());
  EXPECT_FALSE(other.Claim(Remote("", 9), "s", nullptr)->ticket.empty());
}

TEST(SegmentCacheRemoteTest, AFetcherThatGoesAwayHandsTheClaimOver) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  auto claimed = cache.Claim(Remote("e1"), "fetcher", nullptr);
  ASSERT_FALSE(claimed->ticket.empty());
  absl::StatusOr<SegmentCache::Claimed> waited = absl::UnknownError("");
  std::thread waiter([&] { waited = cache.Claim(Remote("e1"), "waiter", nullptr); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  cache.EndSession("fetcher");  // its process died before it redeemed
  waiter.join();
  ASSERT_TRUE(waited.ok()) << waited.status();
  ASSERT_FALSE(waited->ticket.empty());  // the waiter fetches now
  std::atomic<int> calls{0};
  EXPECT_EQ(cache.Fulfill(claimed->ticket, "fetcher", FakeFetch(10, &calls)).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_TRUE(cache.Fulfill(waited->ticket, "waiter", FakeFetch(10, &calls)).ok());
  EXPECT_EQ(calls, 1);
}

TEST(SegmentCacheRemoteTest, ACancelledFetchIsClaimedAgainABadObjectIsShared) {
  SegmentCache cache(MakeTempDir(), 1 << 20);
  for (absl::Status failure : {absl::CancelledError("fetcher gave up"),
                               absl::DataLossError("not a joblib file")}) {
    auto claimed = cache.Claim(Remote("e1"), "fetcher", nullptr);
    ASSERT_FALSE(claimed->ticket.empty());
    std::atomic<bool> release{false};
    std::atomic<int> calls{0};
    std::string written;
    GatedFailure failing{&calls, &release, failure, &written};
    absl::StatusOr<SegmentCache::Claimed> waited = absl::UnknownError("");
    std::thread fetcher([&] {
      auto run = [&](const SourceVersion&, const std::string& path, uint64_t* size) {
        return failing(path, SegmentCache::Wanted(), size);
      };
      EXPECT_EQ(cache.Fulfill(claimed->ticket, "fetcher", run).status(), failure);
    });
    while (calls.load() == 0) std::this_thread::yield();
    std::thread waiter([&] { waited = cache.Claim(Remote("e1"), "waiter", nullptr); });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    release = true;
    fetcher.join();
    waiter.join();
    EXPECT_FALSE(Exists(written));
    if (SegmentCache::Refetchable(failure)) {
      ASSERT_TRUE(waited.ok()) << waited.status();
      ASSERT_FALSE(waited->ticket.empty());
      EXPECT_TRUE(cache.Fulfill(waited->ticket, "waiter", FakeFetch(10, &calls)).ok());
      cache.Evict([](const Segment&) { return true; });
      cache.EndSession("waiter");  // its lease kept the evicted file
    } else {
      // The waiter may have come after the failure and claimed anew.
      if (waited.ok()) {
        ASSERT_FALSE(waited->ticket.empty());
        cache.EndSession("waiter");
      } else {
        EXPECT_EQ(waited.status(), failure);
      }
    }
    EXPECT_EQ(cache.stats().segments, 0u);
  }
}

TEST(SegmentCacheRemoteTest, RemoteSegmentsSurviveARestart) {
  std::string dir = MakeTempDir();
  std::atomic<int> calls{0};
  {
    SegmentCache cache(dir, 1 << 20);
    auto claimed = cache.Claim(Remote("e1"), "s", nullptr);
    ASSERT_TRUE(cache.Fulfill(claimed->ticket, "s", FakeFetch(10, &calls)).ok());
  }
  SegmentCache cache(dir, 1 << 20);
  auto again = cache.Claim(Remote("e1"), "s", nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->ticket.empty());
  EXPECT_EQ(again->acquired.segment->version.url, "s3://bucket/model.pkl");
  EXPECT_TRUE(cache.Claim(Version(1), "s", nullptr).status().code() ==
              absl::StatusCode::kInvalidArgument);  // files are not claimed
}

}  // namespace
}  // namespace persistd
