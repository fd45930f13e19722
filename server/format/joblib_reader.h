// IndexJoblibStream finds the arrays in a (decompressed) joblib stream and
// rewrites its pickle part so that the C unpickler can load it.
//
// joblib's files are not plain pickles: each array is a NumpyArrayWrapper
// object whose BUILD is followed by the array data (raw bytes with
// alignment padding, or a nested pickle for object arrays), and only
// joblib's pure-Python unpickler, which hooks BUILD, can read them. The
// index is computed by scanning opcodes with a symbolic stack
// (joblib_indexer.h); nothing is unpickled or executed, and the data is
// skipped (at most a slice of each array is copied, never read), so a 2 GB
// stream with a few large arrays indexes in milliseconds.
//
// The rewritten pickle ("skeleton") is the original opcodes with
//  (a) FRAME opcodes removed (it is unframed; PROTO is kept),
//  (b) for each wrapper (NumpyArrayWrapper, and the legacy NDArrayWrapper
//      and ZNDArrayWrapper), "c__persistd__\nmaterialize\n(" (GLOBAL +
//      MARK) inserted before the first opcode of the wrapper instance and
//      "tR" (TUPLE + REDUCE) after its BUILD,
//  (c) the padding and data, or the nested pickle, removed.
// An unpickler whose find_class maps ("__persistd__", "materialize") to a
// function then calls materialize(wrapper) once per wrapper, in stream
// order, and call i pairs with arrays[i]. The inserted opcodes touch no
// memo, so the memo indices of the original stay valid. A plain pickle
// without wrappers comes back unchanged except for framing.
#ifndef PERSISTD_SERVER_FORMAT_JOBLIB_READER_H_
#define PERSISTD_SERVER_FORMAT_JOBLIB_READER_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/format/joblib_indexer.h"
#include "server/format/pickle_limits.h"

namespace persistd {

// Indexes a decompressed joblib (>= 0.10) stream, a legacy (< 0.10) stream,
// or a plain pickle: JoblibIndexer fed the whole stream at once. Never
// executes anything.
// Errors: InvalidArgumentError("not a pickle or joblib file ...") when the
// stream does not start like a pickle; DataLossError naming the problem and
// its offset for a corrupt or truncated stream (including "array data runs
// past the end of the file (truncated?)"); UnimplementedError for an array
// whose dtype this layer cannot size; InvalidArgumentError("pickle
// refused: ...") when indexing needs more memory than
// limits.max_index_memory, or the pickle part or the skeleton is larger
// than limits.max_pickle_bytes.
absl::StatusOr<IndexedStream> IndexJoblibStream(
    absl::string_view stream, const PickleLimits& limits = PickleLimits());

}  // namespace persistd

#endif  // PERSISTD_SERVER_FORMAT_JOBLIB_READER_H_
