#include "server/format/joblib_reader.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/pickle/pickle_opcodes.h"
#include "common/pickle/pickle_scanner.h"
#include "gtest/gtest.h"
#include "server/format/format_test_util.h"
#include "server/format/symbolic_stack.h"

namespace persistd {
namespace {

using testing_util::CountOccurrences;
using testing_util::ExpectedIndex;
using testing_util::L;
using testing_util::ReadExpectedIndex;
using testing_util::ReadTestdata;
using testing_util::ScanAll;

constexpr absl::string_view kCallMaterialize = "c__persistd__\nmaterialize\n(";

const char* const kJoblibFiles[] = {
    "joblib16_p0.pkl",         "joblib16_p1.pkl",
    "joblib16_p2.pkl",         "joblib16_p3.pkl",
    "joblib16_p4.pkl",         "joblib16_p5.pkl",
    "joblib16_meta_p0.pkl",    "joblib16_meta_p1.pkl",
    "joblib16_meta_p2.pkl",    "joblib16_meta_p3.pkl",
    "joblib16_meta_p4.pkl",    "joblib16_meta_p5.pkl",
    "joblib16_dtypes_p2.pkl",  "joblib16_dtypes_p4.pkl",
    "joblib_0.11.0_pickle_py36_np111.pkl",
    "joblib_0.10.0_pickle_py27_np17.pkl",
    "joblib_0.9.2_pickle_py35_np19.pkl",
};

std::string ShapeString(const std::vector<uint64_t>& shape) {
  std::string out = "(";
  for (uint64_t dim : shape) out += std::to_string(dim) + ",";
  return out + ")";
}

// Where the data is and, for raw and object arrays, what numpy says the
// array is (ReadExpectedIndex leaves the defaults of a legacy array).
void ExpectSameArrays(const std::vector<LoadArrayLocation>& got,
                      const std::vector<LoadArrayLocation>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(testing::Message() << "array " << i);
    EXPECT_EQ(static_cast<int>(got[i].kind), static_cast<int>(want[i].kind));
    EXPECT_EQ(got[i].offset, want[i].offset);
    EXPECT_EQ(got[i].length, want[i].length);
    EXPECT_EQ(got[i].padded, want[i].padded);
    EXPECT_EQ(got[i].dtype, want[i].dtype);
    EXPECT_EQ(got[i].itemsize, want[i].itemsize);
    EXPECT_EQ(ShapeString(got[i].shape), ShapeString(want[i].shape));
    EXPECT_EQ(got[i].fortran_order, want[i].fortran_order);
  }
}

// The rewritten pickle is an unframed pickle that a symbolic unpickler
// follows to its final STOP, with one materialize call per array.
void ExpectValidSkeleton(const IndexedStream& index) {
  std::vector<PickleOp> ops;
  absl::Status status = ScanAll(index.skeleton, &ops);
  ASSERT_TRUE(status.ok()) << status;
  for (const PickleOp& op : ops) EXPECT_NE(op.code, pickle_op::kFrame);
  ASSERT_FALSE(ops.empty());
  EXPECT_EQ(ops.back().code, pickle_op::kStop);
  // The wrappers are still there (materialize receives them), each BUILD
  // now directly followed by TUPLE, REDUCE instead of the data.
  SymbolicStack stack;
  size_t wrappers = 0;
  for (const PickleOp& op : ops) {
    SymbolicStack::Event event;
    status = stack.Apply(op, &event);
    ASSERT_TRUE(status.ok()) << status;
    if (event == SymbolicStack::Event::kWrapperBuild) {
      ASSERT_LT(wrappers, index.arrays.size());
      // Apply (here) and Run (in the index) read the same state.
      const LoadArrayLocation& array = index.arrays[wrappers];
      if (array.kind != LoadArrayLocation::Kind::kLegacy) {
        const ArrayLayout& layout = stack.build().layout;
        EXPECT_EQ(layout.dtype, array.dtype);
        EXPECT_EQ(layout.itemsize, array.itemsize);
        EXPECT_EQ(layout.shape, array.shape);
        EXPECT_EQ(layout.fortran_order, array.fortran_order);
      }
      ++wrappers;
      ASSERT_LT(op.end() + 1, index.skeleton.size());
      EXPECT_EQ(index.skeleton.substr(op.end(), 2), "tR");
      EXPECT_EQ(index.skeleton.substr(stack.build().start_offset -
                                          kCallMaterialize.size(),
                                      kCallMaterialize.size()),
                kCallMaterialize);
    }
  }
  EXPECT_EQ(wrappers, index.arrays.size());
  EXPECT_EQ(CountOccurrences(index.skeleton, kCallMaterialize),
            index.arrays.size());
}

TEST(JoblibReaderTest, FindsTheArraysWhereJoblibReadsThem) {
  for (const char* name : kJoblibFiles) {
    SCOPED_TRACE(name);
    const std::string stream = ReadTestdata(name);
    const ExpectedIndex want = ReadExpectedIndex(name);
    absl::StatusOr<IndexedStream> index = IndexJoblibStream(stream);
    ASSERT_TRUE(index.ok()) << index.status();
    EXPECT_EQ(index->end_offset, want.end_offset);
    ExpectSameArrays(index->arrays, want.arrays);
    ExpectValidSkeleton(*index);
  }
}

TEST(JoblibReaderTest, ReportsWhatNumpySaysAboutEachArray) {
  // FindsTheArraysWhereJoblibReadsThem compares them all; this checks that
  // the expected files do list them, and a few by hand.
  size_t described = 0, with_dtype = 0;
  for (const char* name : kJoblibFiles) {
    const ExpectedIndex want = ReadExpectedIndex(name);
    bool legacy = false;
    for (const LoadArrayLocation& a : want.arrays) {
      legacy = legacy || a.kind == LoadArrayLocation::Kind::kLegacy;
      if (!a.dtype.empty()) ++with_dtype;
    }
    EXPECT_EQ(want.has_meta, !legacy) << name;
    if (want.has_meta) described += want.arrays.size();
  }
  EXPECT_GE(described, 400u);
  EXPECT_GE(with_dtype, 370u);

  absl::StatusOr<IndexedStream> index =
      IndexJoblibStream(ReadTestdata("joblib16_p4.pkl"));
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->arrays.size(), 9u);
  const LoadArrayLocation& fortran = index->arrays[6];  // u2, 3x4, 'F'
  EXPECT_EQ(fortran.dtype, "<u2");
  EXPECT_EQ(fortran.itemsize, 2u);
  EXPECT_EQ(fortran.shape, std::vector<uint64_t>({3, 4}));
  EXPECT_TRUE(fortran.fortran_order);
  EXPECT_EQ(index->arrays[2].dtype, "|O");  // the object array
  EXPECT_TRUE(index->arrays[4].shape.empty());  // 0-d
  EXPECT_EQ(index->arrays[7].dtype, "");    // structured: no string...
  EXPECT_EQ(index->arrays[7].itemsize, 9u);  // ... but its size
}

TEST(JoblibReaderTest, SecondWrappersReuseMemoizedStrings) {
  // joblib's pickler memoizes the wrapper's module and class name; later
  // wrappers refer to them with BINGET (protocol 4) or BINGET of the class
  // (protocol 2). All nine arrays must still be found.
  for (const char* name : {"joblib16_p2.pkl", "joblib16_p4.pkl"}) {
    const std::string stream = ReadTestdata(name);
    EXPECT_EQ(CountOccurrences(stream, "NumpyArrayWrapper"), 1u);
    absl::StatusOr<IndexedStream> index = IndexJoblibStream(stream);
    ASSERT_TRUE(index.ok());
    EXPECT_EQ(index->arrays.size(), 9u);
  }
}

TEST(JoblibReaderTest, InsertsTheCallAroundEachWrapper) {
  const std::string stream = ReadTestdata("joblib16_p4.pkl");
  absl::StatusOr<IndexedStream> index = IndexJoblibStream(stream);
  ASSERT_TRUE(index.ok());
  // PROTO 4, then (the FRAME dropped) the list, its MEMOIZE and MARK, then
  // the first wrapper, whose first opcode pushes the module name.
  EXPECT_EQ(index->skeleton.substr(0, 5), std::string("\x80\x04]\x94(", 5));
  EXPECT_EQ(index->skeleton.substr(5, kCallMaterialize.size()),
            kCallMaterialize);
  EXPECT_EQ(index->skeleton.substr(5 + kCallMaterialize.size(), 21),
            "\x8c\x13joblib.numpy_pickle");
  // The first wrapper's BUILD is followed by TUPLE, REDUCE; then the data
  // is gone and the next opcode is the one after the data in the stream.
  const ExpectedIndex want = ReadExpectedIndex("joblib16_p4.pkl");
  const uint64_t data_end = want.arrays[0].offset + want.arrays[0].length;
  const size_t build = index->skeleton.find("btR");
  ASSERT_NE(build, std::string::npos);
  ASSERT_EQ(stream[data_end], '\x95');  // a new frame starts after the data
  EXPECT_EQ(index->skeleton[build + 3], stream[data_end + 9]);
}

std::string Frame(absl::string_view body) {
  std::string frame = "\x95";
  for (int i = 0; i < 8; ++i) {
    frame += static_cast<char>((body.size() >> (8 * i)) & 0xff);
  }
  return frame + std::string(body);
}

TEST(JoblibReaderTest, PlainPicklesComeBackUnframed) {
  // Protocol 4: a frame with {'a': [1, 2]}, a 70 KB BINBYTES8 outside any
  // frame (as CPython writes large bytes), a frame with TUPLE2, STOP.
  const std::string dict = std::string(L("}\224(\214\001a\224]\224(K\001K\002eu"));
  std::string bytes8 = "\x8e";
  const uint64_t big = 70000;
  for (int i = 0; i < 8; ++i) bytes8 += static_cast<char>((big >> (8 * i)) & 0xff);
  bytes8 += std::string(big, 'z');
  const std::string pickle =
      "\x80\x04" + Frame(dict) + bytes8 + Frame("\x86") + ".";
  absl::StatusOr<IndexedStream> index = IndexJoblibStream(pickle);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_TRUE(index->arrays.empty());
  EXPECT_EQ(index->end_offset, pickle.size());
  EXPECT_EQ(index->skeleton, "\x80\x04" + dict + bytes8 + "\x86.");
}

TEST(JoblibReaderTest, ReportsWhatFollowsTheStopAsNotPartOfThePickle) {
  const std::string stream = ReadTestdata("joblib16_p4.pkl") + "trailing junk";
  absl::StatusOr<IndexedStream> index = IndexJoblibStream(stream);
  ASSERT_TRUE(index.ok());
  EXPECT_EQ(index->end_offset, ReadExpectedIndex("joblib16_p4.pkl").end_offset);
}

TEST(JoblibReaderTest, RejectsWhatIsNotAPickle) {
  for (absl::string_view bad :
       {absl::string_view(""), absl::string_view("\x7f" "ELF"),
        absl::string_view("\x80\x06\x95"), absl::string_view("\x95\0\0")}) {
    absl::StatusOr<IndexedStream> index = IndexJoblibStream(bad);
    ASSERT_FALSE(index.ok());
    EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(index.status().message().find("not a pickle or joblib file"),
              absl::string_view::npos)
        << index.status();
  }
}

TEST(JoblibReaderTest, EveryPrefixIsAnErrorUntilTheStop) {
  for (const char* name : {"joblib16_p0.pkl", "joblib16_p4.pkl",
                           "joblib16_p5.pkl",
                           "joblib_0.11.0_pickle_py36_np111.pkl"}) {
    SCOPED_TRACE(name);
    const std::string stream = ReadTestdata(name);
    const ExpectedIndex want = ReadExpectedIndex(name);
    for (size_t n = 0; n < stream.size(); ++n) {
      absl::StatusOr<IndexedStream> index =
          IndexJoblibStream(absl::string_view(stream.data(), n));
      if (n < want.end_offset) {
        ASSERT_FALSE(index.ok()) << n;
        EXPECT_TRUE(index.status().code() == absl::StatusCode::kDataLoss ||
                    (n == 0 && index.status().code() ==
                                   absl::StatusCode::kInvalidArgument))
            << index.status();
      } else {
        ASSERT_TRUE(index.ok()) << n;
        ExpectSameArrays(index->arrays, want.arrays);
      }
    }
  }
}

TEST(JoblibReaderTest, TruncatedDataIsReportedAsSuch) {
  const std::string stream = ReadTestdata("joblib16_p4.pkl");
  const ExpectedIndex want = ReadExpectedIndex("joblib16_p4.pkl");
  absl::StatusOr<IndexedStream> index = IndexJoblibStream(
      absl::string_view(stream.data(), want.arrays[0].offset + 10));
  ASSERT_FALSE(index.ok());
  EXPECT_EQ(index.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(index.status().message().find(
                "array data runs past the end of the file (truncated?)"),
            absl::string_view::npos);
}

TEST(JoblibReaderTest, ValidatesThePadding) {
  const std::string good = ReadTestdata("joblib16_p4.pkl");
  const uint64_t data = ReadExpectedIndex("joblib16_p4.pkl").arrays[0].offset;
  uint64_t pad_byte = data - 1;
  while (good[pad_byte] == '\xff') --pad_byte;
  ASSERT_EQ(static_cast<uint64_t>(good[pad_byte]), data - 1 - pad_byte);
  std::string bad = good;
  bad[pad_byte] = 0;
  EXPECT_EQ(IndexJoblibStream(bad).status().message(),
            "invalid array padding length 0 at offset " +
                std::to_string(pad_byte));
  bad = good;
  bad[pad_byte] = 17;
  EXPECT_EQ(IndexJoblibStream(bad).status().code(),
            absl::StatusCode::kDataLoss);
  bad = good;
  bad[data - 1] = 0;
  EXPECT_EQ(IndexJoblibStream(bad).status().message(),
            "invalid array padding byte at offset " + std::to_string(data - 1));
}

TEST(JoblibReaderTest, TheFrameMustEndAtTheWrapperBuild) {
  std::string stream = ReadTestdata("joblib16_p4.pkl");
  ASSERT_EQ(stream[2], '\x95');
  stream[3] = static_cast<char>(stream[3] + 1);  // frame takes the pad byte
  absl::StatusOr<IndexedStream> index = IndexJoblibStream(stream);
  ASSERT_FALSE(index.ok());
  EXPECT_NE(index.status().message().find(
                "the frame does not end at the NumpyArrayWrapper's BUILD"),
            absl::string_view::npos)
      << index.status();
}

// NumpyArrayWrapper with the given state opcodes (protocol 2), data after.
std::string HandMadeWrapper(const std::string& state_items,
                            const std::string& data) {
  return "\x80\x02" "cjoblib.numpy_pickle\nNumpyArrayWrapper\n" ")\x81}(" +
         state_items + "ub" + data + ".";
}

TEST(JoblibReaderTest, UnknownDtypesAndImpossibleShapesAreErrors) {
  const std::string shape(L("X\005\000\000\000shape(K\002t"));
  const std::string huge_shape(
      L("X\005\000\000\000shape(\212\006\000\000\000\000\000\001"
        "\212\006\000\000\000\000\000\001t"));
  const std::string f8(
      L("X\005\000\000\000dtypecnumpy\ndtype\n(X\002\000\000\000f8K\000K\001tR"));
  const std::string unknown(L("X\005\000\000\000dtypecmymodule\nMyDtype\n)R"));

  absl::StatusOr<IndexedStream> index =
      IndexJoblibStream(HandMadeWrapper(shape + f8, std::string(16, 'd')));
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->arrays.size(), 1u);
  EXPECT_EQ(index->arrays[0].length, 16u);
  EXPECT_FALSE(index->arrays[0].padded);  // no numpy_array_alignment_bytes

  index = IndexJoblibStream(HandMadeWrapper(shape + unknown, "dd"));
  EXPECT_EQ(index.status().code(), absl::StatusCode::kUnimplemented)
      << index.status();

  index = IndexJoblibStream(HandMadeWrapper(huge_shape + f8, "dd"));
  EXPECT_NE(index.status().message().find("array data runs past the end"),
            absl::string_view::npos)
      << index.status();

  index = IndexJoblibStream(HandMadeWrapper(f8, "dd"));
  EXPECT_EQ(index.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(index.status().message().find("has no 'shape'"),
            absl::string_view::npos)
      << index.status();
}

TEST(JoblibReaderTest, AcceptsScikitLearnsVendoredJoblib) {
  // Old scikit-learn pickles name sklearn.externals.joblib.numpy_pickle.
  std::string stream = ReadTestdata("joblib16_p2.pkl");
  const std::string from = "cjoblib.numpy_pickle\n";
  const std::string to = "csklearn.externals.joblib.numpy_pickle\n";
  const size_t at = stream.find(from);
  ASSERT_NE(at, std::string::npos);
  stream.replace(at, from.size(), to);
  absl::StatusOr<IndexedStream> index = IndexJoblibStream(stream);
  ASSERT_TRUE(index.ok()) << index.status();
  const ExpectedIndex want = ReadExpectedIndex("joblib16_p2.pkl");
  ASSERT_EQ(index->arrays.size(), want.arrays.size());
  for (size_t i = 0; i < want.arrays.size(); ++i) {
    EXPECT_EQ(index->arrays[i].offset,
              want.arrays[i].offset + to.size() - from.size());
  }
}

// Protocol 2 opcodes for the state's 'dtype' item: numpy.dtype(code, False,
// True) BUILT with `state_items` (the items of the state tuple).
std::string DtypeItem(const std::string& code, const std::string& state) {
  return std::string(L("X\005\000\000\000dtypecnumpy\ndtype\n(X")) +
         static_cast<char>(code.size()) + std::string(3, '\0') + code +
         std::string(L("K\000K\001tR(")) + state + "tb";
}

// An 8-item state tuple (numpy >= 1.7) with byte order `order`.
std::string State8(const std::string& order, const std::string& elsize) {
  return std::string(L("K\003X\001\000\000\000")) + order +
         std::string(L("NNN")) + elsize +
         std::string(L("J\377\377\377\377K\000"));
}

const char kNoElsize[] = "J\377\377\377\377";

LoadArrayLocation IndexOne(const std::string& state_items,
                           const std::string& data) {
  absl::StatusOr<IndexedStream> index =
      IndexJoblibStream(HandMadeWrapper(state_items, data));
  EXPECT_TRUE(index.ok()) << index.status();
  if (!index.ok() || index->arrays.size() != 1) return {};
  return index->arrays[0];
}

TEST(JoblibReaderTest, ByteOrdersAsNumpyReportsThem) {
  const std::string shape(L("X\005\000\000\000shape(K\002t"));
  struct Case {
    const char* order;
    const char* code;
    const char* dtype;
  } cases[] = {
      {"<", "f8", "<f8"}, {">", "f8", ">f8"}, {"=", "f8", "<f8"},
      {"|", "u1", "|u1"}, {"<", "i1", "<i1"},  // what numpy says for these
      {"!", "f8", ""},  // not a byte order numpy writes: no string
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.order);
    const LoadArrayLocation a = IndexOne(
        shape + DtypeItem(c.code, State8(c.order, kNoElsize)),
        std::string(c.code[1] == '8' ? 16 : 2, 'd'));
    EXPECT_EQ(a.dtype, c.dtype);
    EXPECT_EQ(a.itemsize, c.code[1] == '8' ? 8u : 1u);
    EXPECT_EQ(a.shape, std::vector<uint64_t>({2}));
    EXPECT_FALSE(a.fortran_order);
  }
  // numpy < 1.7's 5-item state (byteorder, subarray, fields, elsize,
  // alignment), with the elsize that sizes a flexible dtype.
  const LoadArrayLocation old = IndexOne(
      shape + DtypeItem("U1", std::string(L("X\001\000\000\000>NNK\010K\004"))),
      std::string(16, 'd'));
  EXPECT_EQ(old.dtype, ">U2");
  EXPECT_EQ(old.itemsize, 8u);
  // No BUILD: no byte order, so no string, but the code's size.
  const LoadArrayLocation unbuilt = IndexOne(
      shape + std::string(L("X\005\000\000\000dtypecnumpy\ndtype\n"
                            "(X\002\000\000\000f8K\000K\001tR")),
      std::string(16, 'd'));
  EXPECT_EQ(unbuilt.dtype, "");
  EXPECT_EQ(unbuilt.itemsize, 8u);
}

TEST(JoblibReaderTest, DatetimeUnitsAsNumpyReportsThem) {
  const std::string shape(L("X\005\000\000\000shape(K\001t"));
  const std::string head = std::string(L("K\004X\001\000\000\000<NNN")) +
                           kNoElsize + kNoElsize + std::string(L("K\000"));
  struct Case {
    std::string metadata;  // the 9th item
    const char* dtype;
  } cases[] = {
      {"N", "<M8"},                                      // generic
      {std::string(L("N(C\002nsK\001K\001K\001t\206")), "<M8[ns]"},
      {std::string(L("N(X\002\000\000\000usK\003t\206")), "<M8[3us]"},
      {std::string(L("}(C\001DK\001t\206")), "<M8[D]"},  // with a dict
      // protocol 2 bytes: _codecs.encode('generic', 'latin1')
      {std::string(L("Nc_codecs\nencode\nX\007\000\000\000generic"
                     "X\006\000\000\000latin1\206RK\001\206\206")),
       "<M8"},
      {std::string(L("N(C\002nsK\001K\003K\001t\206")), ""},  // divisor
      {std::string(L("N(C\002xsK\001t\206")), ""},  // not a unit
      {std::string(L("N(X\002\000\000\000nsK\001t\206")), "<M8[ns]"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.dtype);
    const LoadArrayLocation a = IndexOne(
        shape + DtypeItem("M8", head + c.metadata), std::string(8, 'd'));
    EXPECT_EQ(a.dtype, c.dtype);
    EXPECT_EQ(a.itemsize, 8u);
  }
  // Without metadata (an 8-item state) numpy keeps dtype('m8')'s generic
  // unit.
  EXPECT_EQ(IndexOne(shape + DtypeItem("m8", State8("<", kNoElsize)),
                     std::string(8, 'd'))
                .dtype,
            "<m8");
}

TEST(JoblibReaderTest, SharedShapeTuplesAndDtypesKeepTheirValues) {
  // Two wrappers in a list; the second refers to the first's shape tuple
  // (BINPUT 3), 'F' string (BINPUT 4) and dtype (BINPUT 5) with BINGET.
  // The dtype is memoized before its BUILD, as numpy's pickles are.
  const std::string key(L("X\005\000\000\000"));
  const std::string first =
      std::string(L("cjoblib.numpy_pickle\nNumpyArrayWrapper\nq\002)\201}(")) +
      key + "shape" + std::string(L("K\002K\003\206q\003")) + key +
      "order" + std::string(L("X\001\000\000\000Fq\004")) + key + "dtype" +
      std::string(L("cnumpy\ndtype\n(X\002\000\000\000i2K\000K\001tRq\005(")) +
      State8(">", kNoElsize) + "tbub" + std::string(12, 'd');
  const std::string second =
      std::string(L("h\002)\201}(")) + key + "shape" + std::string(L("h\003")) +
      key + "order" + std::string(L("h\004")) + key + "dtype" +
      std::string(L("h\005")) + "ub" + std::string(12, 'e');
  const std::string stream =
      std::string(L("\200\002]q\001(")) + first + second + "e.";
  absl::StatusOr<IndexedStream> index = IndexJoblibStream(stream);
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->arrays.size(), 2u);
  for (const LoadArrayLocation& a : index->arrays) {
    EXPECT_EQ(a.dtype, ">i2");
    EXPECT_EQ(a.itemsize, 2u);
    EXPECT_EQ(a.length, 12u);
    EXPECT_EQ(a.shape, std::vector<uint64_t>({2, 3}));
    EXPECT_TRUE(a.fortran_order);
  }
  EXPECT_EQ(stream.substr(index->arrays[1].offset, 12), std::string(12, 'e'));

  // An int tuple first pickled elsewhere than as a 'shape' value is not
  // followed through the memo (joblib never writes one; see the header).
  const std::string elsewhere =
      std::string(L("\200\002]q\001(K\002K\003\206q\002")) +
      std::string(L("cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\201}(")) + key +
      "shape" + std::string(L("h\002")) +
      DtypeItem("i2", State8("<", kNoElsize)) + "ub" + std::string(12, 'd') +
      "e.";
  index = IndexJoblibStream(elsewhere);
  EXPECT_NE(index.status().message().find("has a 'shape' that is not a tuple"),
            absl::string_view::npos)
      << index.status();
}

TEST(JoblibReaderTest, MutatedStreamsNeverCrash) {
  std::mt19937_64 random(7);
  for (const char* name : kJoblibFiles) {
    const std::string good = ReadTestdata(name);
    for (int i = 0; i < 400; ++i) {
      std::string stream = good;
      for (int flips = 1 + random() % 3; flips > 0; --flips) {
        stream[random() % stream.size()] = static_cast<char>(random());
      }
      absl::StatusOr<IndexedStream> index = IndexJoblibStream(stream);
      if (!index.ok()) continue;
      EXPECT_LE(index->end_offset, stream.size());
      for (const LoadArrayLocation& a : index->arrays) {
        EXPECT_LE(a.offset, stream.size());
        EXPECT_LE(a.length, stream.size() - a.offset);
      }
    }
  }
}

TEST(JoblibReaderTest, RefusesAFrameBombWithinTheBudget) {
  // Empty FRAMEs cost nine bytes each but an edit of the skeleton each:
  // 256 MiB of them were 1.1 GB of edits.
  std::string pickle = "\x80\x04";
  const std::string empty_frame("\x95\0\0\0\0\0\0\0\0", 9);
  for (int i = 0; i < 200000; ++i) pickle += empty_frame;
  pickle += "N.";
  PickleLimits limits;
  limits.max_index_memory = 1 << 20;
  absl::StatusOr<IndexedStream> index = IndexJoblibStream(pickle, limits);
  EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(index.status().message().find("--max-pickle-memory"),
            std::string::npos)
      << index.status();
  // Within the default budget it is a valid pickle.
  EXPECT_TRUE(IndexJoblibStream(pickle).ok());
}

TEST(JoblibReaderTest, RefusesASkeletonLargerThanMaxPickleBytes) {
  const std::string pickle =
      "\x80\x04\x8e" + std::string("\x00\x10\0\0\0\0\0\0", 8) +
      std::string(4096, 'x') + ".";
  PickleLimits limits;
  limits.max_pickle_bytes = 4000;
  absl::StatusOr<IndexedStream> index = IndexJoblibStream(pickle, limits);
  EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(index.status().message().find("--max-pickle-bytes"),
            std::string::npos)
      << index.status();
  limits.max_pickle_bytes = 8192;
  EXPECT_TRUE(IndexJoblibStream(pickle, limits).ok());
}

TEST(JoblibReaderTest, CheckPickleStartDecidesOnTheFirstBytes) {
  EXPECT_TRUE(CheckPickleStart("").ok());
  EXPECT_TRUE(CheckPickleStart("\x80").ok());  // the version is to come
  EXPECT_TRUE(CheckPickleStart("\x80\x05").ok());
  EXPECT_TRUE(CheckPickleStart("(").ok());
  EXPECT_EQ(CheckPickleStart(std::string(1, '\0')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckPickleStart("\x80\x09").code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace persistd
