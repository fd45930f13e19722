// SymbolicStack simulates the unpickler's stack and memo with tags in place
// of objects, so the format layer can find joblib's array wrappers, the
// length of the data that follows them and what the wrapper state says
// about the array (dtype, shape, order) without executing anything.
//
// A tag records only what the wrapper logic needs: short strings by class
// ("joblib.numpy_pickle", "shape", a dtype code like "f8", a byte order
// "<", a datetime unit "ns", ...), ints, classes of interest, summaries of
// tuples and dicts, numpy dtypes, numpy dtype states and wrapper
// instances. Everything else is OTHER. Each tag also remembers the offset
// of the first opcode that contributed to its stack entry, which is where
// the reader inserts the call that replaces a wrapper.
//
// What does not fit in a 32-byte tag lives in two side tables that only the
// few tuples and dtypes that matter write to, so the hot path (memo
// opcodes, small containers) never touches them:
//  - shape_dims_ holds the ints of each tuple that is built directly on top
//    of a 'shape' string, i.e. the value of a 'shape' key (the unpickler
//    pushes a dict value right after its key, for SETITEM, SETITEMS and
//    DICT alike), as ndim followed by the dims;
//  - dtypes_ holds one record per numpy.dtype object (one per REDUCE of
//    numpy.dtype).
//
// Invariants:
//  1. stack_ holds one tag per entry of the real unpickler's stack, with
//     marks inline (as pickletools models them); marks_ holds the indices of
//     the MARK tags in stack_, innermost last.
//  2. For every entry, start is the offset of the first opcode whose effect
//     is part of the entry, and the opcodes from start up to the present
//     touch no entry below it. So "GLOBAL+MARK" inserted before start and
//     "TUPLE+REDUCE" inserted after the entry is complete wrap exactly that
//     entry.
//  3. memo_count_ is the number of distinct memo indices set, which is
//     what MEMOIZE uses as its index (like the C unpickler's memo_len).
//  4. Only tags that can matter (see Relevant() in the .cc) are kept in the
//     memo; other memo entries are remembered as "set" only (one byte each
//     for the usual dense indices), so memory stays small for skeletons
//     with millions of memoized objects. A shape tuple
//     is relevant, so a wrapper state that refers to another wrapper's
//     shape with GET still finds its dims; an int tuple that was first
//     pickled anywhere but as a 'shape' value is not (joblib never shares
//     those), and a state that refers to one is reported as having a bad
//     shape, as before.
//  5. Tags are values, but dtypes are objects: a kDtype tag is a handle to
//     dtypes_[aux], and BUILD updates that record in place. So a dtype that
//     was memoized (or DUPed) before its BUILD set its item size, byte
//     order and datetime unit shows them wherever it is fetched later, as
//     the real unpickler's shared object would.
//  6. shape_dims_ and dtypes_ only grow; tags refer to them by index, so
//     a reallocation invalidates nothing. They grow by one record per
//     'shape' value and per dtype object, like memo_tags_ by one tag per
//     memo index that ever held a relevant object.
//  7. Everything the stack allocates is charged to budget_: the capacity
//     of every vector, kHashNodeBytes per hash map entry. A vector grows
//     only through Reserve(), which charges first, so the stack never holds
//     more than the budget's limit (plus, while a vector moves, its old
//     copy). Before each opcode stack_ and marks_ have room for one more
//     entry, the most any opcode pushes; an opcode that needs more memory
//     than the budget has fails with IndexMemoryExceeded.
//
//  8. Every tag that stands for an object holding an array has that
//     object's node in paths_; containers get one when such an object is
//     put into them (object_paths.h), so an array's path can be read once
//     the value is complete.
//
// Not thread-safe.
#ifndef PERSISTD_SERVER_FORMAT_SYMBOLIC_STACK_H_
#define PERSISTD_SERVER_FORMAT_SYMBOLIC_STACK_H_

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "server/format/object_paths.h"
#include "server/format/pickle_limits.h"
#include "server/format/pickle_scanner.h"

namespace persistd {

// The three joblib wrapper classes, all in module joblib.numpy_pickle.
enum class WrapperClass : uint8_t {
  kNone = 0,
  kNumpyArrayWrapper,  // joblib >= 0.10: data follows the wrapper's BUILD
  kNDArrayWrapper,     // joblib < 0.10: data in a companion .npy file
  kZNDArrayWrapper,    // joblib < 0.10: data in a companion .npy.z file
};

// What a NumpyArrayWrapper's state says about the bytes after its BUILD
// and about the array they hold.
struct ArrayLayout {
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

  // numpy's dtype.str when this layer can state it exactly: byte order
  // ('<' for numpy's '=' on this little-endian machine), kind letter and
  // item size ("<f8", ">i4", "|b1", "<c16", "|S10"; characters for 'U':
  // "<U10" has itemsize 40), datetime units as numpy writes them ("<M8",
  // "<M8[ns]", "<m8[10s]"), "|O" for object arrays. Empty for structured,
  // subarray and void dtypes, StringDType, and whatever the state does not
  // say exactly (no byte order, an unknown datetime unit, ...).
  std::string dtype;
  // dtype.itemsize; when !object, nbytes == prod(shape) * itemsize. 0 only
  // for object dtypes without a size (StringDType).
  uint64_t itemsize = 0;
  std::vector<uint64_t> shape;  // the state's 'shape' tuple; empty for 0-d
  bool fortran_order = false;   // the state's 'order' is 'F'
};

// The BUILD that sets an array wrapper's state.
struct WrapperBuild {
  WrapperClass klass = WrapperClass::kNone;
  uint64_t start_offset = 0;  // first opcode of the wrapper instance's entry
  ArrayLayout layout;         // kNumpyArrayWrapper only
};

// One stack (or memo) entry. 32 bytes, trivially copyable.
struct SymbolicTag {
  enum Kind : uint8_t {
    kOther = 0,
    kMark,
    kNone,        // Python None
    kInt,         // a = value
    kString,      // klass = StrClass; a dtype code: letter, aux = digits;
                  // a byte order: letter; a datetime unit: aux = unit
    kGlobal,      // klass = GlobalClass
    kTuple,       // summary, see kTup* bits
    kDict,        // summary of wrapper-state keys, see the .cc
    kDtype,       // numpy.dtype: aux = index in dtypes_
    kDtypeState,  // a numpy.dtype __setstate__ tuple, see the .cc
    kWrapper,     // klass = GlobalClass of the wrapper
    kList,        // a list: a = its length so far
  };
  Kind kind = kOther;
  uint8_t klass = 0;
  uint8_t bits = 0;  // kString and kOther strings: kTagText, see the .cc
  char letter = 0;
  uint32_t aux = 0;
  uint64_t start = 0;
  int64_t a = 0;
  uint32_t b = 0;
  // The object's node in paths() (object_paths.h), 0 if none: every kind
  // that stands for an object may hold an array.
  uint32_t node = 0;
};
static_assert(sizeof(SymbolicTag) == 32, "tags are copied on the hot path");

class SymbolicStack {
 public:
  enum class Event {
    kNone,
    kFrame,         // op was a FRAME (it has no stack effect)
    kWrapperBuild,  // op was the BUILD of an array wrapper: see build()
    kStop,          // op was STOP: see stopped()
  };

  // Charges what it allocates to `budget`, which must outlive it (and may
  // be shared with the caller's own allocations).
  explicit SymbolicStack(MemoryBudget* budget);
  // With a budget of its own of PickleLimits::kDefaultMaxIndexMemory.
  SymbolicStack();
  SymbolicStack(const SymbolicStack&) = delete;
  SymbolicStack& operator=(const SymbolicStack&) = delete;

  // Applies the stack effect of `op`. Returns DataLossError when the pickle
  // could not be unpickled (stack underflow, missing mark or memo entry) or
  // when an array wrapper's state cannot be understood; UnimplementedError
  // for a NumpyArrayWrapper whose dtype this layer cannot size.
  absl::Status Apply(const PickleOp& op, Event* event);

  // Scans opcodes from `scanner` and applies them until one reports an
  // event (*op is then that opcode) or fails. Same result as a loop of
  // scanner->Next and Apply, but the hottest opcodes are decoded and
  // applied in one dispatch, which makes it about twice as fast.
  absl::Status Run(PickleScanner* scanner, PickleOp* op, Event* event);

  // The wrapper BUILD last reported by kWrapperBuild.
  const WrapperBuild& build() const { return build_; }

  // The value STOP popped, after kStop.
  const SymbolicTag& stopped() const { return stopped_; }

  // Where the arrays built so far sit in the value (object_paths.h).
  const ObjectPaths& paths() const { return paths_; }

  // The layout described by `tag`, a tag of this stack, if it is a
  // complete NumpyArrayWrapper state dict; DataLoss/Unimplemented otherwise
  // (`offset` goes in the message).
  absl::Status LayoutFromState(const SymbolicTag& tag, uint64_t offset,
                               ArrayLayout* layout) const;

 private:
  // Tags are built in place on stack_: copying a just-written 32-byte tag
  // through a local stalls on store forwarding and halves the scan speed.
  SymbolicTag& PushTag(SymbolicTag::Kind kind, uint64_t start) {
    stack_.emplace_back();
    SymbolicTag& tag = stack_.back();
    tag.kind = kind;
    tag.start = start;
    return tag;
  }
  // Gives stack_ and marks_ room for one more entry (invariant 7).
  absl::Status RoomForPush(uint64_t offset) {
    if (stack_.size() < stack_.capacity() &&
        marks_.size() < marks_.capacity()) {
      return absl::OkStatus();
    }
    return GrowForPush(offset);
  }
  absl::Status GrowForPush(uint64_t offset);
  // Makes room for `n` elements in *v, charging budget_ for the capacity
  // it adds; false when the budget does not allow it.
  template <typename T>
  bool Reserve(std::vector<T>* v, size_t n);
  // Charges one hash map entry; false when the budget does not allow it.
  bool ChargeHashNode() {
    return budget_->TryCharge(MemoryBudget::kHashNodeBytes);
  }
  absl::Status OverBudget(absl::string_view what, uint64_t offset) const {
    return IndexMemoryExceeded(budget_->limit(), what, offset);
  }
  // Whether the top `n` entries exist and none is a mark.
  bool HasItems(size_t n) const {
    return stack_.size() >= n &&
           (marks_.empty() || marks_.back() < stack_.size() - n);
  }
  absl::Status PopToMark(uint64_t offset, size_t* mark);

  // One method per opcode family, shared by Apply and Run's fast path.
  void PushMark(uint64_t offset);
  void PushInt(uint64_t offset, int64_t value);
  void PushString(uint64_t offset, absl::string_view value,
                  const KeyText& text);
  void PushBytes(uint64_t offset, absl::string_view value);
  void PushEmptyTuple(uint64_t offset);
  absl::Status MemoPut(uint64_t offset, uint64_t index);
  absl::Status MemoPutSlow(uint64_t offset, uint64_t index);
  absl::Status MemoGet(uint64_t offset, uint64_t index);
  absl::Status MemoGetSlow(uint64_t offset, uint64_t index);
  void PushPathMemo(uint64_t offset, uint64_t index);
  bool KeyPosition() const;
  absl::Status TupleN(uint64_t offset, size_t n);
  absl::Status MarkedTuple(uint64_t offset);
  absl::Status MarkedList(uint64_t offset, bool frozenset);
  absl::Status MarkedDict(uint64_t offset);
  absl::Status Append(uint64_t offset);
  absl::Status MarkedUpdate(uint8_t code, uint64_t offset);
  absl::Status SetItem(uint64_t offset);
  absl::Status StackGlobal(uint64_t offset);
  absl::Status Inst(const PickleOp& op);
  absl::Status Obj(uint64_t offset);
  absl::Status NewObj(uint64_t offset, size_t n);
  absl::Status Reduce(uint64_t offset);
  absl::Status Build(uint64_t offset, Event* event);

  // Replaces stack_[result] (the mark or the first item) and everything
  // above it by the tuple of the items from `first` on.
  absl::Status MakeTuple(uint64_t offset, size_t result, size_t first);
  // Appends the n non-negative ints at `e` to shape_dims_ and sets *ref to
  // the reference a kTupShape tuple keeps; 0 if they are not all such
  // ints. Fails only when the budget does not allow it.
  absl::Status RecordShape(uint64_t offset, const SymbolicTag* e, size_t n,
                           int64_t* ref);
  void UpdateDict(SymbolicTag* dict, size_t first);
  // Puts the objects with a node among stack_[first, end) into `target`
  // (paths): as the values of key/value pairs, or as the items (kIndex,
  // kArgIndex) from `index` on; PutOne puts `child` with a step of `kind`.
  void PutValues(SymbolicTag* target, size_t first, size_t end);
  void PutItems(SymbolicTag* target, size_t first, size_t end, int64_t index,
                PathStep::Kind kind);
  void PutOne(const SymbolicTag& child, SymbolicTag* target,
              PathStep::Kind kind);

  // One numpy.dtype object: what its REDUCE args and BUILD state said.
  struct DtypeRecord {
    char kind = 0;            // letter of the dtype code ("f8": 'f'), else 0
    char byteorder = 0;       // '<', '>', '|' from the state ('=' as '<');
                              // 0 before BUILD or when it is not one of them
    bool sized = false;       // itemsize is known
    bool object = false;      // dtype.hasobject
    bool structured = false;  // the state has fields or a subarray
    uint32_t unit = 0;        // datetime unit (see the .cc), 0 if unknown
    uint32_t unit_count = 0;  // datetime unit multiplier ("10s": 10)
    uint64_t itemsize = 0;
  };
  static std::string DtypeString(const DtypeRecord& dtype);

  std::vector<SymbolicTag> stack_;
  std::vector<size_t> marks_;

  // Memo: index -> kMemoUnset, kMemoSet (an irrelevant object),
  // kMemoRelevant (its tag is memo_tags_[memo_relevant_[index]]) or
  // kMemoPath (an object that matters to paths only: paths_ recalls it).
  // Dense for the usual 0, 1, 2, ... indices; sparse beyond. memo_relevant_
  // may keep the slot of an index that now holds an irrelevant object: a
  // later relevant one at that index reuses it.
  enum MemoCode : uint8_t {
    kMemoUnset = 0,
    kMemoSet = 1,
    kMemoRelevant = 2,
    kMemoPath = 3,
  };
  std::vector<uint8_t> memo_dense_;
  std::unordered_map<uint64_t, uint8_t> memo_sparse_;
  std::unordered_map<uint64_t, uint32_t> memo_relevant_;
  std::vector<SymbolicTag> memo_tags_;
  uint64_t memo_count_ = 0;

  // Side tables (invariants 5 and 6).
  std::vector<uint64_t> shape_dims_;
  std::vector<DtypeRecord> dtypes_;

  WrapperBuild build_;
  SymbolicTag stopped_;

  std::unique_ptr<MemoryBudget> own_budget_;  // when none was given
  MemoryBudget* const budget_;
  ObjectPaths paths_;  // after budget_: it charges it
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_FORMAT_SYMBOLIC_STACK_H_
