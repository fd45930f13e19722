// Fuzzes the load-side indexer with arbitrary bytes (a decompressed
// stream): IndexJoblibStream, and the JoblibIndexer under it fed in
// random-sized pieces.
//
// A successful index must keep joblib_reader.h's promises:
//  - end_offset and every array's data lie inside the stream, arrays in
//    stream order without overlap; kRaw length is prod(shape) * itemsize;
//  - the skeleton is a sequence of whole opcodes without FRAME ending with
//    its only top-level STOP, holding one materialize call per array when
//    the input had none of its own;
//  - a stream without arrays indexes to itself, unframed, and indexing that
//    again changes nothing.
// And joblib_indexer.h's: the result and the errors are the same however
// the stream is cut (also under tight PickleLimits, so the limits trip at
// every point), and the Listener sees every byte up to the STOP once, in
// order, and each array at its place in the stream.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/pickle/pickle_opcodes.h"
#include "common/pickle/pickle_scanner.h"
#include "server/format/joblib_indexer.h"
#include "server/format/joblib_reader.h"
#include "server/format/pickle_limits.h"
#include "server/fuzz/fuzz_util.h"

namespace persistd {
namespace fuzz {
namespace {

void CheckArrays(absl::string_view stream, const IndexedStream& index) {
  uint64_t previous_end = 0;
  for (size_t i = 0; i < index.arrays.size(); ++i) {
    const LoadArrayLocation& a = index.arrays[i];
    const std::string where =
        absl::StrCat("array ", i, " at ", a.offset, " length ", a.length);
    FUZZ_CHECK(a.offset >= previous_end && a.offset <= index.end_offset &&
                   a.length <= index.end_offset - a.offset,
               where);
    previous_end = a.offset + a.length;
    switch (a.kind) {
      case LoadArrayLocation::Kind::kLegacy:
        FUZZ_CHECK(a.length == 0 && a.dtype.empty() && a.shape.empty(), where);
        break;
      case LoadArrayLocation::Kind::kObjectStream: {
        // A complete nested pickle: its last opcode is STOP.
        FUZZ_CHECK(a.length >= 1 && !a.padded, where);
        FUZZ_CHECK(stream[a.offset + a.length - 1] == pickle_op::kStop, where);
        break;
      }
      case LoadArrayLocation::Kind::kRaw: {
        uint64_t count = 1;
        bool overflow = false;
        bool zero = false;
        for (uint64_t dim : a.shape) {
          if (dim == 0) zero = true;
          if (!overflow && __builtin_mul_overflow(count, dim, &count)) {
            overflow = true;
          }
        }
        if (zero) {
          count = 0;
          overflow = false;
        }
        uint64_t nbytes = 0;
        FUZZ_CHECK(!overflow &&
                       !__builtin_mul_overflow(count, a.itemsize, &nbytes) &&
                       nbytes == a.length,
                   where);
        if (a.padded) {
          // A pad byte p, then p bytes 0xff, right before the data.
          FUZZ_CHECK(a.offset >= 2, where);
          size_t p = 0;
          while (p < 255 && p + 1 <= a.offset &&
                 static_cast<uint8_t>(stream[a.offset - 1 - p]) == 0xff) {
            ++p;
          }
          FUZZ_CHECK(p >= 1, where);
        }
        break;
      }
    }
  }
}

// Scans the skeleton; returns the number of materialize calls in it.
size_t CheckSkeleton(const std::string& skeleton) {
  PickleScanner scanner(skeleton);
  PickleOp op;
  size_t calls = 0;
  do {
    absl::Status status = scanner.Next(&op);
    FUZZ_CHECK(status.ok(), status);
    FUZZ_CHECK(op.code != pickle_op::kFrame, "a FRAME in the skeleton");
    if (op.code == pickle_op::kGlobal && op.arg == "__persistd__" &&
        op.arg2 == "materialize") {
      ++calls;
    }
  } while (op.code != pickle_op::kStop);
  FUZZ_CHECK(scanner.AtEnd(),
             absl::StrCat("the skeleton's STOP at ", op.offset,
                          " is not its end, ", skeleton.size()));
  return calls;
}

// Checks what JoblibIndexer promises its Listener.
class CheckingListener : public JoblibIndexer::Listener {
 public:
  explicit CheckingListener(absl::string_view stream) : stream_(stream) {}

  absl::Status OnBytes(uint64_t offset, absl::string_view bytes) override {
    FUZZ_CHECK(!bytes.empty(), absl::StrCat("empty OnBytes at ", offset));
    FUZZ_CHECK(offset == delivered_,
               absl::StrCat("OnBytes at ", offset, " after ", delivered_));
    FUZZ_CHECK(offset <= stream_.size() &&
                   bytes.size() <= stream_.size() - offset &&
                   bytes == stream_.substr(offset, bytes.size()),
               absl::StrCat("OnBytes of ", bytes.size(), " at ", offset,
                            " are not the stream's"));
    delivered_ += bytes.size();
    return absl::OkStatus();
  }

  absl::Status OnArray(const LoadArrayLocation& array) override {
    const std::string where = absl::StrCat("OnArray at ", array.offset,
                                           " with ", delivered_, " delivered");
    switch (array.kind) {
      case LoadArrayLocation::Kind::kRaw:
        FUZZ_CHECK(delivered_ == array.offset, where);
        break;
      case LoadArrayLocation::Kind::kObjectStream:
        FUZZ_CHECK(delivered_ == array.offset + array.length, where);
        break;
      case LoadArrayLocation::Kind::kLegacy:
        FUZZ_CHECK(delivered_ == array.offset, where);
        break;
    }
    FUZZ_CHECK(array.path.empty(), where);
    arrays_.push_back(array);
    return absl::OkStatus();
  }

  uint64_t delivered() const { return delivered_; }
  const std::vector<LoadArrayLocation>& arrays() const { return arrays_; }

 private:
  const absl::string_view stream_;
  uint64_t delivered_ = 0;
  std::vector<LoadArrayLocation> arrays_;
};

std::string DescribeArray(const LoadArrayLocation& a) {
  std::string out =
      absl::StrCat(static_cast<int>(a.kind), "@", a.offset, "+", a.length,
                   " padded ", a.padded, " ", a.dtype, " itemsize ", a.itemsize,
                   " fortran ", a.fortran_order, " shape");
  for (uint64_t dim : a.shape) absl::StrAppend(&out, ",", dim);
  return out;
}

std::string DescribeResult(const absl::StatusOr<IndexedStream>& result,
                           bool with_paths) {
  if (!result.ok()) return result.status().ToString();
  std::string out = absl::StrCat("end ", result->end_offset, " skeleton ",
                                 result->skeleton.size(), " bytes ",
                                 absl::CEscape(result->skeleton));
  for (const LoadArrayLocation& a : result->arrays) {
    absl::StrAppend(&out, " | ", DescribeArray(a));
    if (with_paths) absl::StrAppend(&out, " path ", a.path);
  }
  return out;
}

// Indexes `stream` fed whole (chunk_seed < 0) or in pieces, checking the
// listener's view against the result.
absl::StatusOr<IndexedStream> IndexWithListener(absl::string_view stream,
                                                const PickleLimits& limits,
                                                int chunk_seed) {
  CheckingListener listener(stream);
  JoblibIndexer indexer(limits, &listener);
  absl::Status status;
  if (chunk_seed < 0) {
    status = indexer.FeedWhole(stream);
  } else {
    ChunkSizes sizes(static_cast<uint64_t>(chunk_seed));
    size_t pos = 0;
    while (status.ok() && pos < stream.size()) {
      const size_t n = sizes.Next(stream.size() - pos);
      status = indexer.Feed(stream.substr(pos, n));
      pos += n;
      if (status.ok() && n % 5 == 1) status = indexer.Settle();
    }
  }
  absl::StatusOr<IndexedStream> result =
      status.ok() ? indexer.Finish() : absl::StatusOr<IndexedStream>(status);
  if (result.ok()) {
    FUZZ_CHECK(listener.delivered() == result->end_offset,
               absl::StrCat(listener.delivered(), " bytes delivered, end ",
                            result->end_offset));
    FUZZ_CHECK(listener.arrays().size() == result->arrays.size());
    for (size_t i = 0; i < result->arrays.size(); ++i) {
      FUZZ_CHECK(DescribeArray(listener.arrays()[i]) ==
                     DescribeArray(result->arrays[i]),
                 absl::StrCat("array ", i, ": OnArray ",
                              DescribeArray(listener.arrays()[i]), ", Finish ",
                              DescribeArray(result->arrays[i])));
    }
  }
  return result;
}

// Whether `result` is the refusal of a pickle part over max_pickle_bytes.
bool OverPickleBytes(const absl::StatusOr<IndexedStream>& result) {
  return !result.ok() && absl::StartsWith(result.status().message(),
                                          "pickle refused: its pickle part");
}

// The result must not depend on how the stream is cut. Except: the
// max_pickle_bytes refusal names the offset where the Feed that crossed
// the limit ended, and FeedWhole reports a corrupt byte past the limit
// before the limit; then both must still fail.
void ExpectSameIndex(absl::string_view stream, const PickleLimits& limits,
                     const absl::StatusOr<IndexedStream>& whole,
                     int chunk_seed) {
  const absl::StatusOr<IndexedStream> pieces =
      IndexWithListener(stream, limits, chunk_seed);
  const std::string a = DescribeResult(whole, /*with_paths=*/true);
  const std::string b = DescribeResult(pieces, /*with_paths=*/true);
  const std::string detail = absl::StrCat("whole: ", a, "\nin pieces: ", b);
  if (OverPickleBytes(whole) || OverPickleBytes(pieces)) {
    FUZZ_CHECK(!whole.ok() && !pieces.ok(), detail);
    return;
  }
  FUZZ_CHECK(a == b, detail);
}

}  // namespace
}  // namespace fuzz
}  // namespace persistd

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace persistd;        // NOLINT
  using namespace persistd::fuzz;  // NOLINT
  const absl::string_view stream(reinterpret_cast<const char*>(data), size);
  // The cuts follow from the input, so a finding reproduces from its file.
  uint32_t hash = static_cast<uint32_t>(size);
  for (size_t i = 0; i < size && i < 16; ++i) hash = hash * 31 + data[i];
  const int chunk_seed = static_cast<int>(hash & 0xffff);

  PickleLimits tight;
  tight.max_pickle_bytes = 4096;
  tight.max_index_memory = 64 << 10;
  ExpectSameIndex(stream, tight, IndexWithListener(stream, tight, -1),
                  chunk_seed);

  absl::StatusOr<IndexedStream> index = IndexJoblibStream(stream);
  ExpectSameIndex(stream, PickleLimits(), index, chunk_seed);
  if (!index.ok()) {
    const absl::StatusCode code = index.status().code();
    FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument ||
                   code == absl::StatusCode::kDataLoss ||
                   code == absl::StatusCode::kUnimplemented,
               index.status());
    return 0;
  }
  FUZZ_CHECK(index->end_offset >= 1 && index->end_offset <= stream.size());
  FUZZ_CHECK(stream[index->end_offset - 1] == pickle_op::kStop);
  CheckArrays(stream, *index);
  const size_t calls = CheckSkeleton(index->skeleton);
  if (stream.find("__persistd__") == absl::string_view::npos) {
    FUZZ_CHECK(calls == index->arrays.size(),
               absl::StrCat(calls, " materialize calls for ",
                            index->arrays.size(), " arrays"));
  }
  if (index->arrays.empty()) {
    absl::StatusOr<IndexedStream> again = IndexJoblibStream(index->skeleton);
    FUZZ_CHECK(again.ok(), again.status());
    FUZZ_CHECK(again->arrays.empty() && again->skeleton == index->skeleton &&
                   again->end_offset == index->skeleton.size(),
               "re-indexing a skeleton without arrays changed it");
  }
  return 0;
}
