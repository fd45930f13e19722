// Fuzzes IndexJoblibStream, the load-side indexer, with arbitrary bytes
// (a decompressed stream), and checks what joblib_reader.h promises about
// a successful index:
//  - end_offset and every array's data lie inside the stream, arrays in
//    stream order without overlap; kRaw length is prod(shape) * itemsize;
//  - the skeleton is a sequence of whole opcodes without FRAME ending with
//    its only top-level STOP, holding one materialize call per array when
//    the input had none of its own;
//  - a stream without arrays indexes to itself, unframed, and indexing that
//    again changes nothing.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/format/joblib_reader.h"
#include "server/format/pickle_opcodes.h"
#include "server/format/pickle_scanner.h"
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

}  // namespace
}  // namespace fuzz
}  // namespace persistd

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace persistd;        // NOLINT
  using namespace persistd::fuzz;  // NOLINT
  const absl::string_view stream(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<IndexedStream> index = IndexJoblibStream(stream);
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
