// JoblibIndexer is the one walk of a decoded joblib stream: fed the stream's
// bytes in order, in pieces of any size, it finds each array (where its
// data lies, what the wrapper state says it is, where it sits in the value)
// and, at the end, rewrites the pickle part into the skeleton that the C
// unpickler loads (joblib_reader.h describes the rewrite). The daemon's
// segment build feeds it the decoder's output as it comes;
// IndexJoblibStream feeds it a whole stream at once.
//
// Array data is never kept: raw data that arrives after its wrapper has
// been read goes straight to the Listener, and at most one slice (kSlice)
// of it is copied before the indexer knows it is data. The pickle part
// (opcodes, padding, object-array pickles) is kept, at its stream offsets
// in a sparse buffer, until Finish builds the skeleton; it may not outgrow
// limits.max_pickle_bytes, and the symbolic unpickler, the edits and the
// list of arrays share limits.max_index_memory (pickle_limits.h).
//
// A byte that makes the stream invalid fails the Feed that brings it, so a
// decompression bomb stops at its first bad byte; a stream that ends too
// early fails Finish. The errors are the same however the stream is cut.
//
// Not thread-safe.
#ifndef PERSISTD_SERVER_FORMAT_JOBLIB_INDEXER_H_
#define PERSISTD_SERVER_FORMAT_JOBLIB_INDEXER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/pickle/pickle_scanner.h"
#include "server/format/pickle_limits.h"
#include "server/format/symbolic_stack.h"
#include "server/format/wrapper_state.h"
#include "server/io/growable_buffer.h"

namespace persistd {

// An array of a stream, as the format layer reports it: where its data
// lies, what the wrapper state says it is (ArrayMeta, as the wrapper layer
// found it: set for kRaw and kObjectStream, empty for kLegacy, whose state
// is in the companion file), and where it sits in the value. For kRaw,
// length == prod(shape) * itemsize and the bytes are in C order, or in
// Fortran order if fortran_order.
struct LoadArrayLocation : ArrayMeta {
  enum class Kind { kRaw, kObjectStream, kLegacy };
  Kind kind = Kind::kLegacy;
  uint64_t offset = 0;  // in the input stream (kRaw: first data byte;
                        // kObjectStream: first byte of the nested pickle;
                        // kLegacy: just past the wrapper's BUILD)
  uint64_t length = 0;  // 0 for kLegacy
  bool padded = false;  // false for pre-1.2 files (no
                        // numpy_array_alignment_bytes)

  // Where the array sits in the unpickled value, e.g. ["trees"][3]["value"]
  // (object_paths.h); empty when that cannot be told, or when the array is
  // the value itself. Known only once the value is complete: Finish sets
  // it, Listener::OnArray sees it empty.
  std::string path;
};

struct IndexedStream {
  std::string skeleton;                   // the rewritten pickle
  std::vector<LoadArrayLocation> arrays;  // in stream order
  uint64_t end_offset;                    // offset just past the top-level STOP
};

class JoblibIndexer {
 public:
  // Where the stream goes as it is classified.
  class Listener {
   public:
    virtual ~Listener() = default;
    // The stream's bytes [offset, offset + bytes.size()): every byte up to
    // the top-level STOP, each once, in order. Valid during the call only.
    virtual absl::Status OnBytes(uint64_t offset, absl::string_view bytes) = 0;
    // An array, in stream order: a raw array after every byte before its
    // data and before any of its data, an object array after its nested
    // pickle, a legacy array after its wrapper's BUILD.
    virtual absl::Status OnArray(const LoadArrayLocation& array) = 0;
  };

  // How much of a piece is copied before the indexer looks at it: the most
  // array data it may copy before it knows that it is data.
  static constexpr size_t kSlice = size_t{256} << 10;

  // `listener` (may be null) must outlive the indexer; an error it returns
  // ends the stream and is returned as it is.
  explicit JoblibIndexer(const PickleLimits& limits,
                         Listener* listener = nullptr);
  JoblibIndexer(const JoblibIndexer&) = delete;
  JoblibIndexer& operator=(const JoblibIndexer&) = delete;

  // Classifies the next bytes of the stream. Bytes after the top-level STOP
  // are not part of the value: they are ignored. Errors (see
  // IndexJoblibStream) are final: every later call returns the same one.
  absl::Status Feed(absl::string_view bytes);

  // Feed for a stream given whole, read where it is: nothing is copied.
  // `stream` must stay valid until Finish. REQUIRES: nothing fed before.
  absl::Status FeedWhole(absl::string_view stream);

  // Looks at every byte fed so far, including an opcode put off until more
  // of it arrived (Feed retries a long opcode only once its bytes seen have
  // doubled): stopped() is then exact. The error, if that finds one.
  absl::Status Settle();

  // Whether the top-level STOP has been read.
  bool stopped() const { return step_ == Step::kStopped; }

  // Ends the stream: the index, or the error of a stream that ends here.
  // Call once.
  absl::StatusOr<IndexedStream> Finish();

 private:
  enum class Step { kStart, kPickle, kObjectStream, kPadding, kData, kStopped };

  // A change to the input that turns it into the skeleton.
  struct Edit {
    enum Order { kInsertAfterBuild = 0, kRemove = 1, kInsertBeforeWrapper = 2 };
    uint64_t offset;
    Order order;             // among edits at the same offset
    uint64_t end;            // kRemove: end of the removed range
    absl::string_view text;  // inserts
  };

  // Runs the steps over the buffered bytes as far as they go.
  absl::Status Advance();
  // kPickle: runs the pickle to its next array, its STOP or an error.
  absl::Status Pickle();
  absl::Status ObjectStream();
  absl::Status Padding();
  // The raw data of the current wrapper starts at `start`.
  absl::Status StartData(uint64_t start);
  // Passes buffered bytes up to `end` on; array data pages are released.
  absl::Status Deliver(uint64_t end, bool data);
  absl::Status AddArray(LoadArrayLocation array, uint64_t data_end);
  // Fails when the pickle part outgrows limits_.max_pickle_bytes.
  absl::Status CheckPicklePart();
  absl::Status Fail(absl::Status status);
  // The stream received so far (only the pickle bytes are meaningful).
  absl::string_view buffered() const {
    return whole_.data() != nullptr ? whole_.substr(0, received_)
                                    : buffer_.view(0, received_);
  }

  const PickleLimits limits_;
  Listener* const listener_;
  MemoryBudget budget_;
  SymbolicStack stack_;  // after budget_: it charges it
  // The stream, sparse: pickle bytes at their offsets, array data absent
  // (or released once passed on).
  GrowableBuffer buffer_;
  absl::string_view whole_;  // FeedWhole's stream, instead of buffer_
  PickleScanner scanner_{absl::string_view()};
  std::optional<PickleScanner> nested_;  // kObjectStream only

  // Invariants: delivered_ <= received_; [0, delivered_) went to the
  // listener; in kData, [delivered_, data_end_) is the rest of the current
  // array's data, and bytes past received_ skip the buffer. data_bytes_ is
  // the raw data received, so received_ - data_bytes_ is the pickle part
  // (and what is not classified yet).
  Step step_ = Step::kStart;
  uint64_t received_ = 0;
  uint64_t delivered_ = 0;
  uint64_t data_bytes_ = 0;
  uint64_t data_end_ = 0;
  // The NumpyArrayWrapper whose data comes next.
  ArrayLayout layout_;
  uint64_t build_end_ = 0;
  LoadArrayLocation current_{};
  // A pickle opcode that did not fit in the bytes seen is tried again once
  // received_ reaches retry_at_: a long opcode costs O(n), not O(n^2).
  uint64_t retry_at_ = 0;
  std::vector<Edit> edits_;
  std::vector<LoadArrayLocation> arrays_;
  uint64_t end_offset_ = 0;
  absl::Status error_;      // final
  absl::Status truncated_;  // what ending the stream now would be
  bool finished_ = false;
};

// Whether `prefix`, the first bytes of a decoded stream, starts like a
// pickle: PROTO with a version this layer reads, or an opcode of protocol
// 0 or 1. InvalidArgumentError("not a pickle or joblib file ...")
// otherwise, the error the indexer gives. A lone PROTO byte or an empty
// prefix is OK: what decides is still to come.
absl::Status CheckPickleStart(absl::string_view prefix);

// The error for a NumpyArrayWrapper whose data, after its BUILD ending at
// `build_end`, cannot fit in the stream: DataLossError("array data runs
// past the end of the file (truncated?) ...").
absl::Status ArrayDataPastEnd(uint64_t build_end);

}  // namespace persistd

#endif  // PERSISTD_SERVER_FORMAT_JOBLIB_INDEXER_H_
