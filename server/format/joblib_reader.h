// IndexJoblibStream finds the arrays in a (decompressed) joblib stream and
// rewrites its pickle part so that the C unpickler can load it.
//
// joblib's files are not plain pickles: each array is a NumpyArrayWrapper
// object whose BUILD is followed by the array data (raw bytes with
// alignment padding, or a nested pickle for object arrays), and only
// joblib's pure-Python unpickler, which hooks BUILD, can read them. The
// index is computed by scanning opcodes with a symbolic stack; nothing is
// unpickled or executed, and the data is skipped, never copied, so a 2 GB
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

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/format/pickle_limits.h"

namespace persistd {

struct LoadArrayLocation {
  enum class Kind { kRaw, kObjectStream, kLegacy };
  Kind kind;
  uint64_t offset;  // in the input stream (kRaw: first data byte;
                    // kObjectStream: first byte of the nested pickle;
                    // kLegacy: just past the wrapper's BUILD)
  uint64_t length;  // 0 for kLegacy
  bool padded;      // false for pre-1.2 files (no numpy_array_alignment_bytes)

  // What the wrapper state says about the array, for clients that do not
  // unpickle. Set for kRaw and kObjectStream, empty for kLegacy (its state
  // is in the companion file). For kRaw, length == prod(shape) * itemsize
  // and the bytes are in C order, or in Fortran order if fortran_order.
  //
  // dtype is numpy's dtype.str when it can be stated exactly: byte order
  // ('<' also for numpy's native '='), kind letter and item size, e.g.
  // "<f8", ">i4", "|u1", "|b1", "<c16", "|S10", "<U10" (10 characters,
  // itemsize 40), "<M8" (generic), "<M8[ns]", "<m8[10s]", "|O" (object
  // arrays). It is empty for structured, subarray and void dtypes, for
  // StringDType, and whenever the state leaves the exact string in doubt;
  // itemsize is still set then (0 only for StringDType).
  std::string dtype;
  uint64_t itemsize = 0;
  std::vector<uint64_t> shape;  // the state's 'shape'; empty for 0-d
  bool fortran_order = false;   // the state's 'order' is 'F'
};

struct IndexedStream {
  std::string skeleton;                   // the rewritten pickle (above)
  std::vector<LoadArrayLocation> arrays;  // in stream order
  uint64_t end_offset;                    // offset just past the top-level STOP
};

// Indexes a decompressed joblib (>= 0.10) stream, a legacy (< 0.10) stream,
// or a plain pickle. Never executes anything.
// Errors: InvalidArgumentError("not a pickle or joblib file ...") when the
// stream does not start like a pickle; DataLossError naming the problem and
// its offset for a corrupt or truncated stream (including "array data runs
// past the end of the file (truncated?)"); UnimplementedError for an array
// whose dtype this layer cannot size; InvalidArgumentError("pickle
// refused: ...") when indexing needs more memory than
// limits.max_index_memory, or the skeleton would be larger than
// limits.max_pickle_bytes.
absl::StatusOr<IndexedStream> IndexJoblibStream(
    absl::string_view stream, const PickleLimits& limits = PickleLimits());

// Whether `prefix`, the first bytes of a decoded stream, starts like a
// pickle: PROTO with a version this layer reads, or an opcode of protocol
// 0 or 1. InvalidArgumentError("not a pickle or joblib file ...")
// otherwise, the error IndexJoblibStream gives. A lone PROTO byte or an
// empty prefix is OK: what decides is still to come.
absl::Status CheckPickleStart(absl::string_view prefix);

// The error for a NumpyArrayWrapper whose data, after its BUILD ending at
// `build_end`, cannot fit in the stream: DataLossError("array data runs
// past the end of the file (truncated?) ...").
absl::Status ArrayDataPastEnd(uint64_t build_end);

}  // namespace persistd

#endif  // PERSISTD_SERVER_FORMAT_JOBLIB_READER_H_
