#include "server/store/segment_builder.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "absl/strings/string_view.h"
#include "common/io/scoped_fd.h"
#include "gtest/gtest.h"
#include "server/codec/codec.h"
#include "server/format/format_test_util.h"
#include "server/format/joblib_reader.h"
#include "server/io/byte_sink.h"

namespace persistd {
namespace {

using testing_util::ReadTestdata;

// A zstd frame written by hand: `raw` as raw blocks, then `count` copies of
// `byte` as RLE blocks (4 bytes per 128 KiB), so a few KB of file decode to
// gigabytes -- what a decompression bomb looks like.
std::string ZstdBomb(absl::string_view raw, char byte, uint64_t count,
                     absl::string_view tail = "") {
  std::string out("\x28\xb5\x2f\xfd\x00\x38", 6);  // magic; 128 KiB window
  constexpr uint64_t kBlock = 1 << 17;
  struct Block {
    int type;
    uint64_t size;
    std::string content;
  };
  std::vector<Block> blocks;
  for (size_t i = 0; i < raw.size(); i += kBlock) {
    absl::string_view piece = raw.substr(i, kBlock);
    blocks.push_back({0, piece.size(), std::string(piece)});
  }
  for (uint64_t left = count; left > 0;) {
    const uint64_t n = std::min(left, kBlock);
    blocks.push_back({1, n, std::string(1, byte)});
    left -= n;
  }
  if (!tail.empty()) blocks.push_back({0, tail.size(), std::string(tail)});
  for (size_t i = 0; i < blocks.size(); ++i) {
    const uint32_t header = (i + 1 == blocks.size() ? 1 : 0) |
                            (blocks[i].type << 1) |
                            static_cast<uint32_t>(blocks[i].size << 3);
    out.append(reinterpret_cast<const char*>(&header), 3);  // little-endian
    out += blocks[i].content;
  }
  return out;
}

class SegmentBuilderTest : public testing::Test {
 protected:
  void SetUp() override {
    char name[] = "/tmp/persistd_builder_test.XXXXXX";
    ASSERT_NE(::mkdtemp(name), nullptr);
    dir_ = name;
  }
  void TearDown() override {
    std::string command = "rm -rf " + dir_;
    ASSERT_EQ(::system(command.c_str()), 0);
  }

  // Builds a segment from a file holding `contents`.
  absl::StatusOr<v1::LoadReply> Build(const std::string& contents,
                                      const PickleLimits* limits = nullptr) {
    const std::string source = dir_ + "/source";
    {
      ScopedFd out(::open(source.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600));
      EXPECT_EQ(::write(out.get(), contents.data(), contents.size()),
                static_cast<ssize_t>(contents.size()));
    }
    ScopedFd fd(::open(source.c_str(), O_RDONLY));
    SegmentSource src;
    src.fd = fd.get();
    src.size = contents.size();
    src.display_name = "source";
    src.limits = limits;
    uint64_t size = 0;
    return BuildSegment(src, dir_ + "/" + std::to_string(++builds_) + ".seg",
                        &size);
  }

  std::string dir_;
  int builds_ = 0;
};

// Peak resident memory of this process so far, in bytes.
uint64_t PeakRss() {
  rusage usage;
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<uint64_t>(usage.ru_maxrss) * 1024;
}

TEST_F(SegmentBuilderTest, AStreamFailsAtItsFirstInvalidByte) {
  // 4 GiB of zeros after a PROTO: opcode 0x00 at offset 2 is invalid, and
  // decoding must stop there -- not hold the 4 GiB in memory until the
  // end, as it did.
  const uint64_t before = PeakRss();
  const auto started = std::chrono::steady_clock::now();
  absl::StatusOr<v1::LoadReply> built =
      Build(ZstdBomb("\x80\x04", '\0', uint64_t{4} << 30));
  const double seconds = std::chrono::duration<double>(
                             std::chrono::steady_clock::now() - started)
                             .count();
  EXPECT_EQ(built.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(built.status().message().find("unknown opcode 0x00 at offset 2"),
            std::string::npos)
      << built.status();
  EXPECT_LT(PeakRss() - before, uint64_t{64} << 20);
  EXPECT_LT(seconds, 2.0);
  // Zeros from the first byte: not a pickle at all.
  built = Build(ZstdBomb("", '\0', uint64_t{1} << 30));
  EXPECT_EQ(built.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(built.status().message().find("not a pickle"), std::string::npos);
  EXPECT_LT(PeakRss() - before, uint64_t{64} << 20);
}

TEST_F(SegmentBuilderTest, MarkBombIsRefusedWithinTheBudget) {
  // 30M MARKs in about 1 KB of zstd took the daemon to 1.2 GB.
  const uint64_t before = PeakRss();
  absl::StatusOr<v1::LoadReply> built =
      Build(ZstdBomb("\x80\x04", '(', 30000000, "."));
  EXPECT_EQ(built.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(built.status().message().find("--max-pickle-memory"),
            std::string::npos)
      << built.status();
  EXPECT_LT(PeakRss() - before, uint64_t{64} << 20);
}

TEST_F(SegmentBuilderTest, PicklePartLargerThanTheLimitIsRefused) {
  // A BINBYTES8 that claims 1 TB and keeps coming: held in memory until
  // the limit, then refused.
  std::string head("\x80\x04\x8e\0\0\0\0\0\x01\0\0", 11);
  PickleLimits limits;
  limits.max_pickle_bytes = 8 << 20;
  const uint64_t before = PeakRss();
  absl::StatusOr<v1::LoadReply> built =
      Build(ZstdBomb(head, 'x', uint64_t{1} << 30), &limits);
  EXPECT_EQ(built.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(built.status().message().find("--max-pickle-bytes"),
            std::string::npos)
      << built.status();
  EXPECT_LT(PeakRss() - before, uint64_t{64} << 20);
}

std::string ReadSegment(const v1::LoadReply& reply) {
  std::string out(reply.segment_size(), '\0');
  ScopedFd fd(::open(reply.segment_path().c_str(), O_RDONLY));
  EXPECT_EQ(::pread(fd.get(), &out[0], out.size(), 0),
            static_cast<ssize_t>(out.size()));
  return out;
}

std::string Compress(Codec codec, absl::string_view data) {
  StringSink out;
  absl::StatusOr<std::unique_ptr<ByteSink>> encoder =
      NewEncoder(codec, -1, 1, &out);
  EXPECT_TRUE(encoder.ok());
  EXPECT_TRUE((*encoder)->Append(data).ok());
  EXPECT_TRUE((*encoder)->Finish().ok());
  return out.data();
}

TEST_F(SegmentBuilderTest, TheSegmentHoldsWhatTheIndexerFound) {
  for (const char* name :
       {"joblib16_p0.pkl", "joblib16_p4.pkl", "joblib16_p5.pkl",
        "joblib16_dtypes_p4.pkl", "joblib_0.11.0_pickle_py36_np111.pkl",
        "joblib_0.9.2_pickle_py35_np19.pkl"}) {
    for (Codec codec : {Codec::kNone, Codec::kZstd, Codec::kLz4}) {
      SCOPED_TRACE(testing::Message() << name << " " << CodecName(codec));
      const std::string stream = ReadTestdata(name);
      absl::StatusOr<IndexedStream> want = IndexJoblibStream(stream);
      ASSERT_TRUE(want.ok()) << want.status();
      absl::StatusOr<v1::LoadReply> built =
          Build(codec == Codec::kNone ? stream : Compress(codec, stream));
      ASSERT_TRUE(built.ok()) << built.status();
      const std::string segment = ReadSegment(*built);
      EXPECT_EQ(built->trailing_bytes(), 0u);
      EXPECT_EQ(segment.substr(built->skeleton().offset(),
                               built->skeleton().length()),
                want->skeleton);
      ASSERT_EQ(built->arrays_size(), static_cast<int>(want->arrays.size()));
      for (int i = 0; i < built->arrays_size(); ++i) {
        const v1::LoadArray& got = built->arrays(i);
        const LoadArrayLocation& loc = want->arrays[i];
        EXPECT_EQ(got.dtype(), loc.dtype);
        EXPECT_EQ(got.path(), loc.path);
        EXPECT_EQ(got.shape_size(), static_cast<int>(loc.shape.size()));
        if (loc.kind == LoadArrayLocation::Kind::kLegacy) {
          EXPECT_EQ(got.kind(), v1::LoadArray::LEGACY);
          continue;
        }
        if (loc.kind == LoadArrayLocation::Kind::kRaw) {
          EXPECT_EQ(got.data().offset() % kSegmentAlignment, 0u);
        }
        EXPECT_EQ(segment.substr(got.data().offset(), got.data().length()),
                  stream.substr(loc.offset, loc.length));
      }
    }
  }
}

TEST_F(SegmentBuilderTest, ArrayDataIsWrittenAsItArrives) {
  // A 256 MiB uint8 array in about 8 KB of zstd: the build must not hold
  // it in memory.
  const std::string head(
      "\x80\x02" "cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81}("
      "X\x05\0\0\0shape(J\0\0\0\x10t"
      "X\x05\0\0\0dtypecnumpy\ndtype\n(X\x02\0\0\0u1K\0K\x01tR"
      "(K\x03X\x01\0\0\0|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\0tbub",
      127);
  const uint64_t size = uint64_t{256} << 20;
  const uint64_t before = PeakRss();
  absl::StatusOr<v1::LoadReply> built = Build(ZstdBomb(head, 'x', size, "."));
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_LT(PeakRss() - before, uint64_t{64} << 20);
  ASSERT_EQ(built->arrays_size(), 1);
  EXPECT_EQ(built->arrays(0).data().length(), size);
  ScopedFd fd(::open(built->segment_path().c_str(), O_RDONLY));
  char last[2] = {0, 0};
  ASSERT_EQ(::pread(fd.get(), last, 2, built->arrays(0).data().offset() +
                                           size - 2),
            2);
  EXPECT_EQ(std::string(last, 2), "xx");
}

TEST_F(SegmentBuilderTest, AFailedBuildLeavesNoSegmentFile) {
  absl::StatusOr<v1::LoadReply> built =
      Build(ZstdBomb("\x80\x04", '(', 1000));
  EXPECT_FALSE(built.ok());
  EXPECT_NE(::access((dir_ + "/1.seg").c_str(), F_OK), 0);
}

}  // namespace
}  // namespace persistd
