#include "client/cpp/array_paths.h"

#include <cstdint>
#include <deque>
#include <unordered_map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/pickle/pickle_opcodes.h"
#include "common/pickle/pickle_scanner.h"

namespace persistd {
namespace {

using namespace pickle_op;  // NOLINT: opcode names read best unqualified.

constexpr uint32_t kNoNode = UINT32_MAX;

// One step from a container or object to something in it.
struct Edge {
  enum class Kind : uint8_t {
    kStrKey,    // ["text"]
    kIntKey,    // [number]
    kOtherKey,  // [?]: a key of another type (tuple, float, bytes, ...)
    kIndex,     // [number]: list or tuple element
    kAttr,      // .text: from a BUILD state dict
    kArgs,      // .__args__: the argument tuple of REDUCE/NEWOBJ
    kArgIndex,  // .__args__[number]: an argument of OBJ/INST
    kKwargs,    // .__kwargs__: the keyword dict of NEWOBJ_EX
    kState,     // .__state__: a BUILD state that is not a dict
  };
  explicit Edge(Kind kind, int64_t number = 0) : kind(kind), number(number) {}

  Kind kind;
  int64_t number = 0;
  absl::string_view text;  // into the skeleton
  uint32_t child = kNoNode;
};

// What the walk records of a value that holds arrays: the array itself,
// or the edges from a container to those of its items that hold arrays.
// Values that hold no array get no Node at all, which keeps the walk's
// memory proportional to the arrays, not to the pickle.
struct Node {
  bool dict = false;    // a dict: its string keys become attributes
  bool tuple = false;   // a tuple: (dict, slots) BUILD states
  int64_t array = -1;   // >= 0: the array of that materialize call
  std::vector<Edge> edges;
};

// One stack slot (or memo entry): what the walk needs to know of a value.
struct Item {
  enum class Kind : uint8_t {
    kOther,        // anything that can be neither a key nor hold arrays
    kStr,          // text: a possible key or attribute name
    kInt,          // number: a possible key
    kGlobal,       // any other global
    kMaterialize,  // the global __persistd__ materialize
    kDict,
    kList,
    kTuple,
    kObject,       // made by REDUCE/NEWOBJ/OBJ/INST
    kArray,        // the result of a materialize call
  };
  Kind kind = Kind::kOther;
  int64_t number = 0;     // kInt: the value; kList/kObject: items appended
  uint32_t node = kNoNode;  // the value's Node, once it holds an array
  // kStr: into the skeleton, so that DUP and GET copy no text.
  absl::string_view text;

  bool IsContainer() const {
    return kind == Kind::kDict || kind == Kind::kList || kind == Kind::kTuple ||
           kind == Kind::kObject;
  }
};

std::string JsonEscape(absl::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
    } else {
      out.push_back(c);
    }
  }
  return out;
}

void AppendEdge(const Edge& edge, std::string* path) {
  switch (edge.kind) {
    case Edge::Kind::kStrKey:
      absl::StrAppend(path, "[\"", JsonEscape(edge.text), "\"]");
      return;
    case Edge::Kind::kIntKey:
    case Edge::Kind::kIndex:
      absl::StrAppend(path, "[", edge.number, "]");
      return;
    case Edge::Kind::kOtherKey:
      absl::StrAppend(path, "[?]");
      return;
    case Edge::Kind::kAttr:
      absl::StrAppend(path, ".", edge.text);
      return;
    case Edge::Kind::kArgs:
      absl::StrAppend(path, ".__args__");
      return;
    case Edge::Kind::kArgIndex:
      absl::StrAppend(path, ".__args__[", edge.number, "]");
      return;
    case Edge::Kind::kKwargs:
      absl::StrAppend(path, ".__kwargs__");
      return;
    case Edge::Kind::kState:
      absl::StrAppend(path, ".__state__");
      return;
  }
}

// The symbolic unpickler. Follows Python's pickle.py _Unpickler: a stack
// of the items since the last mark on top of `marks_` (its metastack), a
// memo, and objects built by the opcodes, here only as far as paths need.
//
// Invariant: every marks_ entry is <= stack_.size() and the entries are
// non-decreasing; every Item::node and Edge::child is < nodes_.size().
class Walker {
 public:
  explicit Walker(const ArrayPathLimits& limits) : limits_(limits) {}

  absl::Status Run(absl::string_view skeleton) {
    PickleScanner scanner(skeleton);
    PickleOp op;
    while (true) {
      absl::Status status = scanner.Next(&op);
      if (!status.ok()) return status;
      if (op.code == kStop) {
        if (!Pop(&root_)) return Underflow(op);
        return absl::OkStatus();
      }
      status = Step(op);
      if (!status.ok()) return status;
      if (over_limit_) return Exhausted("objects and edges", limits_.max_objects);
      if (stack_.size() + marks_.size() > limits_.max_stack) {
        return Exhausted("stack items and marks", limits_.max_stack);
      }
    }
  }

  std::vector<ArrayPath> Paths(size_t array_count) const {
    std::vector<ArrayPath> paths(array_count, ArrayPath{"?", ""});
    if (root_.node == kNoNode) return paths;
    // Depth first from the root, in the order items were added, so an
    // array reachable twice gets the first path Python would print. Each
    // node is entered once, so this is linear even for shared or cyclic
    // structures, and iterative, so deep nesting cannot overflow the stack.
    struct Frame {
      uint32_t node;
      size_t parent;       // index into `frames`; SIZE_MAX for the root
      const Edge* edge;    // from the parent; null for the root
      size_t next = 0;     // next edge to follow
    };
    std::vector<Frame> frames = {{root_.node, SIZE_MAX, nullptr}};
    std::vector<size_t> open = {0};
    std::vector<bool> seen(nodes_.size(), false);
    seen[root_.node] = true;
    while (!open.empty()) {
      Frame& frame = frames[open.back()];
      const Node& node = nodes_[frame.node];
      if (frame.next == 0 && node.array >= 0 &&
          static_cast<size_t>(node.array) < array_count) {
        paths[node.array] = PathTo(frames, open.back());
      }
      if (frame.next >= node.edges.size()) {
        open.pop_back();
        continue;
      }
      const Edge& edge = node.edges[frame.next++];
      if (seen[edge.child]) continue;
      seen[edge.child] = true;
      const size_t parent = open.back();
      frames.push_back({edge.child, parent, &edge});
      open.push_back(frames.size() - 1);
    }
    return paths;
  }

 private:
  template <typename Frames>
  ArrayPath PathTo(const Frames& frames, size_t index) const {
    std::vector<const Edge*> edges;
    for (size_t i = index; frames[i].edge != nullptr; i = frames[i].parent) {
      edges.push_back(frames[i].edge);
    }
    ArrayPath out;
    for (auto it = edges.rbegin(); it != edges.rend(); ++it) {
      AppendEdge(**it, &out.path);
      if (out.path.size() > limits_.max_path_bytes) return ArrayPath{"?", ""};
    }
    if (!edges.empty() && (edges.front()->kind == Edge::Kind::kStrKey ||
                           edges.front()->kind == Edge::Kind::kAttr)) {
      out.name = std::string(edges.front()->text);
    }
    return out;
  }

  absl::Status Step(const PickleOp& op) {
    switch (op.code) {
      case kProto:
      case kFrame:
        return absl::OkStatus();

      // Values that can be keys or attribute names.
      case kShortBinUnicode: case kBinUnicode: case kBinUnicode8:
      case kUnicode: case kString: case kBinString: case kShortBinString: {
        Item item;
        item.kind = Item::Kind::kStr;
        item.text = op.arg;
        return Push(std::move(item));
      }
      case kInt: case kBinInt: case kBinInt1: case kBinInt2:
      case kLong: case kLong1: case kLong4: {
        Item item;
        if (op.has_int) {
          item.kind = Item::Kind::kInt;
          item.number = op.int_value;
        }
        return Push(std::move(item));
      }
      // Values that are neither.
      case kNone: case kNewTrue: case kNewFalse: case kFloat: case kBinFloat:
      case kShortBinBytes: case kBinBytes: case kBinBytes8: case kByteArray8:
      case kPersId: case kExt1: case kExt2: case kExt4: case kNextBuffer:
      case kEmptySet:
        return Push(Item());
      case kBinPersId: {
        Item id;
        if (!Pop(&id)) return Underflow(op);
        return Push(Item());
      }
      case kReadOnlyBuffer:
        return Empty() ? Underflow(op) : absl::OkStatus();

      case kMark:
        marks_.push_back(stack_.size());
        return absl::OkStatus();
      case kPop:
        // pickle.py: an empty stack pops the mark instead.
        if (!Empty()) {
          stack_.pop_back();
        } else if (!marks_.empty()) {
          marks_.pop_back();
        } else {
          return Underflow(op);
        }
        return absl::OkStatus();
      case kPopMark: {
        std::vector<Item> items;
        return PopMark(op, &items);
      }
      case kDup:
        if (Empty()) return Underflow(op);
        return Push(Item(stack_.back()));

      case kGlobal:
        return PushGlobal(op.arg, op.arg2);
      case kInst: {
        std::vector<Item> args;
        absl::Status status = PopMark(op, &args);
        if (!status.ok()) return status;
        Item object;
        object.kind = Item::Kind::kObject;
        AttachArgs(&object, &args, 0);
        return Push(std::move(object));
      }
      case kStackGlobal: {
        Item name, module;
        if (!Pop(&name) || !Pop(&module)) return Underflow(op);
        if (name.kind != Item::Kind::kStr || module.kind != Item::Kind::kStr) {
          return Corrupt("STACK_GLOBAL of a non-string", op);
        }
        return PushGlobal(module.text, name.text);
      }

      // Containers.
      case kEmptyDict: return PushEmpty(Item::Kind::kDict);
      case kEmptyList: return PushEmpty(Item::Kind::kList);
      case kEmptyTuple: return PushEmpty(Item::Kind::kTuple);
      case kDict: {
        std::vector<Item> items;
        absl::Status status = PopMark(op, &items);
        if (!status.ok()) return status;
        Item dict;
        dict.kind = Item::Kind::kDict;
        status = SetItems(op, &dict, &items);
        if (!status.ok()) return status;
        return Push(std::move(dict));
      }
      case kList: case kTuple: case kFrozenSet: {
        std::vector<Item> items;
        absl::Status status = PopMark(op, &items);
        if (!status.ok()) return status;
        if (op.code == kFrozenSet) return Push(Item());  // arrays are unhashable
        return PushSequence(op.code == kList ? Item::Kind::kList : Item::Kind::kTuple,
                            &items);
      }
      case kTuple1: case kTuple2: case kTuple3: {
        const size_t n = op.code - kTuple1 + 1;
        if (stack_.size() - Base() < n) return Underflow(op);
        std::vector<Item> items(std::make_move_iterator(stack_.end() - n),
                                std::make_move_iterator(stack_.end()));
        stack_.resize(stack_.size() - n);
        return PushSequence(Item::Kind::kTuple, &items);
      }
      case kSetItem: {
        if (stack_.size() - Base() < 3) return Underflow(op);
        std::vector<Item> items(std::make_move_iterator(stack_.end() - 2),
                                std::make_move_iterator(stack_.end()));
        stack_.resize(stack_.size() - 2);
        return SetItems(op, &stack_.back(), &items);
      }
      case kSetItems: {
        std::vector<Item> items;
        absl::Status status = PopMark(op, &items);
        if (!status.ok()) return status;
        if (Empty()) return Underflow(op);
        return SetItems(op, &stack_.back(), &items);
      }
      case kAppend: {
        Item value;
        if (!Pop(&value)) return Underflow(op);
        if (Empty()) return Underflow(op);
        Append(&stack_.back(), value);
        return absl::OkStatus();
      }
      case kAppends: {
        std::vector<Item> items;
        absl::Status status = PopMark(op, &items);
        if (!status.ok()) return status;
        if (Empty()) return Underflow(op);
        for (const Item& value : items) Append(&stack_.back(), value);
        return absl::OkStatus();
      }
      case kAddItems: {
        std::vector<Item> items;
        absl::Status status = PopMark(op, &items);
        if (!status.ok()) return status;
        return Empty() ? Underflow(op) : absl::OkStatus();
      }

      // Objects.
      case kReduce: case kNewObj: {
        Item args, callable;
        if (!Pop(&args) || !Pop(&callable)) return Underflow(op);
        if (op.code == kReduce && callable.kind == Item::Kind::kMaterialize) {
          return PushArray();
        }
        Item object;
        object.kind = Item::Kind::kObject;
        Attach(&object, Edge{Edge::Kind::kArgs}, args);
        return Push(std::move(object));
      }
      case kNewObjEx: {
        Item kwargs, args, cls;
        if (!Pop(&kwargs) || !Pop(&args) || !Pop(&cls)) return Underflow(op);
        Item object;
        object.kind = Item::Kind::kObject;
        Attach(&object, Edge{Edge::Kind::kArgs}, args);
        Attach(&object, Edge{Edge::Kind::kKwargs}, kwargs);
        return Push(std::move(object));
      }
      case kObj: {
        std::vector<Item> items;
        absl::Status status = PopMark(op, &items);
        if (!status.ok()) return status;
        if (items.empty()) return Underflow(op);
        Item object;
        object.kind = Item::Kind::kObject;
        AttachArgs(&object, &items, 1);
        return Push(std::move(object));
      }
      case kBuild: {
        Item state;
        if (!Pop(&state)) return Underflow(op);
        if (Empty()) return Underflow(op);
        Build(&stack_.back(), state);
        return absl::OkStatus();
      }

      // The memo.
      case kPut: case kBinPut: case kLongBinPut:
        if (Empty()) return Underflow(op);
        return Memoize(op.int_value);
      case kMemoize:
        if (Empty()) return Underflow(op);
        return Memoize(static_cast<int64_t>(memo_.size()));
      case kGet: case kBinGet: case kLongBinGet: {
        auto it = memo_.find(op.int_value);
        if (it == memo_.end()) return Corrupt("memo value not found", op);
        return Push(Item(it->second));
      }

      default:
        return Corrupt(absl::StrFormat("opcode 0x%02x", op.code), op);
    }
  }

  // The stack's bottom since the last mark.
  size_t Base() const { return marks_.empty() ? 0 : marks_.back(); }
  bool Empty() const { return stack_.size() == Base(); }

  absl::Status Push(Item item) {
    stack_.push_back(std::move(item));
    return absl::OkStatus();
  }
  bool Pop(Item* item) {
    if (Empty()) return false;
    *item = std::move(stack_.back());
    stack_.pop_back();
    return true;
  }
  absl::Status PopMark(const PickleOp& op, std::vector<Item>* items) {
    if (marks_.empty()) return Corrupt("no MARK to pop", op);
    const size_t base = marks_.back();
    marks_.pop_back();
    items->assign(std::make_move_iterator(stack_.begin() + base),
                  std::make_move_iterator(stack_.end()));
    stack_.resize(base);
    return absl::OkStatus();
  }

  absl::Status PushGlobal(absl::string_view module, absl::string_view name) {
    Item item;
    if (module == "__persistd__" && name == "materialize") {
      item.kind = Item::Kind::kMaterialize;
    } else {
      item.kind = Item::Kind::kGlobal;
    }
    return Push(std::move(item));
  }
  absl::Status PushEmpty(Item::Kind kind) {
    Item item;
    item.kind = kind;
    return Push(std::move(item));
  }
  absl::Status PushSequence(Item::Kind kind, std::vector<Item>* items) {
    Item sequence;
    sequence.kind = kind;
    for (const Item& value : *items) Append(&sequence, value);
    return Push(std::move(sequence));
  }
  absl::Status PushArray() {
    absl::Status status = NewNode();
    if (!status.ok()) return status;
    nodes_.back().array = calls_++;
    Item array;
    array.kind = Item::Kind::kArray;
    array.node = static_cast<uint32_t>(nodes_.size() - 1);
    return Push(std::move(array));
  }

  absl::Status Memoize(int64_t index) {
    auto it = memo_.find(index);
    if (it != memo_.end()) {
      it->second = stack_.back();
      return absl::OkStatus();
    }
    if (memo_.size() >= limits_.max_memo) return Exhausted("memo entries", limits_.max_memo);
    memo_.emplace(index, stack_.back());
    return absl::OkStatus();
  }

  absl::Status NewNode() {
    if (!Charge()) return Exhausted("objects and edges", limits_.max_objects);
    nodes_.emplace_back();
    return absl::OkStatus();
  }
  // Counts one node or edge against limits_.max_objects: a hostile
  // skeleton may reference one array a hundred million times.
  bool Charge() {
    if (charged_ >= limits_.max_objects) return false;
    ++charged_;
    return true;
  }

  // Records that `parent` reaches `child` by `edge`, if the child holds an
  // array and the parent is something a path can go through. A child that
  // gets its first array only after it was attached is not seen through
  // this parent: pickle attaches values once they are complete, except in
  // recursive structures.
  void Attach(Item* parent, Edge edge, const Item& child) {
    if (child.node == kNoNode || !parent->IsContainer()) return;
    if (!Charge()) {
      over_limit_ = true;
      return;
    }
    if (parent->node == kNoNode) {
      if (!NewNode().ok()) {
        over_limit_ = true;
        return;
      }
      parent->node = static_cast<uint32_t>(nodes_.size() - 1);
      nodes_.back().dict = parent->kind == Item::Kind::kDict;
      nodes_.back().tuple = parent->kind == Item::Kind::kTuple;
    }
    edge.child = child.node;
    nodes_[parent->node].edges.push_back(std::move(edge));
  }

  void Append(Item* sequence, const Item& value) {
    Attach(sequence, Edge{Edge::Kind::kIndex, sequence->number}, value);
    ++sequence->number;
  }

  void AttachArgs(Item* object, std::vector<Item>* args, size_t first) {
    for (size_t i = first; i < args->size(); ++i) {
      Attach(object,
             Edge{Edge::Kind::kArgIndex, static_cast<int64_t>(i - first)},
             (*args)[i]);
    }
  }

  absl::Status SetItems(const PickleOp& op, Item* dict, std::vector<Item>* items) {
    if (items->size() % 2 != 0) return Corrupt("a key without a value", op);
    for (size_t i = 0; i < items->size(); i += 2) {
      const Item& key = (*items)[i];
      Edge edge{Edge::Kind::kOtherKey};
      if (key.kind == Item::Kind::kStr) {
        edge.kind = Edge::Kind::kStrKey;
        edge.text = key.text;
      } else if (key.kind == Item::Kind::kInt) {
        edge.kind = Edge::Kind::kIntKey;
        edge.number = key.number;
      }
      Attach(dict, std::move(edge), (*items)[i + 1]);
    }
    return absl::OkStatus();
  }

  // BUILD: a dict state sets attributes; a (dict, slots) tuple sets both
  // kinds; any other state goes to __setstate__.
  void Build(Item* object, const Item& state) {
    if (state.node == kNoNode) return;
    const Node& node = nodes_[state.node];
    if (node.dict) {
      AttachAttributes(object, node);
      return;
    }
    if (node.tuple && AllEdgesAreDicts(node)) {
      // Copied: Attach may add edges to this very node (a hostile BUILD of
      // a value with itself).
      const std::vector<Edge> parts = node.edges;
      for (const Edge& part : parts) AttachAttributes(object, nodes_[part.child]);
      return;
    }
    Attach(object, Edge{Edge::Kind::kState}, state);
  }
  bool AllEdgesAreDicts(const Node& node) const {
    for (const Edge& edge : node.edges) {
      if (edge.kind != Edge::Kind::kIndex || edge.number > 1 ||
          !nodes_[edge.child].dict) {
        return false;
      }
    }
    return true;
  }
  void AttachAttributes(Item* object, const Node& dict) {
    // Copied: Attach may grow nodes_, which `dict` lives in.
    const std::vector<Edge> edges = dict.edges;
    for (Edge edge : edges) {
      if (edge.kind == Edge::Kind::kStrKey) edge.kind = Edge::Kind::kAttr;
      Item child;
      child.node = edge.child;
      Attach(object, std::move(edge), child);
    }
  }

  absl::Status Underflow(const PickleOp& op) const {
    return Corrupt("stack underflow", op);
  }
  absl::Status Corrupt(absl::string_view what, const PickleOp& op) const {
    return PickleCorrupt(absl::StrCat(what, " in the skeleton"), op.offset);
  }
  absl::Status Exhausted(absl::string_view what, size_t limit) const {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the skeleton has more than ", limit, " ", what,
        ": array paths are not traced"));
  }

  const ArrayPathLimits limits_;
  std::vector<Item> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<int64_t, Item> memo_;
  // A deque: Attach and Build hold references into it while it grows.
  std::deque<Node> nodes_;
  size_t charged_ = 0;       // nodes and edges made
  bool over_limit_ = false;  // an edge was lost to the limit
  int64_t calls_ = 0;        // materialize calls so far
  Item root_;
};

}  // namespace

absl::StatusOr<std::vector<ArrayPath>> ArrayPaths(absl::string_view skeleton,
                                                  size_t array_count,
                                                  const ArrayPathLimits& limits) {
  Walker walker(limits);
  absl::Status status = walker.Run(skeleton);
  if (!status.ok()) return status;
  return walker.Paths(array_count);
}

}  // namespace persistd
