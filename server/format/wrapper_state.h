// joblib's array wrappers as the symbolic unpickler sees them: a
// NumpyArrayWrapper's state is a dict ({'subclass', 'shape', 'order',
// 'dtype', 'allow_mmap', 'numpy_array_alignment_bytes'}) that its BUILD
// applies, and what it says decides where the array's data lies after the
// BUILD and what the array is. WrapperStates keeps the part of that which
// does not fit in a tag: the dims of 'shape' tuples.
//
// Invariants:
//  1. A dict tag summarizes the last value set for each state key it has
//     seen (UpdateDict), whatever the order of the keys (old Pythons wrote
//     them in any order).
//  2. shape_dims_ holds, for each tuple built directly on top of a 'shape'
//     key (the unpickler pushes a dict value right after its key, for
//     SETITEM, SETITEMS and DICT alike), ndim followed by the dims; it
//     only grows, and a kTuple shape refers to it by 1 + its offset (0 is
//     the shape ()), so a reallocation invalidates nothing.
//  3. The capacity of shape_dims_ is charged to the budget.
//
// Not thread-safe.
#ifndef PERSISTD_SERVER_FORMAT_WRAPPER_STATE_H_
#define PERSISTD_SERVER_FORMAT_WRAPPER_STATE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/format/numpy_dtype.h"
#include "server/format/pickle_limits.h"
#include "server/format/symbolic_tag.h"

namespace persistd {

// What numpy says an array is, as a wrapper state tells it: the part of an
// array's description that every layer passes on unchanged.
struct ArrayMeta {
  // numpy's dtype.str when this layer can state it exactly: byte order
  // ('<' for numpy's '=' on this little-endian machine), kind letter and
  // item size ("<f8", ">i4", "|b1", "<c16", "|S10"; characters for 'U':
  // "<U10" has itemsize 40), datetime units as numpy writes them ("<M8",
  // "<M8[ns]", "<m8[10s]"), "|O" for object arrays. Empty for structured,
  // subarray and void dtypes, StringDType, and whatever the state does not
  // say exactly (no byte order, an unknown datetime unit, ...).
  std::string dtype;
  // dtype.itemsize; 0 only for object dtypes without a size (StringDType).
  uint64_t itemsize = 0;
  std::vector<uint64_t> shape;  // the state's 'shape' tuple; empty for 0-d
  bool fortran_order = false;   // the state's 'order' is 'F'
};

// What a NumpyArrayWrapper's state says about the bytes after its BUILD
// and about the array they hold.
struct ArrayLayout : ArrayMeta {
  // dtype.hasobject: the data is a complete nested pickle, no padding.
  bool object = false;
  // prod(shape) * itemsize, the raw data length (not for object arrays).
  // too_large is set instead when that overflows 64 bits.
  uint64_t nbytes = 0;
  bool too_large = false;
  // numpy_array_alignment_bytes is present and not None (joblib >= 1.2):
  // a pad byte and padding precede raw data.
  bool padded = false;
  uint32_t alignment = 0;  // the key's value when padded, clamped to 255
};

// The BUILD that sets an array wrapper's state.
struct WrapperBuild {
  WrapperClass klass = WrapperClass::kNone;
  uint64_t start_offset = 0;  // first opcode of the wrapper instance's entry
  ArrayLayout layout;         // kNumpyArrayWrapper only
};

class WrapperStates {
 public:
  explicit WrapperStates(MemoryBudget* budget) : budget_(budget) {}
  WrapperStates(const WrapperStates&) = delete;
  WrapperStates& operator=(const WrapperStates&) = delete;

  // Makes *tuple, the summary of the n items at `items` (a tuple built on
  // a 'shape' key), a shape when they are all non-negative ints (invariant
  // 2). False when the budget does not allow it.
  bool RecordShape(const SymbolicTag* items, size_t n, SymbolicTag* tuple);

  // Reads the state keys among the key/value pairs at [pairs, end) set on
  // the dict `dict` (invariant 1).
  static void UpdateDict(const SymbolicTag* pairs, const SymbolicTag* end,
                         SymbolicTag* dict);

  // The layout described by `state`, a tag of the same stack, if it is a
  // complete NumpyArrayWrapper state dict; DataLoss/Unimplemented
  // otherwise (`offset`, of the BUILD, goes in the message).
  absl::Status LayoutFromState(const SymbolicTag& state, uint64_t offset,
                               const DtypeTable& dtypes,
                               ArrayLayout* layout) const;

 private:
  MemoryBudget* const budget_;
  std::vector<uint64_t> shape_dims_;
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_FORMAT_WRAPPER_STATE_H_
