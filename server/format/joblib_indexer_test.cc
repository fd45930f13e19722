#include "server/format/joblib_indexer.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/format/format_test_util.h"
#include "server/format/joblib_reader.h"

namespace persistd {
namespace {

using testing_util::L;
using testing_util::ReadExpectedIndex;
using testing_util::ReadTestdata;

const char* const kFiles[] = {
    "joblib16_p0.pkl",       "joblib16_p1.pkl",
    "joblib16_p2.pkl",       "joblib16_p3.pkl",
    "joblib16_p4.pkl",       "joblib16_p5.pkl",
    "joblib16_meta_p0.pkl",  "joblib16_meta_p4.pkl",
    "joblib16_dtypes_p2.pkl", "joblib16_dtypes_p4.pkl",
    "joblib_0.11.0_pickle_py36_np111.pkl",
    "joblib_0.10.0_pickle_py27_np17.pkl",
    "joblib_0.9.2_pickle_py35_np19.pkl",
};

// Records what the indexer passes on, and checks its promises as it goes:
// every byte once, in order; a raw array announced after the bytes before
// its data and before any of them.
class Recorder : public JoblibIndexer::Listener {
 public:
  absl::Status OnBytes(uint64_t offset, absl::string_view bytes) override {
    EXPECT_EQ(offset, stream.size());
    EXPECT_FALSE(bytes.empty());
    stream.append(bytes.data(), bytes.size());
    pieces.push_back(bytes);
    return absl::OkStatus();
  }
  absl::Status OnArray(const LoadArrayLocation& array) override {
    EXPECT_TRUE(array.path.empty());  // known only at the end
    if (array.kind == LoadArrayLocation::Kind::kRaw) {
      EXPECT_EQ(stream.size(), array.offset);
    } else {
      EXPECT_EQ(stream.size(), array.offset + array.length);
    }
    arrays.push_back(array);
    return absl::OkStatus();
  }

  std::string stream;
  std::vector<absl::string_view> pieces;
  std::vector<LoadArrayLocation> arrays;
};

// Feeds `stream` in pieces of `piece` bytes (all at once if 0).
absl::StatusOr<IndexedStream> FeedInPieces(absl::string_view stream,
                                           size_t piece,
                                           Recorder* recorder = nullptr,
                                           const PickleLimits& limits =
                                               PickleLimits()) {
  JoblibIndexer indexer(limits, recorder);
  if (piece == 0) piece = stream.size() + 1;
  for (size_t at = 0; at < stream.size(); at += piece) {
    absl::Status status = indexer.Feed(stream.substr(at, piece));
    if (!status.ok()) return status;
  }
  return indexer.Finish();
}

void ExpectSameIndex(const IndexedStream& got, const IndexedStream& want) {
  EXPECT_EQ(got.end_offset, want.end_offset);
  EXPECT_EQ(got.skeleton, want.skeleton);
  ASSERT_EQ(got.arrays.size(), want.arrays.size());
  for (size_t i = 0; i < got.arrays.size(); ++i) {
    SCOPED_TRACE(i);
    const LoadArrayLocation& a = got.arrays[i];
    const LoadArrayLocation& b = want.arrays[i];
    EXPECT_EQ(static_cast<int>(a.kind), static_cast<int>(b.kind));
    EXPECT_EQ(a.offset, b.offset);
    EXPECT_EQ(a.length, b.length);
    EXPECT_EQ(a.padded, b.padded);
    EXPECT_EQ(a.dtype, b.dtype);
    EXPECT_EQ(a.itemsize, b.itemsize);
    EXPECT_EQ(a.shape, b.shape);
    EXPECT_EQ(a.fortran_order, b.fortran_order);
    EXPECT_EQ(a.path, b.path);
  }
}

TEST(JoblibIndexerTest, HoweverTheStreamIsCutTheIndexIsTheSame) {
  for (const char* name : kFiles) {
    SCOPED_TRACE(name);
    const std::string stream = ReadTestdata(name);
    absl::StatusOr<IndexedStream> whole = FeedInPieces(stream, 0);
    ASSERT_TRUE(whole.ok()) << whole.status();
    for (size_t piece : {1, 2, 3, 7, 64, 1000, 4096}) {
      SCOPED_TRACE(piece);
      Recorder recorder;
      absl::StatusOr<IndexedStream> cut =
          FeedInPieces(stream, piece, &recorder);
      ASSERT_TRUE(cut.ok()) << cut.status();
      ExpectSameIndex(*cut, *whole);
      // The listener got the stream up to its STOP, and every array.
      EXPECT_EQ(recorder.stream, stream.substr(0, whole->end_offset));
      EXPECT_EQ(recorder.arrays.size(), whole->arrays.size());
    }
  }
}

TEST(JoblibIndexerTest, ErrorsAreTheSameHoweverTheStreamIsCut) {
  std::mt19937_64 random(11);
  for (const char* name : {"joblib16_p2.pkl", "joblib16_p4.pkl",
                           "joblib16_meta_p0.pkl"}) {
    const std::string good = ReadTestdata(name);
    for (int i = 0; i < 150; ++i) {
      std::string stream = good;
      if (i % 3 == 0) {
        stream.resize(random() % stream.size());  // truncated
      } else {
        for (int flips = 1 + random() % 3; flips > 0; --flips) {
          stream[random() % stream.size()] = static_cast<char>(random());
        }
      }
      absl::StatusOr<IndexedStream> whole = FeedInPieces(stream, 0);
      for (size_t piece : {1, 5, 300}) {
        absl::StatusOr<IndexedStream> cut = FeedInPieces(stream, piece);
        ASSERT_EQ(cut.status(), whole.status()) << name << " " << i;
        if (whole.ok()) ExpectSameIndex(*cut, *whole);
      }
    }
  }
}

TEST(JoblibIndexerTest, NamesEachArraysPlaceInTheValue) {
  // make_testdata.py's make_value(): a list whose second item is a dict.
  const std::vector<std::string> value_paths = {
      "[0]", "[1][\"be\"]", "[1][\"obj\"]", "[1][\"u\"]", "[2]",
      "[3]", "[4]",         "[5]",          "[6]"};
  for (const char* name : {"joblib16_p0.pkl", "joblib16_p1.pkl",
                           "joblib16_p2.pkl", "joblib16_p3.pkl",
                           "joblib16_p4.pkl", "joblib16_p5.pkl"}) {
    SCOPED_TRACE(name);
    absl::StatusOr<IndexedStream> index = IndexJoblibStream(ReadTestdata(name));
    ASSERT_TRUE(index.ok()) << index.status();
    ASSERT_EQ(index->arrays.size(), value_paths.size());
    for (size_t i = 0; i < value_paths.size(); ++i) {
      EXPECT_EQ(index->arrays[i].path, value_paths[i]);
    }
  }
  // make_dtypes_value(): a dict keyed by dtype names; "?" first.
  absl::StatusOr<IndexedStream> dtypes =
      IndexJoblibStream(ReadTestdata("joblib16_dtypes_p4.pkl"));
  ASSERT_TRUE(dtypes.ok());
  EXPECT_EQ(dtypes->arrays.front().path, "[\"?\"]");
  EXPECT_EQ(dtypes->arrays.back().path, "[\"u_again\"]");
  // Python 2's BINSTRING keys and a list with a str in it (index 3).
  absl::StatusOr<IndexedStream> py27 =
      IndexJoblibStream(ReadTestdata("joblib_0.10.0_pickle_py27_np17.pkl"));
  ASSERT_TRUE(py27.ok());
  ASSERT_EQ(py27->arrays.size(), 4u);
  EXPECT_EQ(py27->arrays[3].path, "[4]");
}

// A protocol 2 NumpyArrayWrapper of one float64, to put in hand-made
// pickles.
std::string Wrapper() {
  return std::string(
             L("cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\201}("
               "X\005\000\000\000shape(K\001t"
               "X\005\000\000\000dtypecnumpy\ndtype\n(X\002\000\000\000f8K"
               "\000K\001tR(K\003X\001\000\000\000<NNNJ\377\377\377\377J\377"
               "\377\377\377K\000tbub")) +
         std::string(8, 'd');
}

// "\x80\x02" and a NumpyArrayWrapper of a 1-d uint8 array whose shape
// tuple holds `length` (a pickled int); its data is to follow.
std::string Uint8WrapperHead(absl::string_view length) {
  return absl::StrCat(
      L("\x80\x02" "cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\201}("
        "X\005\000\000\000shape("),
      length,
      L("tX\005\000\000\000dtypecnumpy\ndtype\n(X\002\000\000\000"
        "u1K\000K\001tR(K\003X\001\000\000\000|NNNJ\377\377\377"
        "\377J\377\377\377\377K\000tbub"));
}

std::string Str(const std::string& s) {
  return "X" + std::string(1, static_cast<char>(s.size())) +
         std::string(3, '\0') + s;
}

std::vector<std::string> Paths(const std::string& pickle) {
  absl::StatusOr<IndexedStream> index = IndexJoblibStream(pickle);
  EXPECT_TRUE(index.ok()) << index.status();
  std::vector<std::string> out;
  if (index.ok()) {
    for (const LoadArrayLocation& a : index->arrays) out.push_back(a.path);
  }
  return out;
}

TEST(JoblibIndexerTest, PathsFollowKeysIndicesAndAttributes) {
  const std::string w = Wrapper();
  using V = std::vector<std::string>;
  // The array itself: no subscript.
  EXPECT_EQ(Paths("\x80\x02" + w + "."), V({""}));
  // (a, b): TUPLE2.
  EXPECT_EQ(Paths("\x80\x02" + w + w + "\x86."), V({"[0]", "[1]"}));
  // {"k": [a, (b,)], 7: c}: SETITEMS, APPENDS, TUPLE1, an int key.
  EXPECT_EQ(Paths("\x80\x02}(" + Str("k") + "](" + w + w + "\x85" + "eK\x07" +
                  w + "u."),
            V({"[\"k\"][0]", "[\"k\"][1][0]", "[7]"}));
  // A key fetched from the memo: {"k": a, "j": {"k": b}}.
  EXPECT_EQ(Paths("\x80\x02}(" + Str("k") + "q\x01" + w + Str("j") + "}h\x01" +
                  w + "su."),
            V({"[\"k\"]", "[\"j\"][\"k\"]"}));
  // APPEND one at a time after two items: [x, y, a].
  EXPECT_EQ(Paths("\x80\x02](NNe" + w + "a."), V({"[2]"}));
  // An object whose state dict holds it: obj.coef_, and a key that is not
  // an identifier.
  EXPECT_EQ(Paths("\x80\x02" "cm\nC\n)\x81}(" + Str("coef_") + w +
                  Str("a-b") + w + "ub."),
            V({".coef_", ".__dict__[\"a-b\"]"}));
  // Items set on an object one at a time (an OrderedDict).
  EXPECT_EQ(Paths("\x80\x02" "cc\nOrderedDict\n)R" + Str("a") + w + "s."),
            V({"[\"a\"]"}));
  // A call's arguments: m.f(a).
  EXPECT_EQ(Paths("\x80\x02" "cm\nf\n" + w + "\x85R."),
            V({".__args__[0]"}));
  // Where no path can be told: a set, a float key, a popped object.
  EXPECT_EQ(Paths("\x80\x04\x8f(" + w + "\x90."), V({"?"}));
  EXPECT_EQ(Paths("\x80\x02}" + std::string(L("G?\xf8\0\0\0\0\0\0")) + w +
                  "s."),
            V({"?"}));
  EXPECT_EQ(Paths("\x80\x02" + w + "0N."), V({"?"}));
  // A str key is rendered as JSON; one that is not valid UTF-8 is not.
  EXPECT_EQ(Paths("\x80\x02}" + Str("a\"\\\n\xc3\xa9") + w + "s."),
            V({"[\"a\\\"\\\\\\n\xc3\xa9\"]"}));
  EXPECT_EQ(Paths("\x80\x02}" + Str("\xff") + w + "s."), V({"?"}));
}

// A dict of `keys` memoized str keys to None and "array" to an array, then
// `items` Nones on the stack (after a MARK, made a list and popped).
std::string KeysThenStack(int keys, int items, int nones = 0) {
  std::string pickle = "\x80\x02}";
  for (int i = 0; i < nones; ++i) pickle += "N\x94" "0";
  for (int i = 0; i < keys; ++i) {
    pickle += Str("key" + std::to_string(i)) + "\x94" + "Ns";
  }
  pickle += Str("array") + Wrapper() + "s(" + std::string(items, 'N') + "l0.";
  return pickle;
}

TEST(JoblibIndexerTest, PathsGiveWayToWhatIndexingNeeds) {
  // The memoized keys are spare memory (about 72 bytes each, under a
  // quarter of the budget). A stack that needs more than what is left
  // beside them takes it: the stream indexes as it would without paths,
  // and the path is lost instead.
  PickleLimits limits;
  limits.max_index_memory = 1 << 20;
  constexpr int kNones = 60000;  // memo entries that are not spare
  for (int items : {8000, 14000, 16000, 16500}) {
    SCOPED_TRACE(items);
    absl::StatusOr<IndexedStream> plain =
        IndexJoblibStream(KeysThenStack(0, items, kNones), limits);
    absl::StatusOr<IndexedStream> keyed =
        IndexJoblibStream(KeysThenStack(3400, items, kNones), limits);
    ASSERT_EQ(keyed.ok(), plain.ok()) << keyed.status() << plain.status();
    if (!plain.ok()) {
      EXPECT_EQ(plain.status().code(), absl::StatusCode::kInvalidArgument);
      continue;
    }
    EXPECT_EQ(plain->arrays[0].path, "[\"array\"]");
    EXPECT_EQ(keyed->arrays[0].path, items < 10000 ? "[\"array\"]" : "?");
  }
}

TEST(JoblibIndexerTest, ArrayDataIsPassedOnNotCopied) {
  // A wrapper, then 1 MiB of data in pieces of 64 KiB: after the first
  // slice, the listener gets the caller's own bytes.
  const std::string head = Uint8WrapperHead(L("J\000\000\020\000"));
  const std::string stream = head + std::string(1 << 20, 'x') + ".";
  Recorder recorder;
  JoblibIndexer indexer(PickleLimits(), &recorder);
  constexpr size_t kPiece = 64 << 10;
  size_t passed_on = 0;
  for (size_t at = 0; at < stream.size(); at += kPiece) {
    const absl::string_view piece = absl::string_view(stream).substr(at, kPiece);
    const size_t before = recorder.pieces.size();
    ASSERT_TRUE(indexer.Feed(piece).ok());
    for (size_t i = before; i < recorder.pieces.size(); ++i) {
      if (recorder.pieces[i].data() >= piece.data() &&
          recorder.pieces[i].data() < piece.data() + piece.size()) {
        passed_on += recorder.pieces[i].size();
      }
    }
  }
  absl::StatusOr<IndexedStream> index = indexer.Finish();
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->arrays[0].length, 1u << 20);
  EXPECT_GE(passed_on, (1u << 20) - JoblibIndexer::kSlice);
  EXPECT_EQ(recorder.stream, stream);
}

// Found by server/fuzz:joblib_reader_fuzzer: with FeedWhole, the listener
// was given views into the empty buffer instead of the stream.
TEST(JoblibIndexerTest, FeedWholeGivesTheListenerTheStream) {
  const std::string stream = Uint8WrapperHead(L("K\003")) + "xyz.";
  Recorder recorder;
  JoblibIndexer indexer(PickleLimits(), &recorder);
  ASSERT_TRUE(indexer.FeedWhole(stream).ok());
  absl::StatusOr<IndexedStream> index = indexer.Finish();
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->arrays.size(), 1u);
  EXPECT_EQ(index->arrays[0].length, 3u);
  EXPECT_EQ(recorder.stream, stream);
  EXPECT_EQ(recorder.arrays.size(), 1u);
}

// Found by server/fuzz:joblib_reader_fuzzer: bytes that arrived while a
// long opcode's retry was put off counted as pickle, so a stream within
// max_pickle_bytes whole was refused when fed in pieces.
TEST(JoblibIndexerTest, PickleBytesLimitIsTheSameHoweverTheStreamIsCut) {
  // A 3619-byte BINUNICODE and STOP, 3627 bytes of pickle, then 500 bytes
  // that are no part of it.
  const std::string pickle = absl::StrCat(L("\x80\x04X\x23\x0e\x00\x00"),
                                          std::string(3619, 'a'), ".");
  const std::string stream = pickle + std::string(500, 'j');
  PickleLimits limits;
  limits.max_pickle_bytes = 4096;
  for (size_t piece : {0, 1, 100, 1000}) {
    SCOPED_TRACE(piece);
    absl::StatusOr<IndexedStream> index =
        FeedInPieces(stream, piece, nullptr, limits);
    ASSERT_TRUE(index.ok()) << index.status();
    EXPECT_EQ(index->end_offset, pickle.size());
  }
}

// Found by server/fuzz:joblib_reader_fuzzer: a frame is read whole, so fed
// in pieces the bytes of a frame that go on past its STOP counted against
// max_pickle_bytes, and fed whole they did not.
TEST(JoblibIndexerTest, AFrameCountsWholeAgainstThePickleBytesLimit) {
  PickleLimits limits;
  limits.max_pickle_bytes = 4096;
  for (uint64_t frame : {3000, 5000}) {
    SCOPED_TRACE(frame);
    // PROTO 4, then a frame of `frame` bytes: None, STOP, and filler.
    std::string stream = "\x80\x04\x95";
    for (int i = 0; i < 8; ++i) stream += static_cast<char>(frame >> (8 * i));
    stream += "N." + std::string(frame - 2, 'x');
    for (size_t piece : {0, 1, 100, 1000}) {
      SCOPED_TRACE(piece);
      absl::StatusOr<IndexedStream> index =
          FeedInPieces(stream, piece, nullptr, limits);
      if (frame < limits.max_pickle_bytes) {
        ASSERT_TRUE(index.ok()) << index.status();
        EXPECT_EQ(index->end_offset, 13u);
      } else {
        EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument)
            << index.status();
      }
    }
  }
}

TEST(JoblibIndexerTest, ALongOpcodeIsNotRescannedForEveryPiece) {
  // A protocol 0 STRING of 8 MiB fed a byte at a time would be scanned
  // 8M times if every Feed retried it: this must take well under a second.
  std::string pickle = "S'" + std::string(8 << 20, 'a') + "'\n.";
  JoblibIndexer indexer{PickleLimits()};
  for (size_t at = 0; at < pickle.size(); at += 16) {
    ASSERT_TRUE(indexer.Feed(absl::string_view(pickle).substr(at, 16)).ok());
  }
  ASSERT_TRUE(indexer.Finish().ok());
}

TEST(JoblibIndexerTest, AnErrorIsFinal) {
  JoblibIndexer indexer{PickleLimits()};
  EXPECT_TRUE(indexer.Feed("\x80\x04").ok());
  const absl::Status bad = indexer.Feed(std::string(1, '\0'));
  EXPECT_EQ(bad.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(indexer.Feed("N.").code(), bad.code());
  EXPECT_EQ(indexer.Finish().status(), bad);
}

TEST(JoblibIndexerTest, BytesAfterTheStopAreNotPartOfTheValue) {
  Recorder recorder;
  JoblibIndexer indexer(PickleLimits(), &recorder);
  ASSERT_TRUE(indexer.Feed("\x80\x02N.").ok());
  EXPECT_TRUE(indexer.stopped());
  ASSERT_TRUE(indexer.Feed("junk").ok());
  absl::StatusOr<IndexedStream> index = indexer.Finish();
  ASSERT_TRUE(index.ok());
  EXPECT_EQ(index->end_offset, 4u);
  EXPECT_EQ(recorder.stream, "\x80\x02N.");
}

}  // namespace
}  // namespace persistd
