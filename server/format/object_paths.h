// ObjectPaths names the place of each array in the value a joblib stream
// unpickles to, in Python's syntax from the value down:
// ["trees"][3]["value"] is value["trees"][3]["value"]. The symbolic
// unpickler (symbolic_stack.h) reports how objects are put into others;
// nothing is built, and clients need not scan the pickle to name arrays.
//
// Only objects that hold an array get a node: the array when its wrapper is
// built, and a container when the first object with a node is put into it.
// A node remembers the first place it was put: its parent and the step
// there, which is one of
//  - a dict key that is a str or an int: ["key"] (JSON escapes), [3]
//    (SETITEM, SETITEMS and DICT, on any target: the unpickler calls
//    target[key] = value);
//  - an index into a list (LIST, and APPEND/APPENDS on a list whose length
//    is known) or a tuple (TUPLE, TUPLE1-3): [3];
//  - the state of an object (BUILD): when it is a dict, its str keys read
//    as attributes, .name (.__dict__["key"] for keys that are not
//    identifiers); any other state reads .__state__;
//  - the arguments of a call that made an object (REDUCE, NEWOBJ,
//    NEWOBJ_EX, OBJ, INST): .__args__ and the index, .__args__[1].
// Objects put anywhere else (a set, under a key of another type) are not
// linked. An array's path is what its chain of first places reads from the
// value STOP returned: empty when the array is the value itself, and
// kUnknownPath ("?") when the chain does not reach that value.
//
// Keys are kept as references to their text in the stream (the indexer
// keeps the pickle bytes) and rendered only for the paths returned.
//
// Invariants:
//  1. Node 0 is "no node"; nodes_[i - 1] is node i, for the nodes made so
//     far. array_nodes_[k] is the node of the k-th array built.
//  2. A node's parent is set at most once: the first place it is put.
//  3. The memo tables hold what Memoize was last given for each index.
//  4. Everything it allocates is spare memory of the budget (see
//     pickle_limits.h) and stays under limit / kShareDivisor. When the
//     budget releases it, or a table would outgrow that, tracking stops for
//     good: every method then does nothing and every path is empty.
//
// Not thread-safe.
#ifndef PERSISTD_SERVER_FORMAT_OBJECT_PATHS_H_
#define PERSISTD_SERVER_FORMAT_OBJECT_PATHS_H_

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/string_view.h"
#include "server/format/pickle_limits.h"

namespace persistd {

// The path of an array whose place in the value cannot be told.
inline constexpr char kUnknownPath[] = "?";

// Where a str key's text lies in the stream and how it is written there.
struct KeyText {
  // How the unpickler decodes the bytes: UTF-8 (BINUNICODE*), ASCII only
  // (py2 BINSTRING, decoded as ASCII by default), or ASCII without escapes
  // (protocol 0 STRING and UNICODE, whose escapes are not followed here).
  enum Encoding : uint8_t { kUtf8 = 0, kAscii, kAsciiUnescaped };
  uint64_t offset = 0;
  uint32_t size = 0;
  Encoding encoding = kUtf8;
};

// One step from a container to an object in it.
struct PathStep {
  enum Kind : uint8_t {
    kStrKey,       // ["key"], or .key under kDictState
    kIntKey,       // [3]
    kIndex,        // [3]
    kDictState,    // nothing: the object's attributes follow
    kOtherState,   // .__state__
    kArgs,         // .__args__ (a tuple of arguments follows)
    kArgIndex,     // .__args__[3] (OBJ, INST: arguments on the stack)
  };
  Kind kind = kDictState;
  int64_t number = 0;  // kIntKey, kIndex, kArgIndex
  KeyText text;        // kStrKey
};

// What a memo entry keeps of an object for paths.
struct PathMemo {
  uint32_t node = 0;
  bool has_text = false;
  KeyText text;
};

class ObjectPaths : public MemoryBudget::Spare {
 public:
  // Keys longer than this are not followed: their paths are empty.
  static constexpr uint32_t kMaxKeyBytes = 256;
  // Paths deeper or longer than these are empty.
  static constexpr int kMaxDepth = 256;
  static constexpr size_t kMaxPathBytes = 4096;
  // The share of the budget the tables may use.
  static constexpr uint64_t kShareDivisor = 4;

  // Charges `budget`, which must outlive it, and registers as its spare.
  explicit ObjectPaths(MemoryBudget* budget);
  ~ObjectPaths() override;
  ObjectPaths(const ObjectPaths&) = delete;
  ObjectPaths& operator=(const ObjectPaths&) = delete;

  // Gives all the memory back and stops tracking.
  void Release() override;
  bool enabled() const { return enabled_; }

  // The node of the next array (one per wrapper BUILD, in stream order);
  // 0 when tracking stopped.
  uint32_t NewArray();

  // A node for a new container (a tuple being built); 0 when tracking
  // stopped.
  uint32_t NewNode();
  // The node of the container whose tag holds *node, made if *node is 0.
  uint32_t NodeOf(uint32_t* node);

  // Puts node `child` into node `parent` with `step`, unless it was put
  // somewhere already (invariant 2). Either may be 0 (nothing happens).
  void Put(uint32_t child, uint32_t parent, const PathStep& step);

  // The value STOP returned.
  void SetRoot(uint32_t node) { root_ = node; }

  // What the memo keeps, at `index`, of an object that matters to paths
  // only (a key string, a container with a node), and what Recall gives
  // back; false when it is not known (or tracking stopped). The symbolic
  // stack's own memo keeps only what the wrapper logic needs.
  void Memoize(uint64_t index, const PathMemo& memo);
  // Null when not known. Inline: every dict fetches its keys from the memo.
  const PathMemo* Recall(uint64_t index) const {
    if (index < memo_slots_.size()) {
      const uint32_t slot = memo_slots_[index];
      return slot == 0 ? nullptr : &memo_entries_[slot - 1];
    }
    return RecallSparse(index);
  }

  // The path of the `array`-th array, its keys read from `stream` (the
  // stream's bytes at their offsets; only the pickle bytes are read).
  // kUnknownPath when it cannot be told (see above).
  std::string PathOf(size_t array, absl::string_view stream) const;

 private:
  struct Node {
    uint64_t value = 0;   // kIntKey, kIndex: the number; kStrKey: the offset
    uint32_t parent = 0;  // 0 until put somewhere
    uint16_t text_size = 0;
    PathStep::Kind kind = PathStep::kDictState;
    KeyText::Encoding encoding = KeyText::kUtf8;
  };
  static_assert(sizeof(Node) == 16, "nodes are meant to stay small");

  template <typename T>
  bool Grow(std::vector<T>* v);
  // Appends the step of `node`; `attribute`: its parent is an object's
  // state dict. False when the step cannot be written.
  static bool AppendStep(const Node& node, bool attribute,
                         absl::string_view stream, std::string* out);

  MemoryBudget* const budget_;
  const uint64_t share_;  // the most the tables may use
  uint64_t charged_ = 0;  // what they use
  bool enabled_ = true;
  std::vector<Node> nodes_;
  std::vector<uint32_t> array_nodes_;
  // Memo: memo_slots_[index] is 1 + the entry's place in memo_entries_ (0:
  // none) for indices below its size, which grows like the stack's dense
  // memo; memo_sparse_ holds the others.
  const PathMemo* RecallSparse(uint64_t index) const;
  std::vector<uint32_t> memo_slots_;
  std::vector<PathMemo> memo_entries_;
  std::unordered_map<uint64_t, PathMemo> memo_sparse_;
  uint32_t root_ = 0;
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_FORMAT_OBJECT_PATHS_H_
