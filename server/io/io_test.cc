#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "common/io/atomic_file.h"
#include "common/io/mapped_region.h"
#include "gtest/gtest.h"
#include "server/io/byte_sink.h"
#include "server/io/growable_buffer.h"
#include "server/io/pread_exactly.h"

namespace persistd {
namespace {

std::string MakeTempDir() {
  char name[] = "/tmp/persistd_io_test.XXXXXX";
  EXPECT_NE(::mkdtemp(name), nullptr);
  return name;
}

std::string ReadFile(const std::string& path) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY));
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd.get(), buf, sizeof(buf))) > 0) out.append(buf, n);
  return out;
}

TEST(AtomicFileTest, TargetAppearsOnlyOnCommit) {
  std::string dir = MakeTempDir();
  std::string target = dir + "/out.pkl";
  absl::StatusOr<AtomicFile> file = AtomicFile::Create(target);
  ASSERT_TRUE(file.ok()) << file.status();
  FdSink sink(file->fd(), file->temp_path());
  ASSERT_TRUE(sink.Append("hello ").ok());
  ASSERT_TRUE(sink.Append(std::string(3 << 20, 'x')).ok());
  ASSERT_TRUE(sink.Finish().ok());
  EXPECT_NE(::access(target.c_str(), F_OK), 0);
  ASSERT_TRUE(file->Commit().ok());
  std::string content = ReadFile(target);
  EXPECT_EQ(content.size(), 6u + (3u << 20));
  EXPECT_EQ(content.substr(0, 6), "hello ");
}

TEST(AtomicFileTest, AbandonedFileLeavesNothingBehind) {
  std::string dir = MakeTempDir();
  std::string temp;
  {
    absl::StatusOr<AtomicFile> file = AtomicFile::Create(dir + "/x");
    ASSERT_TRUE(file.ok());
    temp = file->temp_path();
    EXPECT_EQ(::access(temp.c_str(), F_OK), 0);
  }
  EXPECT_NE(::access(temp.c_str(), F_OK), 0);
  EXPECT_NE(::access((dir + "/x").c_str(), F_OK), 0);
}

TEST(AtomicFileTest, MissingDirectoryIsNotFound) {
  absl::StatusOr<AtomicFile> file =
      AtomicFile::Create("/nonexistent-persistd-dir/x.pkl");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
}

TEST(MappedRegionTest, MapsFileContents) {
  std::string dir = MakeTempDir();
  std::string path = dir + "/m";
  ScopedFd fd(::open(path.c_str(), O_RDWR | O_CREAT, 0600));
  ASSERT_EQ(::write(fd.get(), "abcdef", 6), 6);
  absl::StatusOr<MappedRegion> region = MappedRegion::MapReadOnly(fd.get(), 6, path);
  ASSERT_TRUE(region.ok());
  EXPECT_EQ(region->view(), "abcdef");
  absl::StatusOr<MappedRegion> empty = MappedRegion::MapReadOnly(fd.get(), 0, path);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->size(), 0u);
}

TEST(GrowableBufferTest, GrowsAcrossManyAppends) {
  GrowableBuffer buffer;
  std::string chunk(100000, 'a');
  for (int i = 0; i < 100; ++i) {
    chunk[0] = static_cast<char>('a' + i % 26);
    ASSERT_TRUE(buffer.Append(chunk).ok());
  }
  ASSERT_EQ(buffer.size(), 100u * 100000u);
  EXPECT_EQ(buffer.view()[0], 'a');
  EXPECT_EQ(buffer.view()[99 * 100000], static_cast<char>('a' + 99 % 26));
}

TEST(PreadExactlyTest, ReadsRangesAndReportsShortFiles) {
  std::string dir = MakeTempDir();
  std::string path = dir + "/short";
  ScopedFd fd(::open(path.c_str(), O_RDWR | O_CREAT, 0600));
  ASSERT_EQ(::write(fd.get(), "0123456789", 10), 10);
  char out[20];
  ASSERT_TRUE(PreadExactly(fd.get(), 2, 5, out, path, 10).ok());
  EXPECT_EQ(std::string(out, 5), "23456");
  absl::Status shrank = PreadExactly(fd.get(), 5, 10, out, path, 15);
  EXPECT_EQ(shrank.code(), absl::StatusCode::kAborted);
  EXPECT_NE(shrank.message().find("shrank while it was being read (10 of 15"),
            std::string::npos) << shrank;
}

}  // namespace
}  // namespace persistd
