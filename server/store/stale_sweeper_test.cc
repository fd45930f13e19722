#include "server/store/stale_sweeper.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "gtest/gtest.h"
#include "server/store/source_state.h"

namespace persistd {
namespace {

std::string MakeTempDir() {
  char name[] = "/tmp/persistd_sweeper_test.XXXXXX";
  EXPECT_NE(::mkdtemp(name), nullptr);
  return name;
}

void WriteFile(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ::close(fd);
}

// The version of the file at `path` now, as a load would see it.
SourceVersion VersionAt(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return VersionOf(st, false, path);
}

SegmentCache::Builder Builder() {
  return [](const std::string& path, const SegmentCache::Wanted&,
            uint64_t* size) -> absl::StatusOr<v1::LoadReply> {
    WriteFile(path, "segment");
    *size = 7;
    return v1::LoadReply();
  };
}

uint32_t Segments(const SegmentCache& cache) { return cache.stats().segments; }

TEST(StaleSweeperTest, EvictsSegmentsOfDeletedAndReplacedFilesOnly) {
  const std::string sources = MakeTempDir();
  SegmentCache cache(MakeTempDir(), 1 << 20);
  StaleSweeper sweeper(&cache, absl::ZeroDuration());  // passes on demand
  const std::string kept = sources + "/kept.pkl";
  const std::string deleted = sources + "/deleted.pkl";
  const std::string replaced = sources + "/replaced.pkl";
  for (const std::string& path : {kept, deleted, replaced}) {
    WriteFile(path, "joblib");
    ASSERT_TRUE(cache.Acquire(VersionAt(path), true, Builder(), "", nullptr).ok());
  }
  // A file object's segment has no path to go stale by.
  SourceVersion unnamed = VersionAt(kept);
  unnamed.ino += 1000;
  unnamed.path = "<file object>";
  ASSERT_TRUE(cache.Acquire(unnamed, true, Builder(), "", nullptr).ok());
  ASSERT_EQ(Segments(cache), 4u);
  EXPECT_EQ(sweeper.SweepOnce(), 0u);

  ASSERT_EQ(::unlink(deleted.c_str()), 0);
  WriteFile(replaced + ".new", "another joblib file");
  ASSERT_EQ(::rename((replaced + ".new").c_str(), replaced.c_str()), 0);
  EXPECT_EQ(sweeper.SweepOnce(), 2u);
  EXPECT_EQ(Segments(cache), 2u);
  EXPECT_EQ(SourceStateOf(VersionAt(kept)), v1::SegmentInfo::SOURCE_CURRENT);
  EXPECT_EQ(sweeper.SweepOnce(), 0u);
}

TEST(StaleSweeperTest, ItsThreadSweepsAndStopsPromptly) {
  const std::string sources = MakeTempDir();
  SegmentCache cache(MakeTempDir(), 1 << 20);
  const std::string path = sources + "/gone.pkl";
  WriteFile(path, "joblib");
  ASSERT_TRUE(cache.Acquire(VersionAt(path), true, Builder(), "", nullptr).ok());
  ASSERT_EQ(::unlink(path.c_str()), 0);
  {
    StaleSweeper sweeper(&cache, absl::Milliseconds(5));
    for (int i = 0; i < 2000 && Segments(cache) > 0; ++i) absl::SleepFor(absl::Milliseconds(5));
  }  // joins however long the period
  EXPECT_EQ(Segments(cache), 0u);
}

}  // namespace
}  // namespace persistd
