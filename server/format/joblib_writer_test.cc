#include "server/format/joblib_writer.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/pickle/pickle_opcodes.h"
#include "common/pickle/pickle_scanner.h"
#include "gtest/gtest.h"
#include "server/format/format_test_util.h"
#include "server/format/joblib_reader.h"
#include "server/io/byte_sink.h"

namespace persistd {
namespace {

using testing_util::ExpectedIndex;
using testing_util::L;
using testing_util::ReadExpectedIndex;
using testing_util::ReadTestdata;

struct WriterVector {
  int protocol;
  absl::string_view skeleton;
  std::vector<DumpArraySpec> arrays;
};

#include "server/format/testdata/writer_vectors.inc"

const WriterVector* const kVectors[] = {&kVectorP0, &kVectorP1, &kVectorP2,
                                        &kVectorP3, &kVectorP4, &kVectorP5};

// Remembers every Append, to check that array data is never copied.
class RecordingSink : public ByteSink {
 public:
  absl::Status Append(absl::string_view data) override {
    appends_.push_back(data);
    data_.append(data.data(), data.size());
    return absl::OkStatus();
  }
  absl::Status Finish() override { return absl::OkStatus(); }

  const std::string& data() const { return data_; }
  const std::vector<absl::string_view>& appends() const { return appends_; }

 private:
  std::string data_;
  std::vector<absl::string_view> appends_;
};

class FailingSink : public ByteSink {
 public:
  absl::Status Append(absl::string_view) override {
    return absl::ResourceExhaustedError("disk full");
  }
  absl::Status Finish() override { return absl::OkStatus(); }
};

std::string Write(absl::string_view skeleton,
                  const std::vector<DumpArraySpec>& arrays) {
  StringSink sink;
  absl::StatusOr<uint64_t> n = WriteJoblibStream(skeleton, arrays, &sink);
  EXPECT_TRUE(n.ok()) << n.status();
  if (!n.ok()) return "";
  EXPECT_EQ(*n, sink.data().size());
  return sink.data();
}

uint64_t LoadU64(absl::string_view bytes, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(bytes[at + i]);
  return v;
}

TEST(JoblibWriterTest, GoldenArange6Protocol4) {
  const std::vector<DumpArraySpec> arrays = {
      {DumpArraySpec::Kind::kRaw, L(kArange6State), L(kArange6Data)}};
  const std::string out = Write(L(kArange6Skeleton), arrays);
  EXPECT_EQ(out, L(kArange6Expected));

  // The same layout as joblib's file; only the memo opcodes joblib's
  // pure-Python pickler adds inside the frame make it longer.
  for (absl::string_view file : {absl::string_view(out), L(kArange6Joblib)}) {
    SCOPED_TRACE(file.size());
    EXPECT_EQ(file.substr(0, 3), "\x80\x04\x95");
    const uint64_t frame_end = 11 + LoadU64(file, 3);
    EXPECT_EQ(file[frame_end - 1], 'b');  // the frame ends with BUILD
    const uint64_t pad = static_cast<uint8_t>(file[frame_end]);
    EXPECT_GE(pad, 1u);
    EXPECT_LE(pad, 16u);
    EXPECT_EQ(file.substr(frame_end + 1, pad), std::string(pad, '\xff'));
    const uint64_t data = frame_end + 1 + pad;
    EXPECT_EQ(data % 16, 0u);
    EXPECT_EQ(file.substr(data, 48), L(kArange6Data));
    EXPECT_EQ(file.substr(data + 48), ".");  // a bare STOP ends the file
  }

  absl::StatusOr<IndexedStream> index = IndexJoblibStream(out);
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->arrays.size(), 1u);
  EXPECT_EQ(out.substr(index->arrays[0].offset, index->arrays[0].length),
            L(kArange6Data));
  EXPECT_TRUE(index->arrays[0].padded);
}

TEST(JoblibWriterTest, PlacesTheDataWhereJoblibDoesForEveryProtocol) {
  for (const WriterVector* vector : kVectors) {
    SCOPED_TRACE(testing::Message() << "protocol " << vector->protocol);
    const std::string name =
        "joblib16_p" + std::to_string(vector->protocol) + ".pkl";
    const std::string joblib_file = ReadTestdata(name);
    const ExpectedIndex joblib_index = ReadExpectedIndex(name);

    const std::string out = Write(vector->skeleton, vector->arrays);
    absl::StatusOr<IndexedStream> index = IndexJoblibStream(out);
    ASSERT_TRUE(index.ok()) << index.status();
    EXPECT_EQ(index->end_offset, out.size());
    ASSERT_EQ(index->arrays.size(), joblib_index.arrays.size());
    ASSERT_EQ(index->arrays.size(), vector->arrays.size());
    for (size_t i = 0; i < index->arrays.size(); ++i) {
      SCOPED_TRACE(testing::Message() << "array " << i);
      const LoadArrayLocation& ours = index->arrays[i];
      const LoadArrayLocation& theirs = joblib_index.arrays[i];
      EXPECT_EQ(static_cast<int>(ours.kind), static_cast<int>(theirs.kind));
      EXPECT_EQ(ours.padded, theirs.padded);
      ASSERT_EQ(ours.length, theirs.length);
      // Byte for byte what joblib wrote, raw data and nested pickles alike.
      EXPECT_EQ(out.substr(ours.offset, ours.length),
                joblib_file.substr(theirs.offset, theirs.length));
      EXPECT_EQ(out.substr(ours.offset, ours.length), vector->arrays[i].data);
      if (ours.kind == LoadArrayLocation::Kind::kRaw) {
        EXPECT_EQ(ours.offset % 16, 0u);
      }
    }
  }
}

TEST(JoblibWriterTest, HandsArrayDataToTheSinkUncopiedInOneAppend) {
  const WriterVector& vector = kVectorP5;
  RecordingSink sink;
  ASSERT_TRUE(WriteJoblibStream(vector.skeleton, vector.arrays, &sink).ok());
  for (const DumpArraySpec& spec : vector.arrays) {
    if (spec.data.empty()) continue;
    bool found = false;
    for (absl::string_view append : sink.appends()) {
      found |= append.data() == spec.data.data() &&
               append.size() == spec.data.size();
    }
    EXPECT_TRUE(found);
  }
}

TEST(JoblibWriterTest, FramesLikePicklesFramer) {
  // Protocol 4: a list of 40000 small ints (80 KB of opcodes, no frames in
  // the input), the array, a 100 KB bytes object, the array again.
  std::string skeleton = std::string("\x80\x04]\x94(", 5);
  for (int i = 0; i < 40000; ++i) skeleton += "K\x07";
  skeleton += std::string("K\x00Q", 3);
  const uint64_t big = 100000;
  skeleton += "\x8e";
  for (int i = 0; i < 8; ++i) skeleton += static_cast<char>((big >> (8 * i)) & 0xff);
  skeleton += std::string(big, 'b');
  skeleton += std::string("K\x00Qe.", 5);
  const std::vector<DumpArraySpec> arrays = {
      {DumpArraySpec::Kind::kRaw, L(kArange6State), L(kArange6Data)}};
  const std::string out = Write(skeleton, arrays);

  // Walk the output's opcodes, skipping the array data the index locates.
  absl::StatusOr<IndexedStream> index = IndexJoblibStream(out);
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->arrays.size(), 2u);
  std::vector<uint64_t> frame_lengths;
  bool big_bytes_framed = true;
  PickleScanner scanner(out);
  size_t next_array = 0;
  while (!scanner.AtEnd()) {
    PickleOp op;
    ASSERT_TRUE(scanner.Next(&op).ok());
    if (op.code == pickle_op::kFrame) frame_lengths.push_back(op.int_value);
    if (op.code == pickle_op::kBinBytes8) big_bytes_framed = scanner.InFrame();
    if (op.code == pickle_op::kBuild && !scanner.InFrame() && next_array < 2) {
      const LoadArrayLocation& a = index->arrays[next_array++];
      scanner.Seek(a.offset + a.length);
    }
  }
  EXPECT_FALSE(big_bytes_framed);  // large opcodes go unframed, like CPython
  ASSERT_GE(frame_lengths.size(), 3u);
  EXPECT_GE(frame_lengths[0], 64u * 1024);  // committed at >= 64 KiB
  EXPECT_EQ(out.back(), '.');
  EXPECT_EQ(out[out.size() - 2], 'e');  // "e." is under 4 bytes: bare
}

TEST(JoblibWriterTest, ManyArraysAtProtocol2) {
  // 300 persistent ids: BININT1 and BININT2 indices.
  std::string skeleton = std::string("\x80\x02](", 4);
  std::vector<DumpArraySpec> arrays;
  for (int k = 0; k < 300; ++k) {
    if (k < 256) {
      skeleton += "K";
      skeleton += static_cast<char>(k);
    } else {
      skeleton += "M";
      skeleton += static_cast<char>(k & 0xff);
      skeleton += static_cast<char>(k >> 8);
    }
    skeleton += "Q";
    arrays.push_back(kVectorP2.arrays[0]);
  }
  skeleton += "e.";
  const std::string out = Write(skeleton, arrays);
  absl::StatusOr<IndexedStream> index = IndexJoblibStream(out);
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->arrays.size(), 300u);
  for (const LoadArrayLocation& a : index->arrays) {
    EXPECT_EQ(out.substr(a.offset, a.length), kVectorP2.arrays[0].data);
  }
}

void ExpectInvalid(absl::string_view skeleton,
                   const std::vector<DumpArraySpec>& arrays,
                   absl::string_view message_part) {
  StringSink sink;
  absl::StatusOr<uint64_t> n = WriteJoblibStream(skeleton, arrays, &sink);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(n.status().message().find(std::string(message_part)),
            absl::string_view::npos)
      << n.status();
  EXPECT_TRUE(sink.data().empty());  // validated before writing
}

TEST(JoblibWriterTest, RejectsBadInputBeforeWritingAnything) {
  const DumpArraySpec arange = {DumpArraySpec::Kind::kRaw, L(kArange6State),
                                L(kArange6Data)};
  const std::string skeleton(L(kArange6Skeleton));  // [PROTO FRAME K\0 Q .]
  ASSERT_EQ(skeleton.substr(11), std::string("K\x00Q.", 4));

  std::string bad = skeleton;
  bad[12] = 5;
  ExpectInvalid(bad, {arange},
                "persistent id 5 at offset 13 is not an index into the 1 "
                "arrays");
  ExpectInvalid(skeleton, {arange, arange},
                "array 1: no persistent id refers to it");
  ExpectInvalid(std::string("\x80\x04\x8c\x01" "aQ.", 7), {},
                "the persistent id at offset 5 is not an int");
  ExpectInvalid(skeleton + "x", {arange}, "1 bytes follow the STOP");
  ExpectInvalid(skeleton.substr(0, skeleton.size() - 1), {arange},
                "skeleton: pickle stream is corrupt: truncated");
  ExpectInvalid(skeleton,
                {{DumpArraySpec::Kind::kRaw, L(kStateWithMemo), L(kArange6Data)}},
                "Pickler.fast = True");
  ExpectInvalid(skeleton,
                {{DumpArraySpec::Kind::kRaw, L(kArange6State),
                  L(kArange6Data).substr(1)}},
                "47 data bytes, but shape and dtype need 48");
  ExpectInvalid(skeleton,
                {{DumpArraySpec::Kind::kObjectStream, L(kArange6State),
                  L(kArange6Data)}},
                "object stream given for a dtype without objects");
  ExpectInvalid(skeleton, {kVectorP2.arrays[0]},
                "state pickle has protocol 2, the skeleton 4");
  const DumpArraySpec& object = kVectorP4.arrays[2];
  ASSERT_EQ(object.kind, DumpArraySpec::Kind::kObjectStream);
  ExpectInvalid(skeleton,
                {{DumpArraySpec::Kind::kRaw, object.state_pickle, object.data}},
                "raw data given for an object dtype");
  const std::string trailing = std::string(object.data) + "x";
  ExpectInvalid(skeleton,
                {{DumpArraySpec::Kind::kObjectStream, object.state_pickle,
                  trailing}},
                "object stream: 1 bytes follow its STOP");
}

// Found by server/fuzz:joblib_writer_fuzzer: a state pickle that left an
// item or a MARK under the dict was accepted, and BUILD then built that
// instead of the wrapper, so the stream did not load.
TEST(JoblibWriterTest, RejectsStatePickleLeavingMoreThanTheDict) {
  const absl::string_view state = L(kArange6State);  // [PROTO FRAME dict .]
  ASSERT_EQ(state.substr(0, 3), "\x80\x04\x95");
  for (absl::string_view extra : {L("K\x01"), L("]"), L("(")}) {
    const std::string leftover = absl::StrCat(state.substr(0, 2), extra,
                                              state.substr(2));
    ExpectInvalid(L(kArange6Skeleton),
                  {{DumpArraySpec::Kind::kRaw, leftover, L(kArange6Data)}},
                  "array 0: state pickle leaves more than the dict on the "
                  "stack");
  }
}

TEST(JoblibWriterTest, SinkErrorsAreReturned) {
  FailingSink sink;
  absl::StatusOr<uint64_t> n = WriteJoblibStream(
      L(kArange6Skeleton),
      {{DumpArraySpec::Kind::kRaw, L(kArange6State), L(kArange6Data)}}, &sink);
  EXPECT_EQ(n.status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace persistd
