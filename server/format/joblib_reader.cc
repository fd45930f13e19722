#include "server/format/joblib_reader.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/format/pickle_opcodes.h"
#include "server/format/pickle_scanner.h"
#include "server/format/symbolic_stack.h"

namespace persistd {
namespace {

using namespace pickle_op;  // NOLINT: opcode names read best unqualified.

constexpr absl::string_view kCallMaterialize = "c__persistd__\nmaterialize\n(";
constexpr absl::string_view kTupleReduce = "tR";

// Opcodes of protocols 0 and 1, which a pickle without PROTO starts with.
bool IsProtocol01Opcode(uint8_t code) {
  static constexpr char kOps[] = "IJKMLSTUNVXF]ael)t}dsu02(1ghjpqrcRbio.PQG";
  return code != 0 && std::memchr(kOps, code, sizeof(kOps) - 1) != nullptr;
}

// A change to the input that turns it into the skeleton.
struct Edit {
  enum Order { kInsertAfterBuild = 0, kRemove = 1, kInsertBeforeWrapper = 2 };
  uint64_t offset;
  Order order;          // among edits at the same offset
  uint64_t end;         // kRemove: end of the removed range
  absl::string_view text;  // inserts
};

// Finds where the data after a NumpyArrayWrapper's BUILD (ending at
// `build_end`) lies and sets kind, offset, length and padded of *location;
// returns the end of the data.
absl::Status LocateData(absl::string_view stream, uint64_t build_end,
                        const ArrayLayout& layout,
                        LoadArrayLocation* location, uint64_t* data_end) {
  const uint64_t size = stream.size();
  if (layout.object) {
    // A complete nested pickle (joblib: pickle.dump(array, protocol=5)).
    PickleScanner nested(stream, build_end);
    PickleOp op;
    do {
      absl::Status status = nested.Next(&op);
      if (!status.ok()) {
        return absl::DataLossError(absl::StrCat(
            status.message(), " (in the object array stream that starts at "
                              "offset ", build_end, ")"));
      }
    } while (op.code != kStop);
    location->kind = LoadArrayLocation::Kind::kObjectStream;
    location->offset = build_end;
    location->length = op.end() - build_end;
    location->padded = false;
    *data_end = op.end();
    return absl::OkStatus();
  }
  uint64_t pos = build_end;
  if (layout.padded) {
    if (pos >= size) return ArrayDataPastEnd(build_end);
    const uint8_t pad = static_cast<uint8_t>(stream[pos]);
    if (pad < 1 || pad > layout.alignment) {
      return absl::DataLossError(absl::StrFormat(
          "invalid array padding length %d at offset %d", pad, pos));
    }
    if (pad > size - pos - 1) return ArrayDataPastEnd(build_end);
    for (uint64_t i = pos + 1; i <= pos + pad; ++i) {
      if (static_cast<uint8_t>(stream[i]) != 0xff) {
        return absl::DataLossError(absl::StrFormat(
            "invalid array padding byte at offset %d", i));
      }
    }
    pos += 1 + pad;
  }
  if (layout.too_large || layout.nbytes > size - pos) {
    return ArrayDataPastEnd(build_end);
  }
  location->kind = LoadArrayLocation::Kind::kRaw;
  location->offset = pos;
  location->length = layout.nbytes;
  location->padded = layout.padded;
  *data_end = pos + layout.nbytes;
  return absl::OkStatus();
}

}  // namespace

absl::Status ArrayDataPastEnd(uint64_t build_end) {
  return absl::DataLossError(absl::StrFormat(
      "array data runs past the end of the file (truncated?): the array "
      "after offset %d",
      build_end));
}

absl::Status CheckPickleStart(absl::string_view prefix) {
  if (prefix.empty()) return absl::OkStatus();
  const uint8_t first = static_cast<uint8_t>(prefix[0]);
  if (first == kProto) {
    if (prefix.size() >= 2 &&
        static_cast<uint8_t>(prefix[1]) > kHighestProtocol) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "not a pickle or joblib file: unsupported pickle protocol %d",
          static_cast<uint8_t>(prefix[1])));
    }
  } else if (!IsProtocol01Opcode(first)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "not a pickle or joblib file: starts with byte 0x%02x", first));
  }
  return absl::OkStatus();
}

absl::StatusOr<IndexedStream> IndexJoblibStream(absl::string_view stream,
                                                const PickleLimits& limits) {
  if (stream.empty()) {
    return absl::InvalidArgumentError(
        "not a pickle or joblib file: the stream is empty");
  }
  absl::Status start = CheckPickleStart(stream);
  if (!start.ok()) return start;

  IndexedStream result;
  std::vector<Edit> edits;
  // The stack, the edits and the arrays share one budget (a FRAME costs an
  // edit, a wrapper three edits and an array).
  MemoryBudget budget(limits.max_index_memory);
  auto over = [&budget](uint64_t offset) {
    return IndexMemoryExceeded(budget.limit(), "the list of arrays and edits",
                               offset);
  };
  PickleScanner scanner(stream);
  SymbolicStack stack(&budget);
  PickleOp op;
  while (true) {
    SymbolicStack::Event event;
    absl::Status status = stack.Run(&scanner, &op, &event);
    if (!status.ok()) return status;
    if (event == SymbolicStack::Event::kStop) break;
    if (!ReserveCharged(&budget, &edits, edits.size() + 3)) {
      return over(op.offset);
    }
    if (event == SymbolicStack::Event::kFrame) {
      edits.push_back({op.offset, Edit::kRemove, op.end(), {}});
      continue;
    }
    if (!ReserveCharged(&budget, &result.arrays, result.arrays.size() + 1) ||
        !budget.TryCharge(stack.build().layout.shape.size() *
                          sizeof(uint64_t))) {
      return over(op.offset);
    }

    const WrapperBuild& build = stack.build();
    LoadArrayLocation location{LoadArrayLocation::Kind::kLegacy, op.end(), 0,
                               false};
    edits.push_back(
        {build.start_offset, Edit::kInsertBeforeWrapper, 0, kCallMaterialize});
    edits.push_back({op.end(), Edit::kInsertAfterBuild, 0, kTupleReduce});
    if (build.klass == WrapperClass::kNumpyArrayWrapper) {
      // joblib's unpickler reads the data from where its frame ends.
      if (scanner.InFrame()) {
        return PickleCorrupt(
            "the frame does not end at the NumpyArrayWrapper's BUILD",
            op.offset);
      }
      uint64_t data_end = 0;
      status = LocateData(stream, op.end(), build.layout, &location, &data_end);
      if (!status.ok()) return status;
      location.dtype = build.layout.dtype;
      location.itemsize = build.layout.itemsize;
      location.shape = build.layout.shape;
      location.fortran_order = build.layout.fortran_order;
      if (data_end > op.end()) {
        edits.push_back({op.end(), Edit::kRemove, data_end, {}});
      }
      scanner.Seek(data_end);
    }
    result.arrays.push_back(std::move(location));
  }
  result.end_offset = op.end();

  std::stable_sort(edits.begin(), edits.end(),
                   [](const Edit& x, const Edit& y) {
                     return x.offset != y.offset ? x.offset < y.offset
                                                 : x.order < y.order;
                   });
  uint64_t skeleton_size = result.end_offset;
  for (const Edit& edit : edits) {
    skeleton_size += edit.text.size();
    if (edit.order == Edit::kRemove) skeleton_size -= edit.end - edit.offset;
  }
  if (skeleton_size > limits.max_pickle_bytes) {
    return PickleBytesExceeded(limits.max_pickle_bytes, result.end_offset);
  }
  result.skeleton.reserve(skeleton_size);
  uint64_t cursor = 0;
  for (const Edit& edit : edits) {
    if (edit.offset < cursor) {  // cannot happen: edits never overlap
      return absl::InternalError("overlapping edits while indexing");
    }
    result.skeleton.append(stream.data() + cursor, edit.offset - cursor);
    if (edit.order == Edit::kRemove) {
      cursor = edit.end;
    } else {
      result.skeleton.append(edit.text.data(), edit.text.size());
      cursor = edit.offset;
    }
  }
  result.skeleton.append(stream.data() + cursor, result.end_offset - cursor);
  return result;
}

}  // namespace persistd
