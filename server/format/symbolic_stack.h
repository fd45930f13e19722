// SymbolicStack is the pickle VM of the format layer: it simulates the
// unpickler's stack and memo with tags (symbolic_tag.h) in place of
// objects, so the format layer can find joblib's array wrappers, the length
// of the data that follows them, what the wrapper state says about the
// array (wrapper_state.h, with numpy's dtypes from numpy_dtype.h) and where
// each array sits in the value (object_paths.h), without executing
// anything. Each tag remembers the offset of the first opcode that
// contributed to its stack entry, which is where the reader inserts the
// call that replaces a wrapper.
//
// Invariants:
//  1. stack_ holds one tag per entry of the real unpickler's stack, with
//     marks inline (as pickletools models them); marks_ holds the indices of
//     the MARK tags in stack_, innermost last.
//  2. For every entry, start() is the offset of the first opcode whose
//     effect is part of the entry, and the opcodes from there up to the
//     present touch no entry below it. So "GLOBAL+MARK" inserted before
//     start and "TUPLE+REDUCE" inserted after the entry is complete wrap
//     exactly that entry.
//  3. memo_count_ is the number of distinct memo indices set, which is
//     what MEMOIZE uses as its index (like the C unpickler's memo_len).
//  4. Only tags that the wrapper logic needs (Relevant() in the .cc) are
//     kept in the memo; tags that only paths need (keys, containers of
//     arrays) are kept by paths_ as spare memory; other memo entries are
//     remembered as "set" only (one byte each for the usual dense indices),
//     so memory stays small for skeletons with millions of memoized
//     objects. A shape tuple is relevant, so a wrapper state that refers to
//     another wrapper's shape with GET still finds its dims; an int tuple
//     first pickled anywhere but as a 'shape' value is not (joblib never
//     shares those), and a state that refers to one has a bad shape.
//  5. Every tag that stands for an object holding an array has that
//     object's node in paths_; containers get one when such an object is
//     put into them, so an array's path can be read once the value is
//     complete.
//  6. Everything the stack allocates is charged to budget_: the capacity
//     of every vector, kHashNodeBytes per hash map entry. A vector grows
//     only through Reserve(), which charges first, so the stack never holds
//     more than the budget's limit (plus, while a vector moves, its old
//     copy). Before each opcode stack_ and marks_ have room for one more
//     entry, the most any opcode pushes; an opcode that needs more memory
//     than the budget has fails with IndexMemoryExceeded.
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
#include "common/pickle/pickle_scanner.h"
#include "server/format/numpy_dtype.h"
#include "server/format/object_paths.h"
#include "server/format/pickle_limits.h"
#include "server/format/symbolic_tag.h"
#include "server/format/wrapper_state.h"

namespace persistd {

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
                               ArrayLayout* layout) const {
    return wrappers_.LayoutFromState(tag, offset, dtypes_, layout);
  }

 private:
  // Tags are built in place on stack_: copying a just-written 32-byte tag
  // through a local stalls on store forwarding and halves the scan speed.
  SymbolicTag& PushTag(SymbolicTag::Kind kind, uint64_t start) {
    stack_.emplace_back();
    SymbolicTag& tag = stack_.back();
    tag.Init(kind, start);
    return tag;
  }
  // Gives stack_ and marks_ room for one more entry (invariant 6).
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
  // Puts the objects with a node among stack_[first, end) into `target`
  // (paths): as the values of key/value pairs, or as the items (kIndex,
  // kArgIndex) from `index` on; PutOne puts `child` with a step of `kind`.
  void PutValues(SymbolicTag* target, size_t first, size_t end);
  void PutItems(SymbolicTag* target, size_t first, size_t end, int64_t index,
                PathStep::Kind kind);
  void PutOne(const SymbolicTag& child, SymbolicTag* target,
              PathStep::Kind kind);

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

  WrapperBuild build_;
  SymbolicTag stopped_;

  std::unique_ptr<MemoryBudget> own_budget_;  // when none was given
  MemoryBudget* const budget_;
  // After budget_, which they charge: what does not fit in tags.
  DtypeTable dtypes_;
  WrapperStates wrappers_;
  ObjectPaths paths_;
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_FORMAT_SYMBOLIC_STACK_H_
