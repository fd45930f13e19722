#include "server/codec/codec.h"

#include <isa-l/igzip_lib.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "server/io/byte_sink.h"

namespace persistd {
namespace {

constexpr Codec kCodecs[] = {Codec::kNone, Codec::kZlib, Codec::kGzip,
                             Codec::kBz2,  Codec::kLzma, Codec::kXz,
                             Codec::kLz4,  Codec::kZstd};
constexpr Codec kCompressors[] = {Codec::kZlib, Codec::kGzip, Codec::kBz2,
                                  Codec::kLzma, Codec::kXz,   Codec::kLz4,
                                  Codec::kZstd};

// Deterministic bytes that barely compress.
std::string RandomBytes(size_t size, uint64_t seed) {
  std::string out(size, '\0');
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<char>(x >> 24);
  }
  return out;
}

// Random-ish: like float64 arrays, random mantissas under repeated
// exponents, so it compresses a little.
std::string RandomishBytes(size_t size) {
  std::string out = RandomBytes(size, 42);
  for (size_t i = 7; i < size; i += 8) out[i] = '\x3f';
  return out;
}

// Text-like, highly compressible.
std::string CompressibleBytes(size_t size) {
  std::string out;
  out.reserve(size + 64);
  for (uint64_t i = 0; out.size() < size; ++i) {
    absl::StrAppend(&out, "row ", i % 1000, ": the quick brown fox ", i / 7,
                    "\n");
  }
  out.resize(size);
  return out;
}

// The quickest level of each codec, for tests about plumbing.
int FastLevel(Codec codec) {
  return (codec == Codec::kLzma || codec == Codec::kXz || codec == Codec::kLz4)
             ? 0
             : 1;
}

// Appends `data` in pieces of varying size, to cross every block boundary.
absl::Status AppendInPieces(ByteSink* sink, absl::string_view data) {
  static constexpr size_t kSteps[] = {1, 13, 4096, 65537, (1 << 20) + 5,
                                      3 << 20};
  for (size_t i = 0; !data.empty(); ++i) {
    size_t n = std::min(data.size(), kSteps[i % 6]);
    absl::Status status = sink->Append(data.substr(0, n));
    if (!status.ok()) return status;
    data.remove_prefix(n);
  }
  return absl::OkStatus();
}

std::string Encode(Codec codec, int level, int threads,
                   absl::string_view data) {
  StringSink sink;
  absl::StatusOr<std::unique_ptr<ByteSink>> encoder =
      NewEncoder(codec, level, threads, &sink);
  EXPECT_TRUE(encoder.ok()) << encoder.status();
  if (!encoder.ok()) return "";
  EXPECT_TRUE(AppendInPieces(encoder->get(), data).ok());
  absl::Status status = (*encoder)->Finish();
  EXPECT_TRUE(status.ok()) << status;
  return sink.data();
}

// Records how it is called; optionally fails once `fail_after` bytes have
// arrived.
class RecordingSink : public ByteSink {
 public:
  absl::Status Append(absl::string_view data) override {
    ++appends;
    max_append = std::max(max_append, data.size());
    bytes += data.size();
    if (bytes > fail_after) return absl::ResourceExhaustedError("sink full");
    return absl::OkStatus();
  }
  absl::Status Finish() override {
    ++finishes;
    return absl::OkStatus();
  }

  size_t fail_after = SIZE_MAX;
  size_t appends = 0;
  size_t max_append = 0;
  size_t bytes = 0;
  int finishes = 0;
};

// ------------------------------------------------------------ interrupts

// xz with workers blocks an Append while every worker is busy with a block;
// an interrupt ends that wait with Cancelled instead of the block's end.
TEST(CodecTest, MultiThreadedXzAppendIsInterruptible) {
  // Level 1: 3 MiB blocks; 16 MiB of random bytes keep two workers busy
  // long past the encoder's 50 ms wait.
  const std::string input = RandomBytes(16 << 20, 11);
  StringSink sink;
  int asked = 0;
  absl::StatusOr<std::unique_ptr<ByteSink>> encoder =
      NewEncoder(Codec::kXz, 1, 2, &sink, [&asked] { return ++asked >= 1; });
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  absl::Status status = (*encoder)->Append(input);
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  EXPECT_GE(asked, 1);
  encoder->reset();  // the workers stop; nothing is left running

  // Never interrupted: the same input compresses whole.
  StringSink whole;
  encoder = NewEncoder(Codec::kXz, 1, 2, &whole, [] { return false; });
  ASSERT_TRUE(encoder.ok());
  ASSERT_TRUE((*encoder)->Append(input).ok());
  ASSERT_TRUE((*encoder)->Finish().ok());
  StringSink decoded;
  ASSERT_TRUE(Decode(Codec::kXz, whole.data(), &decoded, nullptr).ok());
  EXPECT_TRUE(decoded.data() == input);
}

// ---------------------------------------------------------------- names

TEST(CodecTest, Names) {
  const char* names[] = {"none", "zlib", "gzip", "bz2",
                         "lzma", "xz",   "lz4",  "zstd"};
  for (int i = 0; i < 8; ++i) {
    Codec codec = static_cast<Codec>(i);
    EXPECT_EQ(CodecName(codec), names[i]);
  }
  EXPECT_EQ(CodecName(static_cast<Codec>(8)), "unknown");
}

TEST(CodecTest, DefaultLevelsAreJoblibs) {
  EXPECT_EQ(DefaultLevel(Codec::kZlib), 3);
  EXPECT_EQ(DefaultLevel(Codec::kGzip), 3);
  EXPECT_EQ(DefaultLevel(Codec::kBz2), 9);
  EXPECT_EQ(DefaultLevel(Codec::kLzma), 6);
  EXPECT_EQ(DefaultLevel(Codec::kXz), 6);
  EXPECT_EQ(DefaultLevel(Codec::kLz4), 0);
  EXPECT_EQ(DefaultLevel(Codec::kZstd), 3);
  EXPECT_EQ(DefaultLevel(Codec::kNone), 0);
}

// ------------------------------------------------------------ detection

TEST(DetectCodecTest, MagicBytes) {
  EXPECT_EQ(DetectCodec("\x78\x9c"), Codec::kZlib);
  EXPECT_EQ(DetectCodec("\x78"), Codec::kZlib);
  EXPECT_EQ(DetectCodec("\x1f\x8b\x08"), Codec::kGzip);
  EXPECT_EQ(DetectCodec("BZh9"), Codec::kBz2);
  EXPECT_EQ(DetectCodec(absl::string_view("\x5d\x00\x00\x80\x00", 5)),
            Codec::kLzma);
  EXPECT_EQ(DetectCodec("\xfd\x37\x7a\x58\x5a"), Codec::kXz);
  EXPECT_EQ(DetectCodec("\x04\x22\x4d\x18\x40"), Codec::kLz4);
  EXPECT_EQ(DetectCodec("\x28\xb5\x2f\xfd"), Codec::kZstd);
}

TEST(DetectCodecTest, EverythingElseIsNone) {
  EXPECT_EQ(DetectCodec(""), Codec::kNone);
  EXPECT_EQ(DetectCodec("\x80\x04\x95"), Codec::kNone);  // pickle PROTO 4
  EXPECT_EQ(DetectCodec("ZF0x1f4"), Codec::kNone);       // legacy, caller's
  EXPECT_EQ(DetectCodec("B"), Codec::kNone);
  EXPECT_EQ(DetectCodec("\x1f"), Codec::kNone);
  EXPECT_EQ(DetectCodec("\x5d\x01"), Codec::kNone);
  EXPECT_EQ(DetectCodec("\xfd\x37\x7a\x58"), Codec::kNone);
  EXPECT_EQ(DetectCodec("\x04\x22\x4d"), Codec::kNone);
  EXPECT_EQ(DetectCodec("\x28\xb5\x2f\xfe"), Codec::kNone);
}

// ------------------------------------------------------------- levels

TEST(LevelTest, AcceptsEachCodecsRange) {
  for (Codec codec : kCodecs) EXPECT_TRUE(ValidateLevel(codec, -1).ok());
  for (int level = 1; level <= 9; ++level) {
    EXPECT_TRUE(ValidateLevel(Codec::kZlib, level).ok());
    EXPECT_TRUE(ValidateLevel(Codec::kGzip, level).ok());
    EXPECT_TRUE(ValidateLevel(Codec::kBz2, level).ok());
  }
  EXPECT_TRUE(ValidateLevel(Codec::kLzma, 0).ok());
  EXPECT_TRUE(ValidateLevel(Codec::kXz, 9).ok());
  EXPECT_TRUE(ValidateLevel(Codec::kLz4, 0).ok());
  EXPECT_TRUE(ValidateLevel(Codec::kLz4, 16).ok());
  EXPECT_TRUE(ValidateLevel(Codec::kZstd, 22).ok());
  EXPECT_TRUE(ValidateLevel(Codec::kZstd, -7).ok());
  EXPECT_TRUE(ValidateLevel(Codec::kZstd, -2).ok());
  EXPECT_TRUE(ValidateLevel(Codec::kZstd, -131072).ok());
  EXPECT_TRUE(ValidateLevel(Codec::kNone, 5).ok());
}

TEST(LevelTest, RejectsOthersWithAUsefulMessage) {
  struct Case {
    Codec codec;
    int level;
    const char* range;
  };
  const Case cases[] = {
      {Codec::kZlib, 0, "1..9"},   {Codec::kZlib, 10, "1..9"},
      {Codec::kGzip, -2, "1..9"},  {Codec::kBz2, 0, "1..9"},
      {Codec::kLzma, 10, "0..9"},  {Codec::kXz, -3, "0..9"},
      {Codec::kLz4, 17, "0..16"},  {Codec::kLz4, -2, "0..16"},
      {Codec::kZstd, 23, "1..22"}, {Codec::kZstd, 0, "1..22"},
      {Codec::kZstd, -131073, "-131072..-2"},
  };
  for (const Case& c : cases) {
    StringSink sink;
    absl::StatusOr<std::unique_ptr<ByteSink>> encoder =
        NewEncoder(c.codec, c.level, 1, &sink);
    ASSERT_FALSE(encoder.ok()) << CodecName(c.codec) << " " << c.level;
    EXPECT_EQ(encoder.status().code(), absl::StatusCode::kInvalidArgument);
    std::string message(encoder.status().message());
    EXPECT_NE(message.find(std::string(CodecName(c.codec))), std::string::npos)
        << message;
    EXPECT_NE(message.find(absl::StrCat(" ", c.level, ";")), std::string::npos)
        << message;
    EXPECT_NE(message.find(c.range), std::string::npos) << message;
  }
}

TEST(LevelTest, UnknownCodecIsInvalidArgument) {
  StringSink sink;
  Codec bogus = static_cast<Codec>(9);
  EXPECT_EQ(NewEncoder(bogus, -1, 1, &sink).status().code(),
            absl::StatusCode::kInvalidArgument);
  size_t consumed = 0;
  EXPECT_EQ(Decode(bogus, "x", &sink, &consumed).code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------- round trips

struct Inputs {
  std::string empty;
  std::string one = "\x80";
  std::string randomish = RandomishBytes(3 << 20);
  std::string compressible = CompressibleBytes(10 << 20);
};

const Inputs& TestInputs() {
  static const Inputs* inputs = new Inputs;
  return *inputs;
}

class RoundTripTest
    : public ::testing::TestWithParam<std::tuple<Codec, int, int>> {};

TEST_P(RoundTripTest, DecodesToTheInput) {
  auto [codec, level, threads] = GetParam();
  const Inputs& in = TestInputs();
  for (const std::string* input :
       {&in.empty, &in.one, &in.randomish, &in.compressible}) {
    SCOPED_TRACE(absl::StrCat(CodecName(codec), " level ", level, " threads ",
                              threads, " size ", input->size()));
    std::string encoded = Encode(codec, level, threads, *input);
    if (codec != Codec::kNone) {
      EXPECT_EQ(DetectCodec(encoded), codec);
    }
    StringSink decoded;
    size_t consumed = 0;
    absl::Status status = Decode(codec, encoded, &decoded, &consumed);
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_EQ(consumed, encoded.size());
    ASSERT_EQ(decoded.data().size(), input->size());
    EXPECT_TRUE(decoded.data() == *input);
    if (input == &in.compressible && codec != Codec::kNone) {
      EXPECT_LT(encoded.size(), input->size() / 4);
    }
  }
}

std::vector<std::tuple<Codec, int, int>> RoundTripCases() {
  std::vector<std::tuple<Codec, int, int>> cases;
  auto add = [&](Codec codec, std::vector<int> levels,
                 std::vector<int> thread_counts) {
    for (int level : levels) {
      for (int threads : thread_counts) {
        cases.emplace_back(codec, level, threads);
      }
    }
  };
  // bz2 and lzma have no parallel encoder: threads is ignored.
  add(Codec::kNone, {-1}, {1});
  add(Codec::kZlib, {1, -1, 6, 9}, {1, 2});
  add(Codec::kGzip, {1, -1, 9}, {1, 2});
  add(Codec::kBz2, {1, -1}, {1});
  add(Codec::kLzma, {0, -1}, {1});
  add(Codec::kXz, {0, -1}, {1, 2});
  add(Codec::kLz4, {-1, 1, 9}, {1, 2});
  add(Codec::kZstd, {-5, 1, -1, 12}, {1, 2});
  return cases;
}

std::string RoundTripName(
    const ::testing::TestParamInfo<std::tuple<Codec, int, int>>& info) {
  Codec codec = std::get<0>(info.param);
  int level = std::get<1>(info.param);
  int threads = std::get<2>(info.param);
  return absl::StrCat(
      CodecName(codec), "_level",
      level < 0 ? absl::StrCat("m", -level) : absl::StrCat(level), "_threads",
      threads);
}

INSTANTIATE_TEST_SUITE_P(AllCodecs, RoundTripTest,
                         ::testing::ValuesIn(RoundTripCases()), RoundTripName);

TEST(RoundTripTest, ExtremeLevelsOnSmallInputs) {
  const std::string input =
      RandomishBytes(150000) + CompressibleBytes(300000) + RandomishBytes(10);
  const std::pair<Codec, int> cases[] = {
      {Codec::kBz2, 9},   {Codec::kLzma, 9},  {Codec::kXz, 9},
      {Codec::kLz4, 12},  {Codec::kLz4, 16},  {Codec::kZstd, 19},
      {Codec::kZstd, 22}, {Codec::kZstd, -50}};
  for (const auto& [codec, level] : cases) {
    for (int threads : {1, 2}) {
      SCOPED_TRACE(absl::StrCat(CodecName(codec), " level ", level,
                                " threads ", threads));
      std::string encoded = Encode(codec, level, threads, input);
      StringSink decoded;
      size_t consumed = 0;
      ASSERT_TRUE(Decode(codec, encoded, &decoded, &consumed).ok());
      EXPECT_EQ(consumed, encoded.size());
      EXPECT_TRUE(decoded.data() == input);
    }
  }
}

// ------------------------------------------------------- exact headers

TEST(HeaderTest, ZlibHeaderFollowsTheLevel) {
  const std::pair<int, absl::string_view> cases[] = {
      {1, "\x78\x01"}, {2, "\x78\x5e"}, {3, "\x78\x5e"},
      {5, "\x78\x5e"}, {6, "\x78\x9c"}, {7, "\x78\xda"}, {9, "\x78\xda"}};
  for (int threads : {1, 2}) {
    for (const auto& [level, header] : cases) {
      std::string encoded = Encode(Codec::kZlib, level, threads, "abc");
      EXPECT_EQ(encoded.substr(0, 2), header) << level << " " << threads;
    }
  }
}

TEST(HeaderTest, GzipHeaderIsZlibsWithoutNameOrTime) {
  for (int threads : {1, 2}) {
    EXPECT_EQ(Encode(Codec::kGzip, 1, threads, "abc").substr(0, 10),
              absl::string_view("\x1f\x8b\x08\0\0\0\0\0\x04\x03", 10));
    EXPECT_EQ(Encode(Codec::kGzip, 3, threads, "abc").substr(0, 10),
              absl::string_view("\x1f\x8b\x08\0\0\0\0\0\x00\x03", 10));
    EXPECT_EQ(Encode(Codec::kGzip, 9, threads, "abc").substr(0, 10),
              absl::string_view("\x1f\x8b\x08\0\0\0\0\0\x02\x03", 10));
  }
}

TEST(HeaderTest, OtherHeadersMatchPython) {
  EXPECT_EQ(Encode(Codec::kBz2, 9, 1, "abc").substr(0, 4), "BZh9");
  EXPECT_EQ(Encode(Codec::kBz2, 1, 1, "abc").substr(0, 4), "BZh1");
  // lzma_alone: lc/lp/pb byte 5d, dictionary 8 MiB (preset 6), size unknown.
  EXPECT_EQ(Encode(Codec::kLzma, 6, 1, "abc").substr(0, 13),
            absl::string_view("\x5d\x00\x00\x80\x00\xff\xff\xff\xff\xff\xff"
                              "\xff\xff",
                              13));
  // xz: magic, stream flags 00 04 (CRC64).
  EXPECT_EQ(Encode(Codec::kXz, 6, 1, "abc").substr(0, 8),
            absl::string_view("\xfd\x37\x7a\x58\x5a\x00\x00\x04", 8));
  EXPECT_EQ(Encode(Codec::kXz, 6, 2, "abc").substr(0, 8),
            absl::string_view("\xfd\x37\x7a\x58\x5a\x00\x00\x04", 8));
  // lz4: FLG 40 (linked, no checksum, no size), BD 40 (64 KiB), as
  // python-lz4's LZ4FrameFile; the parallel encoder sets independent blocks.
  EXPECT_EQ(Encode(Codec::kLz4, 0, 1, "abc").substr(0, 6),
            "\x04\x22\x4d\x18\x40\x40");
  EXPECT_EQ(Encode(Codec::kLz4, 0, 2, "abc").substr(0, 6),
            "\x04\x22\x4d\x18\x60\x40");
  // lz4 end mark.
  std::string lz4 = Encode(Codec::kLz4, 0, 1, "abc");
  EXPECT_EQ(lz4.substr(lz4.size() - 4), absl::string_view("\0\0\0\0", 4));
}

// -------------------------------------------------- trailing data (#1161)

TEST(TrailingDataTest, ConsumedExcludesWhatFollowsTheStream) {
  const std::string input = CompressibleBytes(3 << 20) + RandomBytes(5000, 3);
  for (Codec codec : kCompressors) {
    for (int threads : {1, 2}) {
      SCOPED_TRACE(absl::StrCat(CodecName(codec), " threads ", threads));
      std::string encoded = Encode(codec, FastLevel(codec), threads, input);
      const std::string suffixes[] = {
          std::string("garbage after the stream"),
          std::string(1, '\0'),
          std::string(1 << 20, '\xff'),
          Encode(codec, -1, 1, "second stream"),
      };
      for (const std::string& suffix : suffixes) {
        StringSink decoded;
        size_t consumed = 0;
        absl::Status status =
            Decode(codec, encoded + suffix, &decoded, &consumed);
        ASSERT_TRUE(status.ok()) << status;
        EXPECT_EQ(consumed, encoded.size());
        EXPECT_TRUE(decoded.data() == input);
      }
    }
  }
}

TEST(TrailingDataTest, NoneConsumesEverything) {
  StringSink decoded;
  size_t consumed = 0;
  ASSERT_TRUE(Decode(Codec::kNone, "abc", &decoded, &consumed).ok());
  EXPECT_EQ(consumed, 3u);
  EXPECT_EQ(decoded.data(), "abc");
}

// ------------------------------------------ concatenated streams (DecodeAll)

TEST(DecodeAllTest, FollowsConcatenatedStreamsWherePythonDoes) {
  const std::string a = CompressibleBytes(2 << 20);
  const std::string b = RandomishBytes(70000);
  for (Codec codec : kCompressors) {
    SCOPED_TRACE(CodecName(codec));
    std::string first = Encode(codec, FastLevel(codec), 1, a);
    std::string second = Encode(codec, FastLevel(codec), 2, b);
    const bool follows = codec == Codec::kBz2 || codec == Codec::kLzma ||
                         codec == Codec::kXz || codec == Codec::kLz4;
    for (absl::string_view tail : {absl::string_view(""),
                                   absl::string_view("not a stream")}) {
      std::string input = first + second + std::string(tail);
      StringSink decoded;
      size_t consumed = 0;
      ASSERT_TRUE(DecodeAll(codec, input, &decoded, &consumed).ok());
      if (follows) {
        EXPECT_EQ(consumed, first.size() + second.size());
        EXPECT_TRUE(decoded.data() == a + b);
      } else {
        EXPECT_EQ(consumed, first.size());
        EXPECT_TRUE(decoded.data() == a);
      }
    }
    if (follows) {
      // A second stream that starts but is cut short is an error.
      std::string input = first + second.substr(0, second.size() / 2);
      StringSink decoded;
      size_t consumed = 0;
      EXPECT_EQ(DecodeAll(codec, input, &decoded, &consumed).code(),
                absl::StatusCode::kDataLoss);
    }
  }
}

// ------------------------------------- streaming input (StreamDecoder)

// Hands out `data` in pieces of the given sizes (cycled), each copied into a
// buffer that the next Read overwrites, as a file reader's buffer is.
class PieceSource : public ByteSource {
 public:
  PieceSource(absl::string_view data, std::vector<size_t> steps)
      : data_(data), steps_(std::move(steps)) {}

  absl::StatusOr<absl::string_view> Read() override {
    ++reads;
    size_t n = std::min(data_.size() - pos_, steps_[reads % steps_.size()]);
    buffer_.assign(n, '\xee');  // scribble over what the last Read returned
    buffer_.assign(data_.data() + pos_, n);
    pos_ += n;
    return absl::string_view(buffer_);
  }

  size_t position() const { return pos_; }
  size_t reads = 0;

 private:
  absl::string_view data_;
  std::vector<size_t> steps_;
  size_t pos_ = 0;
  std::string buffer_;
};

TEST(StreamDecoderTest, AnyPieceSizesDecodeLikeDecode) {
  const std::string input = RandomishBytes(700000) + CompressibleBytes(900000);
  for (Codec codec : kCompressors) {
    for (int threads : {1, 2}) {
      std::string encoded = Encode(codec, FastLevel(codec), threads, input);
      encoded += "trailing bytes";
      for (size_t step : {size_t{1} + 0, size_t{7}, size_t{4096},
                          size_t{1} << 20, encoded.size()}) {
        if (step == 1 && threads == 2) continue;  // slow and redundant
        SCOPED_TRACE(absl::StrCat(CodecName(codec), " threads ", threads,
                                  " pieces of ", step));
        absl::StatusOr<std::unique_ptr<StreamDecoder>> decoder =
            NewStreamDecoder(codec);
        ASSERT_TRUE(decoder.ok());
        RecordingSink sizes;
        StringSink decoded;
        size_t pos = 0;
        bool done = false;
        while (!done) {
          ASSERT_LT(pos, encoded.size());
          absl::string_view piece =
              absl::string_view(encoded).substr(pos, step);
          size_t used = 0;
          ASSERT_TRUE((*decoder)->Feed(piece, &decoded, &used, &done).ok());
          if (!done) EXPECT_EQ(used, piece.size());
          pos += used;
        }
        EXPECT_EQ(pos, encoded.size() - strlen("trailing bytes"));
        EXPECT_TRUE(decoded.data() == input);
        size_t used = 0;
        EXPECT_EQ((*decoder)->Feed("x", &decoded, &used, &done).code(),
                  absl::StatusCode::kFailedPrecondition);
      }
    }
  }
  EXPECT_EQ(NewStreamDecoder(Codec::kNone).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NewStreamDecoder(static_cast<Codec>(42)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(StreamDecoderTest, OutputComesInLargeChunks) {
  const std::string input = CompressibleBytes(6 << 20);
  for (Codec codec : kCompressors) {
    SCOPED_TRACE(CodecName(codec));
    std::string encoded = Encode(codec, FastLevel(codec), 1, input);
    absl::StatusOr<std::unique_ptr<StreamDecoder>> decoder =
        NewStreamDecoder(codec);
    ASSERT_TRUE(decoder.ok());
    RecordingSink sink;
    bool done = false;
    for (size_t pos = 0; !done; pos += 1000) {
      size_t used = 0;
      ASSERT_TRUE((*decoder)
                      ->Feed(absl::string_view(encoded).substr(pos, 1000),
                             &sink, &used, &done)
                      .ok());
    }
    EXPECT_EQ(sink.bytes, input.size());
    EXPECT_LE(sink.max_append, size_t{1} << 20);
    EXPECT_LE(sink.appends, 8u);  // not one append per piece of input
  }
}

TEST(DecodeAllFromTest, MatchesDecodeAllForEveryPieceSize) {
  const std::string a = CompressibleBytes(1 << 20);
  const std::string b = RandomishBytes(70000);
  for (Codec codec : kCodecs) {
    std::string first = Encode(codec, FastLevel(codec), 1, a);
    std::string second = Encode(codec, FastLevel(codec), 2, b);
    for (absl::string_view tail :
         {absl::string_view(""), absl::string_view("not a stream"),
          absl::string_view("\x04")}) {
      const std::string input = first + second + std::string(tail);
      StringSink expected;
      size_t expected_consumed = 0;
      ASSERT_TRUE(
          DecodeAll(codec, input, &expected, &expected_consumed).ok());
      // Steps that end a piece inside the second stream's magic, too.
      for (std::vector<size_t> steps :
           {std::vector<size_t>{4096}, std::vector<size_t>{first.size() - 1, 3},
            std::vector<size_t>{first.size() + 2, 1, 1, 1, 1, 100000},
            std::vector<size_t>{input.size()}}) {
        SCOPED_TRACE(absl::StrCat(CodecName(codec), " tail '", tail,
                                  "' first step ", steps[0]));
        // PieceSource cycles from steps[1]: rotate so steps[0] comes first.
        std::rotate(steps.rbegin(), steps.rbegin() + 1, steps.rend());
        PieceSource source(input, steps);
        StringSink decoded;
        uint64_t consumed = 0;
        absl::Status status = DecodeAllFrom(codec, &source, &decoded, &consumed);
        ASSERT_TRUE(status.ok()) << status;
        EXPECT_EQ(consumed, codec == Codec::kNone ? input.size()
                                                  : expected_consumed);
        EXPECT_TRUE(decoded.data() == expected.data());
      }
    }
  }
}

TEST(DecodeAllFromTest, AnotherStopsAtAStreamBoundary) {
  const std::string a = CompressibleBytes(300000);
  for (Codec codec : {Codec::kBz2, Codec::kXz, Codec::kLz4}) {
    SCOPED_TRACE(CodecName(codec));
    std::string one = Encode(codec, FastLevel(codec), 1, a);
    std::string input = one + one + one;
    PieceSource source(input, {1000});
    StringSink decoded;
    uint64_t consumed = 0;
    int asked = 0;
    ASSERT_TRUE(DecodeAllFrom(codec, &source, &decoded, &consumed,
                              [&asked] { return ++asked < 2; })
                    .ok());
    EXPECT_EQ(asked, 2);
    EXPECT_EQ(consumed, 2 * one.size());
    EXPECT_TRUE(decoded.data() == a + a);
    EXPECT_LT(source.position(), input.size());  // the third never read whole
  }
}

TEST(DecodeAllFromTest, CutsAreTruncationErrors) {
  const std::string input = RandomishBytes(200000) + CompressibleBytes(200000);
  for (Codec codec : kCompressors) {
    std::string encoded = Encode(codec, FastLevel(codec), 1, input);
    for (size_t cut : {size_t{0}, size_t{3}, encoded.size() / 2,
                       encoded.size() - 1}) {
      SCOPED_TRACE(absl::StrCat(CodecName(codec), " cut at ", cut));
      PieceSource source(absl::string_view(encoded).substr(0, cut), {5000});
      StringSink decoded;
      uint64_t consumed = 7;
      absl::Status status = DecodeAllFrom(codec, &source, &decoded, &consumed);
      EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
      EXPECT_EQ(status.message(),
                absl::StrCat(CodecName(codec),
                             " stream is truncated (file ends before the "
                             "end mark)"));
      EXPECT_EQ(consumed, 7u);
    }
  }
}

TEST(DecodeAllFromTest, SourceErrorsPropagate) {
  class FailingSource : public ByteSource {
   public:
    absl::StatusOr<absl::string_view> Read() override {
      return absl::AbortedError("the file shrank");
    }
  } source;
  for (Codec codec : kCodecs) {
    StringSink decoded;
    uint64_t consumed = 0;
    EXPECT_EQ(DecodeAllFrom(codec, &source, &decoded, &consumed).code(),
              absl::StatusCode::kAborted);
  }
}

// ------------------------------------------------- truncated and corrupt

// Decodes `frame` as zstd whole with Decode, then with DecodeAllFrom in
// pieces of each of `steps` bytes, all into `decoded`: every way must be
// DataLoss.
void ExpectZstdDataLossHoweverFed(absl::string_view frame,
                                  std::initializer_list<size_t> steps,
                                  StringSink* decoded) {
  EXPECT_EQ(Decode(Codec::kZstd, frame, decoded, nullptr).code(),
            absl::StatusCode::kDataLoss);
  for (size_t step : steps) {
    SCOPED_TRACE(absl::StrCat("pieces of ", step));
    PieceSource source(frame, {step});
    uint64_t consumed = 0;
    absl::Status status =
        DecodeAllFrom(Codec::kZstd, &source, decoded, &consumed);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  }
}

// Found by server/fuzz:codec_fuzzer: libzstd checks the content size a
// frame header declares only when it decodes the frame in one pass, so this
// frame was corrupt for Decode and an empty stream when fed in pieces.
TEST(CorruptionTest, ZstdContentSizeIsCheckedHoweverTheFrameIsFed) {
  // Magic; header: single segment, checksum, content size 50; an empty
  // last raw block; the checksum of no bytes.
  const std::string frame(
      "\x28\xb5\x2f\xfd" "\x24\x32" "\x01\x00\x00" "\x99\xe9\xd8\x51", 13);
  StringSink decoded;
  ExpectZstdDataLossHoweverFed(frame, {1, 5, 12}, &decoded);
  EXPECT_TRUE(decoded.data().empty());
}

// Found by server/fuzz:codec_fuzzer: libzstd decodes a legacy (v0.6) frame
// only when its magic number arrives in one piece. Only standard frames are
// zstd, as for DetectCodec, however they are fed.
TEST(CorruptionTest, ZstdDecodesOnlyStandardFramesHoweverFed) {
  const std::string legacy("\x26\xb5\x2f\xfd" "\x04\x58\x00\x00", 8);
  const std::string skippable("\x50\x2a\x4d\x18" "\x00\x00\x00\x00", 8);
  for (const std::string& frame : {legacy, skippable}) {
    StringSink decoded;
    ExpectZstdDataLossHoweverFed(frame, {1, 3, frame.size()}, &decoded);
  }
}

// Found by server/fuzz:codec_fuzzer: libzstd decodes a frame that arrives
// whole in one pass, which rejects an empty compressed block that its
// streaming decoder accepts. Decode and DecodeAllFrom must agree.
TEST(CorruptionTest, ZstdEmptyCompressedBlockIsTheSameHoweverFed) {
  // Magic; header: single segment, checksum, content size 0; an empty last
  // compressed block; the checksum of no bytes; bytes after the frame.
  const std::string input(
      "\x28\xb5\x2f\xfd" "\x24\x00" "\x05\x00\x00" "\x99\xe9\xd8\x51" "us",
      15);
  StringSink whole;
  size_t whole_consumed = 0;
  const absl::Status status =
      Decode(Codec::kZstd, input, &whole, &whole_consumed);
  for (size_t step : {size_t{1}, size_t{5}, input.size()}) {
    SCOPED_TRACE(absl::StrCat("pieces of ", step));
    PieceSource source(input, {step});
    StringSink pieces;
    uint64_t consumed = 0;
    absl::Status from =
        DecodeAllFrom(Codec::kZstd, &source, &pieces, &consumed);
    EXPECT_EQ(from.code(), status.code()) << from << " / " << status;
    if (status.ok() && from.ok()) {
      EXPECT_EQ(consumed, whole_consumed);
      EXPECT_EQ(pieces.data(), whole.data());
    }
  }
}

TEST(TruncationTest, EveryCutIsDataLossNamingTheCodec) {
  const std::string input = RandomishBytes(300000) + CompressibleBytes(300000);
  for (Codec codec : kCompressors) {
    for (int threads : {1, 2}) {
      std::string encoded = Encode(codec, -1, threads, input);
      std::vector<size_t> cuts = {0, 1, 2, 3, 5, 9, 12, 18};
      for (size_t cut = 20; cut < encoded.size(); cut += encoded.size() / 37) {
        cuts.push_back(cut);
      }
      for (size_t back = 1; back <= 12; ++back) {
        cuts.push_back(encoded.size() - back);
      }
      for (size_t cut : cuts) {
        SCOPED_TRACE(absl::StrCat(CodecName(codec), " threads ", threads,
                                  " cut at ", cut, " of ", encoded.size()));
        StringSink decoded;
        size_t consumed = 12345;
        absl::Status status = Decode(codec, absl::string_view(encoded).substr(
                                                0, cut),
                                     &decoded, &consumed);
        EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
        EXPECT_EQ(status.message(),
                  absl::StrCat(CodecName(codec),
                               " stream is truncated (file ends before the "
                               "end mark)"));
        EXPECT_EQ(consumed, 12345u);  // untouched on error
      }
    }
  }
}

TEST(CorruptionTest, FlippedBytesNeverCrash) {
  const std::string input = RandomishBytes(50000) + CompressibleBytes(100000);
  for (Codec codec : kCompressors) {
    std::string encoded = Encode(codec, -1, 1, input);
    int errors = 0;
    int trials = 0;
    for (size_t pos = 0; pos < encoded.size();
         pos += 1 + encoded.size() / 200) {
      for (int mask : {0x01, 0xff}) {
        std::string bad = encoded;
        bad[pos] = static_cast<char>(bad[pos] ^ mask);
        StringSink decoded;
        size_t consumed = 0;
        absl::Status status = Decode(codec, bad, &decoded, &consumed);
        ++trials;
        if (!status.ok()) {
          ++errors;
          EXPECT_TRUE(status.code() == absl::StatusCode::kDataLoss ||
                      status.code() == absl::StatusCode::kResourceExhausted)
              << status;
          EXPECT_EQ(status.message().substr(0, CodecName(codec).size()),
                    CodecName(codec))
              << status;
        } else {
          EXPECT_LE(consumed, bad.size());
        }
      }
    }
    SCOPED_TRACE(CodecName(codec));
    EXPECT_GT(errors, 0);
    // With a checksum (all but lz4 as joblib writes it), nearly every flip
    // in the payload must be caught.
    if (codec != Codec::kLz4) {
      EXPECT_GT(errors, trials * 9 / 10);
    }
  }
}

TEST(CorruptionTest, GarbageAfterTheMagicIsAnError) {
  const std::string garbage = RandomBytes(100000, 7);
  const absl::string_view magics[] = {
      "\x78\x9c", "\x1f\x8b\x08\x00", "BZh9", absl::string_view("\x5d\x00", 2),
      "\xfd\x37\x7a\x58\x5a", "\x04\x22\x4d\x18", "\x28\xb5\x2f\xfd"};
  for (size_t i = 0; i < 7; ++i) {
    StringSink decoded;
    size_t consumed = 0;
    std::string bad = std::string(magics[i]) + garbage;
    absl::Status status = Decode(kCompressors[i], bad, &decoded, &consumed);
    EXPECT_FALSE(status.ok()) << CodecName(kCompressors[i]);
  }
}

// --------------------------------------------- gzip headers from others

TEST(GzipTest, DecodesHeadersWithNameAndComment) {
  const std::string input = CompressibleBytes(100000);
  z_stream stream{};
  ASSERT_EQ(deflateInit2(&stream, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY),
            Z_OK);
  gz_header header{};
  char name[] = "model.pkl";
  char comment[] = "written by gzip(1)";
  header.name = reinterpret_cast<Bytef*>(name);
  header.comment = reinterpret_cast<Bytef*>(comment);
  header.time = 1700000000;
  header.hcrc = 1;
  ASSERT_EQ(deflateSetHeader(&stream, &header), Z_OK);
  std::string encoded(deflateBound(&stream, input.size()) + 100, '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(input.data()));
  stream.avail_in = static_cast<uInt>(input.size());
  stream.next_out = reinterpret_cast<Bytef*>(&encoded[0]);
  stream.avail_out = static_cast<uInt>(encoded.size());
  ASSERT_EQ(deflate(&stream, Z_FINISH), Z_STREAM_END);
  encoded.resize(stream.total_out);
  deflateEnd(&stream);

  EXPECT_EQ(DetectCodec(encoded), Codec::kGzip);
  StringSink decoded;
  size_t consumed = 0;
  ASSERT_TRUE(Decode(Codec::kGzip, encoded, &decoded, &consumed).ok());
  EXPECT_EQ(consumed, encoded.size());
  EXPECT_TRUE(decoded.data() == input);
}

// ------------------------------- zlib and gzip: ISA-L and zlib (libraries)

// Compresses with zlib itself, as Python's zlib and gzip modules do (one
// deflate call with all the input, then Z_FINISH), optionally with flushes
// of the given kind after each `flush_every` bytes.
std::string ZlibDeflate(absl::string_view input, int level, int window_bits,
                        int mem_level = 8, int strategy = Z_DEFAULT_STRATEGY,
                        size_t flush_every = 0, int flush = Z_NO_FLUSH) {
  z_stream stream{};
  EXPECT_EQ(deflateInit2(&stream, level, Z_DEFLATED, window_bits, mem_level,
                         strategy),
            Z_OK);
  std::string out(deflateBound(&stream, input.size()) + 1024 +
                      (flush_every > 0 ? input.size() / flush_every * 16 : 0),
                  '\0');
  stream.next_out = reinterpret_cast<Bytef*>(&out[0]);
  stream.avail_out = static_cast<uInt>(out.size());
  size_t step =
      flush_every > 0 ? flush_every : std::max<size_t>(input.size(), 1);
  for (size_t pos = 0; pos < input.size(); pos += step) {
    size_t n = std::min(step, input.size() - pos);
    stream.next_in = reinterpret_cast<Bytef*>(
        const_cast<char*>(input.data() + pos));
    stream.avail_in = static_cast<uInt>(n);
    EXPECT_EQ(deflate(&stream, flush_every > 0 ? flush : Z_NO_FLUSH), Z_OK);
    EXPECT_EQ(stream.avail_in, 0u);
  }
  EXPECT_EQ(deflate(&stream, Z_FINISH), Z_STREAM_END);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

// Decompresses one stream with zlib's inflate, as Python's zlib.decompress
// (wbits 15) and gzip module (wbits 31) do. False if zlib rejects it or it
// does not end exactly at the end of `stream`.
bool ZlibInflate(absl::string_view stream, bool gzip, std::string* out) {
  z_stream z{};
  if (inflateInit2(&z, gzip ? 31 : 15) != Z_OK) return false;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(stream.data()));
  z.avail_in = static_cast<uInt>(stream.size());
  std::string buffer(1 << 16, '\0');
  int rc = Z_OK;
  while (rc == Z_OK) {
    z.next_out = reinterpret_cast<Bytef*>(&buffer[0]);
    z.avail_out = static_cast<uInt>(buffer.size());
    rc = inflate(&z, Z_NO_FLUSH);
    out->append(buffer.data(), buffer.size() - z.avail_out);
    if (rc == Z_BUF_ERROR && z.avail_in == 0) break;  // truncated
  }
  bool ok = rc == Z_STREAM_END && z.avail_in == 0;
  inflateEnd(&z);
  return ok;
}

// int64 child indices of a tree ensemble (-1 for a leaf): data on which
// ISA-L's deflate is far (~17%) larger than zlib's.
std::string TreeLikeBytes(size_t size) {
  std::string out;
  out.reserve(size + 8);
  uint64_t x = 88172645463325252ull;
  for (int64_t i = 0; out.size() < size; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    int64_t child = (x & 1) ? -1 : i + 1;
    out.append(reinterpret_cast<const char*>(&child), sizeof(child));
  }
  out.resize(size);
  return out;
}

// ISA-L level 2 alone, as one zlib stream.
size_t IsalOnlySize(absl::string_view input) {
  auto stream = std::make_unique<isal_zstream>();
  isal_deflate_init(stream.get());
  std::vector<uint8_t> level_buf(ISAL_DEF_LVL2_DEFAULT);
  stream->level = 2;
  stream->level_buf = level_buf.data();
  stream->level_buf_size = static_cast<uint32_t>(level_buf.size());
  stream->gzip_flag = IGZIP_ZLIB;
  stream->end_of_stream = 1;
  std::string out(2 * input.size() + 4096, '\0');
  stream->next_in = reinterpret_cast<uint8_t*>(const_cast<char*>(input.data()));
  stream->avail_in = static_cast<uint32_t>(input.size());
  stream->next_out = reinterpret_cast<uint8_t*>(&out[0]);
  stream->avail_out = static_cast<uint32_t>(out.size());
  while (stream->internal_state.state != ZSTATE_END) {
    if (isal_deflate(stream.get()) != COMP_OK) return 0;
  }
  return stream->total_out;
}

TEST(ZlibCompatTest, PythonsInflateReadsEveryLevelAndThreadCount) {
  // Levels 1-3 mix blocks of ISA-L and zlib, 4-9 are zlib's: whatever the
  // library, zlib's inflate (Python's zlib and gzip modules, hence joblib)
  // must read the stream back, as one stream, with its checksum. The mixed
  // input makes levels 1-3 use both libraries in one stream.
  const Inputs& in = TestInputs();
  const std::string mixed = in.randomish.substr(0, 1 << 20) +
                            TreeLikeBytes(1 << 20) +
                            in.compressible.substr(0, 2 << 20) + "tail";
  for (Codec codec : {Codec::kZlib, Codec::kGzip}) {
    for (int level = 1; level <= 9; ++level) {
      for (int threads : {1, 2}) {
        for (const std::string* input : {&in.empty, &in.one, &mixed}) {
          SCOPED_TRACE(absl::StrCat(CodecName(codec), " level ", level,
                                    " threads ", threads, " size ",
                                    input->size()));
          std::string encoded = Encode(codec, level, threads, *input);
          std::string decoded;
          ASSERT_TRUE(ZlibInflate(encoded, codec == Codec::kGzip, &decoded));
          EXPECT_TRUE(decoded == *input);
        }
      }
    }
  }
}

TEST(ZlibCompatTest, ByteIdenticalToPythonWhereZlibEncodes) {
  // Levels 4-9 on one thread are zlib's own deflate with Python's
  // parameters, so the bytes are exactly zlib.compress's / gzip's (mtime 0).
  // Levels 1-3 are no longer compared (they were zlib's too before): they
  // are cut into blocks, most compressed by ISA-L (several times faster;
  // see zlib_codec.cc), so only the header and what inflate reads back
  // match Python's -- PythonsInflateReadsEveryLevelAndThreadCount checks
  // that instead. Parallel streams (threads > 1) never matched byte for
  // byte: their blocks are sync-flushed.
  const std::string input =
      RandomishBytes(300000) + CompressibleBytes(700000) + RandomishBytes(5);
  for (int level = 4; level <= 9; ++level) {
    SCOPED_TRACE(level);
    EXPECT_TRUE(Encode(Codec::kZlib, level, 1, input) ==
                ZlibDeflate(input, level, 15));
    EXPECT_TRUE(Encode(Codec::kGzip, level, 1, input) ==
                ZlibDeflate(input, level, 31));
  }
}

TEST(ZlibCompatTest, LevelsOneToThreeStayCloseToZlibsSize) {
  // Levels 1-3 choose ISA-L or zlib per 1 MiB block so that the stream
  // stays within 5% of what zlib (joblib) writes at the same level -- for
  // the default, 3, of zlib level 3's size -- even on data where ISA-L
  // alone is far larger.
  const Inputs& in = TestInputs();
  const std::string trees = TreeLikeBytes(4 << 20);
  ASSERT_GT(IsalOnlySize(trees), ZlibDeflate(trees, 3, 15).size() * 1.10);
  for (const std::string* input : {&in.randomish, &in.compressible, &trees}) {
    for (int level = 1; level <= 3; ++level) {
      const double zlib = ZlibDeflate(*input, level, 15).size();
      for (int threads : {1, 2}) {
        SCOPED_TRACE(absl::StrCat("level ", level, " threads ", threads,
                                  " size ", input->size()));
        EXPECT_LE(Encode(Codec::kZlib, level, threads, *input).size(),
                  zlib * 1.05);
      }
    }
  }
}

TEST(ZlibCompatTest, LevelsOneToThreeDoNotDependOnTheThreadCount) {
  // Blocks fall at the same offsets and each block's library is chosen
  // from the block alone, so every thread count writes the same bytes.
  const std::string input = RandomishBytes(1500000) + TreeLikeBytes(1 << 20) +
                            CompressibleBytes(1 << 20);
  for (Codec codec : {Codec::kZlib, Codec::kGzip}) {
    for (int level = 1; level <= 3; ++level) {
      SCOPED_TRACE(absl::StrCat(CodecName(codec), " level ", level));
      const std::string one = Encode(codec, level, 1, input);
      EXPECT_TRUE(Encode(codec, level, 2, input) == one);
      EXPECT_TRUE(Encode(codec, level, 3, input) == one);
    }
  }
}

// Streams zlib writes with every parameter a writer can choose, as other
// tools (gzip(1), pigz, Python with odd wbits) produce them.
std::vector<std::pair<std::string, std::string>> ZlibWrittenStreams(
    absl::string_view input, bool gzip) {
  std::vector<std::pair<std::string, std::string>> streams;
  const int wrap = gzip ? 16 : 0;
  for (int level = 0; level <= 9; ++level) {
    streams.emplace_back(absl::StrCat("level ", level),
                         ZlibDeflate(input, level, 15 + wrap));
  }
  for (int strategy : {Z_FILTERED, Z_HUFFMAN_ONLY, Z_RLE, Z_FIXED}) {
    streams.emplace_back(absl::StrCat("strategy ", strategy),
                         ZlibDeflate(input, 6, 15 + wrap, 8, strategy));
  }
  for (int window_bits : {9, 10, 12, 14}) {
    streams.emplace_back(absl::StrCat("window bits ", window_bits),
                         ZlibDeflate(input, 6, window_bits + wrap));
  }
  for (int mem_level : {1, 9}) {
    streams.emplace_back(absl::StrCat("mem level ", mem_level),
                         ZlibDeflate(input, 6, 15 + wrap, mem_level));
  }
  for (int flush : {Z_SYNC_FLUSH, Z_FULL_FLUSH, Z_PARTIAL_FLUSH, Z_BLOCK}) {
    for (size_t every : {size_t{1}, size_t{777}, size_t{100000}}) {
      if (every == 1 && input.size() > 5000) continue;  // slow, no news
      streams.emplace_back(absl::StrCat("flush ", flush, " every ", every),
                           ZlibDeflate(input, 1, 15 + wrap, 8,
                                       Z_DEFAULT_STRATEGY, every, flush));
    }
  }
  return streams;
}

TEST(ZlibDecodeTest, ReadsEveryStreamZlibWrites) {
  for (const std::string& input :
       {std::string(), std::string("a"), CompressibleBytes(3000),
        RandomishBytes(150000) + CompressibleBytes(250000)}) {
    for (Codec codec : {Codec::kZlib, Codec::kGzip}) {
      for (const auto& [what, stream] :
           ZlibWrittenStreams(input, codec == Codec::kGzip)) {
        for (size_t step : {size_t{1}, size_t{5}, size_t{4096}, size_t{0}}) {
          if (step == 1 && stream.size() > 20000) continue;
          SCOPED_TRACE(absl::StrCat(CodecName(codec), " ", what, " size ",
                                    input.size(), " pieces of ", step));
          const std::string fed = stream + "after";
          PieceSource source(fed, {step == 0 ? fed.size() : step});
          StringSink decoded;
          uint64_t consumed = 0;
          absl::Status status =
              DecodeAllFrom(codec, &source, &decoded, &consumed);
          ASSERT_TRUE(status.ok()) << status;
          EXPECT_EQ(consumed, stream.size());
          EXPECT_TRUE(decoded.data() == input);
        }
      }
    }
  }
}

TEST(ZlibDecodeTest, EverySplitFindsTheSameEnd) {
  // ISA-L reads up to 8 bytes ahead; wherever the pieces break, the stream
  // must end at the same byte and leave what follows alone.
  const std::string input = CompressibleBytes(2000) + RandomishBytes(300);
  for (Codec codec : {Codec::kZlib, Codec::kGzip}) {
    const int wbits = codec == Codec::kGzip ? 31 : 15;
    const std::pair<std::string, std::string> cases[] = {
        {Encode(codec, 3, 1, input), input},
        {Encode(codec, 3, 2, input), input},
        {Encode(codec, 9, 1, input), input},
        {ZlibDeflate(input, 6, wbits), input},
        {ZlibDeflate(input, 0, wbits), input},
        {ZlibDeflate("", 6, wbits), ""},
    };
    for (const auto& [stream, expected] : cases) {
      const std::string fed = stream + "0123456789abcdef";
      for (size_t first = 0; first <= fed.size(); ++first) {
        SCOPED_TRACE(absl::StrCat(CodecName(codec), " stream of ",
                                  stream.size(), " first piece ", first));
        absl::StatusOr<std::unique_ptr<StreamDecoder>> decoder =
            NewStreamDecoder(codec);
        ASSERT_TRUE(decoder.ok());
        StringSink decoded;
        size_t pos = 0;
        bool done = false;
        for (size_t piece = 0; !done; ++piece) {
          ASSERT_LT(pos, fed.size());
          // `first` bytes, then the rest: at once, or a byte at a time when
          // the break is near the end.
          size_t n = piece == 0 ? first
                     : first + 24 >= stream.size() ? 1
                                                   : fed.size() - pos;
          size_t used = 0;
          absl::Status status = (*decoder)->Feed(
              absl::string_view(fed).substr(pos, n), &decoded, &used, &done);
          ASSERT_TRUE(status.ok()) << status;
          if (!done) ASSERT_EQ(used, std::min(n, fed.size() - pos));
          pos += used;
        }
        ASSERT_EQ(pos, stream.size());
        ASSERT_TRUE(decoded.data() == expected);
      }
    }
  }
}

TEST(ZlibDecodeTest, WrapperErrorsUseZlibsWording) {
  const std::string zlib = ZlibDeflate(CompressibleBytes(5000), 6, 15);
  const std::string gzip = ZlibDeflate(CompressibleBytes(5000), 6, 31);
  auto with = [](std::string s, size_t pos, char byte) {
    s[pos] = byte;
    return s;
  };
  auto gzip_trailer_flip = [&](size_t from_end) {
    std::string s = gzip;
    s[s.size() - from_end] ^= 0x01;
    return s;
  };
  struct Case {
    Codec codec;
    std::string stream;
    const char* message;
  };
  const Case cases[] = {
      {Codec::kZlib, with(zlib, 1, '\x9d'),
       "zlib stream is corrupt near byte 0: incorrect header check"},
      {Codec::kZlib, std::string("\x77\x09") + zlib.substr(2),
       "zlib stream is corrupt near byte 0: unknown compression method"},
      {Codec::kZlib, std::string("\x88\x1c") + zlib.substr(2),
       "zlib stream is corrupt near byte 0: invalid window size"},
      {Codec::kZlib, std::string("\x78\xbb") + zlib.substr(2),
       "zlib stream is corrupt near byte 1: stream needs a preset "
       "dictionary"},
      {Codec::kZlib, with(zlib, zlib.size() - 1, zlib.back() ^ 1),
       "incorrect data check"},
      {Codec::kGzip, with(gzip, 1, '\x8c'),
       "gzip stream is corrupt near byte 0: incorrect header check"},
      {Codec::kGzip, with(gzip, 2, 7),
       "gzip stream is corrupt near byte 2: unknown compression method"},
      {Codec::kGzip, with(gzip, 3, '\x20'),
       "gzip stream is corrupt near byte 3: unknown header flags set"},
      {Codec::kGzip, with(gzip, 3, 2) /* FHCRC, but 2 payload bytes */,
       "gzip stream is corrupt near byte 10: header crc mismatch"},
      {Codec::kGzip, gzip_trailer_flip(8), "incorrect data check"},
      {Codec::kGzip, gzip_trailer_flip(4), "incorrect length check"},
  };
  for (const Case& c : cases) {
    StringSink decoded;
    size_t consumed = 0;
    absl::Status status = Decode(c.codec, c.stream, &decoded, &consumed);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << c.message;
    EXPECT_NE(status.message().find(c.message), std::string::npos)
        << status << " vs " << c.message;
  }
}

TEST(ZlibDecodeTest, PayloadErrorsFailInTheFeedThatBringsThem) {
  // Stored blocks (level 0): the second block's NLEN is made wrong, so the
  // stream is invalid from that byte on; the decoder must say so when that
  // byte arrives, not at the end.
  std::string stream = ZlibDeflate(RandomishBytes(1 << 20), 0, 15);
  ASSERT_EQ(stream[2] & 0x07, 0);  // not final, stored
  size_t len = static_cast<unsigned char>(stream[3]) |
               static_cast<unsigned char>(stream[4]) << 8;
  const size_t second = 2 + 5 + len;  // the second block's header byte
  ASSERT_EQ(stream[second] & 0x07, 0);
  stream[second + 3] ^= 0x01;  // NLEN no longer ~LEN
  absl::StatusOr<std::unique_ptr<StreamDecoder>> decoder =
      NewStreamDecoder(Codec::kZlib);
  ASSERT_TRUE(decoder.ok());
  StringSink decoded;
  absl::Status status;
  size_t pos = 0;
  while (status.ok() && pos < stream.size()) {
    size_t used = 0;
    bool done = false;
    status = (*decoder)->Feed(absl::string_view(stream).substr(pos, 4096),
                              &decoded, &used, &done);
    if (status.ok()) pos += used;
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_NE(status.message().find("invalid block"), std::string::npos)
      << status;
  EXPECT_LE(pos, second + 4);
  EXPECT_GT(pos + 4096, second + 4);
}

// ------------------------------------------------ sink usage and errors

TEST(SinkTest, EncoderWritesLargeChunksAndFinishesOutOnce) {
  const std::string input = RandomishBytes(5 << 20);
  for (Codec codec : kCodecs) {
    for (int threads : {1, 2}) {
      SCOPED_TRACE(absl::StrCat(CodecName(codec), " threads ", threads));
      RecordingSink sink;
      absl::StatusOr<std::unique_ptr<ByteSink>> encoder =
          NewEncoder(codec, FastLevel(codec), threads, &sink);
      ASSERT_TRUE(encoder.ok());
      for (size_t i = 0; i < input.size(); i += 1000) {
        ASSERT_TRUE((*encoder)->Append(input.substr(i, 1000)).ok());
      }
      EXPECT_EQ(sink.finishes, 0);
      ASSERT_TRUE((*encoder)->Finish().ok());
      EXPECT_EQ(sink.finishes, 1);
      if (codec != Codec::kNone) {
        // About 1 MiB per append, not one per input piece.
        EXPECT_LE(sink.appends, sink.bytes / (256 << 10) + 4);
      }
      EXPECT_EQ((*encoder)->Append("x").code(),
                absl::StatusCode::kFailedPrecondition);
      EXPECT_EQ((*encoder)->Finish().code(),
                absl::StatusCode::kFailedPrecondition);
      EXPECT_EQ(sink.finishes, 1);
    }
  }
}

TEST(SinkTest, DecodeFeedsLargeChunksAndDoesNotFinish) {
  const std::string input = CompressibleBytes(10 << 20);
  for (Codec codec : kCodecs) {
    SCOPED_TRACE(CodecName(codec));
    std::string encoded = Encode(codec, FastLevel(codec), 1, input);
    RecordingSink sink;
    size_t consumed = 0;
    ASSERT_TRUE(Decode(codec, encoded, &sink, &consumed).ok());
    EXPECT_EQ(sink.bytes, input.size());
    EXPECT_EQ(sink.finishes, 0);
    if (codec != Codec::kNone) {
      EXPECT_LE(sink.max_append, size_t{1} << 20);
      EXPECT_LE(sink.appends, 12u);
    }
  }
}

TEST(SinkTest, TinyAppendsRoundTrip) {
  const std::string input = CompressibleBytes(200000) + RandomishBytes(100000);
  for (Codec codec : kCodecs) {
    for (int threads : {1, 2}) {
      SCOPED_TRACE(absl::StrCat(CodecName(codec), " threads ", threads));
      StringSink sink;
      absl::StatusOr<std::unique_ptr<ByteSink>> encoder =
          NewEncoder(codec, FastLevel(codec), threads, &sink);
      ASSERT_TRUE(encoder.ok());
      // Tiny pieces, one large piece in the middle, tiny pieces again.
      size_t pos = 0;
      for (size_t i = 0; pos < input.size(); ++i) {
        size_t n = (pos >= 100000 && pos < 101000) ? 150000 : 1 + i % 7;
        n = std::min(n, input.size() - pos);
        ASSERT_TRUE((*encoder)->Append(absl::string_view(input).substr(pos, n))
                        .ok());
        pos += n;
      }
      ASSERT_TRUE((*encoder)->Finish().ok());
      StringSink decoded;
      size_t consumed = 0;
      ASSERT_TRUE(Decode(codec, sink.data(), &decoded, &consumed).ok());
      EXPECT_TRUE(decoded.data() == input);
    }
  }
}

TEST(SinkTest, SinkErrorsPropagate) {
  const std::string input = RandomishBytes(4 << 20);
  for (Codec codec : kCodecs) {
    for (int threads : {1, 2}) {
      SCOPED_TRACE(absl::StrCat(CodecName(codec), " threads ", threads));
      RecordingSink sink;
      sink.fail_after = 2 << 20;
      absl::StatusOr<std::unique_ptr<ByteSink>> encoder =
          NewEncoder(codec, FastLevel(codec), threads, &sink);
      ASSERT_TRUE(encoder.ok());
      absl::Status status = AppendInPieces(encoder->get(), input);
      if (status.ok()) status = (*encoder)->Finish();
      EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
      // The encoder stays failed; destroying it must be clean.
      EXPECT_EQ((*encoder)->Append("x").code(),
                absl::StatusCode::kResourceExhausted);
      EXPECT_EQ(sink.finishes, 0);
    }
    std::string encoded = Encode(codec, FastLevel(codec), 1, input);
    RecordingSink sink;
    sink.fail_after = 2 << 20;
    size_t consumed = 0;
    EXPECT_EQ(Decode(codec, encoded, &sink, &consumed).code(),
              absl::StatusCode::kResourceExhausted);
  }
}

TEST(SinkTest, AbandonedEncodersAreFreed) {
  const std::string input = RandomishBytes(3 << 20);
  for (Codec codec : kCodecs) {
    for (int threads : {1, 2}) {
      StringSink sink;
      absl::StatusOr<std::unique_ptr<ByteSink>> encoder =
          NewEncoder(codec, FastLevel(codec), threads, &sink);
      ASSERT_TRUE(encoder.ok());
      ASSERT_TRUE((*encoder)->Append(input).ok());
      // Destroyed here without Finish (workers may still be busy).
    }
  }
}

}  // namespace
}  // namespace persistd
