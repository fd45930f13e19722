#include "server/format/symbolic_stack.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/pickle/pickle_opcodes.h"

namespace persistd {
namespace {

using namespace pickle_op;  // NOLINT: opcode names read best unqualified.
using Tag = SymbolicTag;

// Makes *t (a fresh kOther tag) the tag of string `s` if it is classified.
void SetStringTag(absl::string_view s, Tag* t) {
  if (s.size() > kMaxShortString) return;
  uint32_t number = 0;
  const StrClass klass = ClassifyString(s, &number);
  if (klass == StrClass::kOther) return;
  const bool lettered =
      klass == StrClass::kDtypeCode || klass == StrClass::kByteOrder;
  t->MakeString(klass, lettered ? s[0] : 0, number);
}

// Makes *t, in place, the result of creating an object of class `klass`.
void SetInstance(GlobalClass klass, Tag* t) {
  if (IsWrapperClass(klass)) {
    t->Reset(Tag::kWrapper, t->start());
    t->set_global_class(klass);
  } else {
    t->Reset(Tag::kOther, t->start());
    t->set_object();
  }
}

// Whether the memo must keep `t` for the wrapper logic (invariant 4).
bool Relevant(const Tag& t) {
  switch (t.kind()) {
    case Tag::kString:
      return true;  // only classified strings are kString
    case Tag::kGlobal:
      return t.global_class() != GlobalClass::kOther;
    case Tag::kDtype:
    case Tag::kDtypeState:
    case Tag::kWrapper:
      return true;
    case Tag::kTuple:
      return t.tuple_summarized();
    default:
      return false;
  }
}

// Whether the memo must keep `t` for paths only (paths_ keeps it).
bool PathRelevant(const Tag& t) { return t.node() != 0 || t.has_key_text(); }

// The step to a dict value under key `key`, if it can be named.
bool KeyStep(const Tag& key, PathStep* step) {
  if (key.kind() == Tag::kInt) {
    step->kind = PathStep::kIntKey;
    step->number = key.int_value();
    return true;
  }
  if (key.has_key_text()) {
    step->kind = PathStep::kStrKey;
    step->text = key.key_text();
    return true;
  }
  return false;
}

bool IsShapeKey(const Tag& t) {
  return t.kind() == Tag::kString && t.str_class() == StrClass::kShape;
}

// Whether items may be set on the object of `t`: a dict, or an object
// (an OrderedDict, a defaultdict).
inline bool IsMapping(const Tag& t) {
  return t.kind() == Tag::kDict || (t.kind() == Tag::kOther && t.is_object());
}

absl::Status Underflow(uint64_t offset) {
  return PickleCorrupt("unpickling stack underflow", offset);
}

}  // namespace

SymbolicStack::SymbolicStack(MemoryBudget* budget)
    : budget_(budget), dtypes_(budget), wrappers_(budget), paths_(budget) {}

SymbolicStack::SymbolicStack()
    : own_budget_(std::make_unique<MemoryBudget>(
          PickleLimits::kDefaultMaxIndexMemory)),
      budget_(own_budget_.get()),
      dtypes_(budget_),
      wrappers_(budget_),
      paths_(budget_) {}

template <typename T>
bool SymbolicStack::Reserve(std::vector<T>* v, size_t n) {
  return ReserveCharged(budget_, v, n);
}

absl::Status SymbolicStack::GrowForPush(uint64_t offset) {
  if (!Reserve(&stack_, stack_.size() + 1)) {
    return OverBudget("the unpickler's stack", offset);
  }
  if (!Reserve(&marks_, marks_.size() + 1)) {
    return OverBudget("the unpickler's marks", offset);
  }
  return absl::OkStatus();
}

absl::Status SymbolicStack::PopToMark(uint64_t offset, size_t* mark) {
  if (marks_.empty()) return PickleCorrupt("could not find MARK", offset);
  *mark = marks_.back();
  marks_.pop_back();
  return absl::OkStatus();
}

inline void SymbolicStack::PushMark(uint64_t offset) {
  marks_.push_back(stack_.size());
  PushTag(Tag::kMark, offset);
}

inline void SymbolicStack::PushInt(uint64_t offset, int64_t value) {
  PushTag(Tag::kInt, offset).set_int_value(value);
}

// Whether a str pushed now may be a dict key: right on a mapping
// (SETITEM), or at an even place after the mark over one (SETITEMS). Only
// such strs carry their text, so the memo keeps few of them for paths and
// values stay on the fast paths.
inline bool SymbolicStack::KeyPosition() const {
  const size_t size = stack_.size();
  if (size == 0) return false;
  const bool marked = !marks_.empty();
  const size_t mark = marked ? marks_.back() : 0;
  if ((!marked || mark < size - 1) && IsMapping(stack_[size - 1])) {
    return true;
  }
  if (!marked || mark == 0 || (size - mark - 1) % 2 != 0) return false;
  return IsMapping(stack_[mark - 1]);
}

inline void SymbolicStack::PushString(uint64_t offset,
                                      absl::string_view value,
                                      const KeyText& text) {
  const bool key = KeyPosition();
  Tag& t = PushTag(Tag::kOther, offset);
  SetStringTag(value, &t);
  if (key && value.size() <= ObjectPaths::kMaxKeyBytes) t.set_key_text(text);
}

// Bytes only matter as numpy's datetime unit (b'ns') and byte order, which
// numpy accepts as bytes or str; other bytes must not pass for the str
// keys and names of the same text.
inline void SymbolicStack::PushBytes(uint64_t offset,
                                     absl::string_view value) {
  Tag& t = PushTag(Tag::kOther, offset);
  if (value.size() > 7) return;
  SetStringTag(value, &t);
  if (t.kind() == Tag::kString && t.str_class() != StrClass::kUnit &&
      t.str_class() != StrClass::kByteOrder) {
    t.Reset(Tag::kOther, offset);
  }
}

inline void SymbolicStack::PushEmptyTuple(uint64_t offset) {
  PushTag(Tag::kTuple, offset).SetShape(0);  // shape ()
}

// Memo opcodes are about half of a typical skeleton's opcodes: the common
// cases (an irrelevant tag, a dense index) are inline.
inline absl::Status SymbolicStack::MemoPut(uint64_t offset, uint64_t index) {
  if (index < memo_dense_.size() && memo_dense_[index] == kMemoUnset &&
      !stack_.empty() && !Relevant(stack_.back()) &&
      !PathRelevant(stack_.back()) && stack_.back().kind() != Tag::kMark) {
    memo_dense_[index] = kMemoSet;
    ++memo_count_;
    return absl::OkStatus();
  }
  return MemoPutSlow(offset, index);
}

absl::Status SymbolicStack::MemoPutSlow(uint64_t offset, uint64_t index) {
  if (!HasItems(1)) return Underflow(offset);
  const Tag top = stack_.back();
  // The dense range grows to cover `index` when that at most doubles it
  // and the memo is at least half full up to there (the pickler's indices
  // are 0, 1, 2, ...): a few large indices must not buy a large table.
  if (index >= memo_dense_.size() &&
      index < std::max<uint64_t>(2 * memo_dense_.size(), 4096) &&
      index <= 2 * memo_count_ + 4096) {
    if (!Reserve(&memo_dense_, index + 1)) {
      return OverBudget("the memo", offset);
    }
    memo_dense_.resize(
        std::min<size_t>(memo_dense_.capacity(),
                         std::max<size_t>({index + 1, 2 * memo_dense_.size(),
                                           1024})),
        kMemoUnset);
    // Move the sparse entries that the dense range now covers.
    for (auto it = memo_sparse_.begin(); it != memo_sparse_.end();) {
      if (it->first < memo_dense_.size()) {
        memo_dense_[it->first] = it->second;
        it = memo_sparse_.erase(it);
        budget_->Refund(MemoryBudget::kHashNodeBytes);
      } else {
        ++it;
      }
    }
  }
  uint8_t* slot;
  if (index < memo_dense_.size()) {
    slot = &memo_dense_[index];
  } else {
    auto it = memo_sparse_.find(index);
    if (it == memo_sparse_.end()) {
      if (!ChargeHashNode()) return OverBudget("the memo", offset);
      it = memo_sparse_.emplace(index, kMemoUnset).first;
    }
    slot = &it->second;
  }
  if (*slot == kMemoUnset) ++memo_count_;
  if (!Relevant(top)) {
    *slot = kMemoSet;
    if (PathRelevant(top) && paths_.enabled()) {
      PathMemo memo;
      memo.node = top.node();
      memo.has_text = top.has_key_text();
      if (memo.has_text) memo.text = top.key_text();
      paths_.Memoize(index, memo);
      // Memoize gives up (and stops tracking) rather than fail the stream.
      if (paths_.enabled()) *slot = kMemoPath;
    }
    return absl::OkStatus();
  }
  auto it = memo_relevant_.find(index);
  if (it != memo_relevant_.end()) {
    memo_tags_[it->second] = top;  // reuse the index's slot
  } else {
    if (memo_tags_.size() >= UINT32_MAX ||
        !Reserve(&memo_tags_, memo_tags_.size() + 1) || !ChargeHashNode()) {
      // A memo that cannot keep a relevant tag would misread later GETs.
      return OverBudget("the memo", offset);
    }
    memo_relevant_.emplace(index, static_cast<uint32_t>(memo_tags_.size()));
    memo_tags_.push_back(top);
  }
  *slot = kMemoRelevant;
  return absl::OkStatus();
}

inline absl::Status SymbolicStack::MemoGet(uint64_t offset, uint64_t index) {
  if (index < memo_dense_.size()) {
    const uint8_t code = memo_dense_[index];
    if (code == kMemoSet) {
      PushTag(Tag::kOther, offset);
      return absl::OkStatus();
    }
    if (code == kMemoPath) {  // a key, mostly: every dict repeats them
      PushPathMemo(offset, index);
      return absl::OkStatus();
    }
  }
  return MemoGetSlow(offset, index);
}

// What only paths care about comes back on a neutral tag, so the wrapper
// logic sees what it saw before paths were followed.
inline void SymbolicStack::PushPathMemo(uint64_t offset, uint64_t index) {
  Tag& t = PushTag(Tag::kOther, offset);
  const PathMemo* memo = paths_.Recall(index);
  if (memo == nullptr) return;
  *t.mutable_node() = memo->node;
  if (memo->has_text) t.set_key_text(memo->text);
}

absl::Status SymbolicStack::MemoGetSlow(uint64_t offset, uint64_t index) {
  uint8_t code = kMemoUnset;
  if (index < memo_dense_.size()) {
    code = memo_dense_[index];
  } else {
    auto it = memo_sparse_.find(index);
    if (it != memo_sparse_.end()) code = it->second;
  }
  if (code == kMemoUnset) {
    return PickleCorrupt(
        absl::StrFormat("memo value not found at index %d", index), offset);
  }
  if (code == kMemoSet) {
    PushTag(Tag::kOther, offset);
  } else if (code == kMemoPath) {
    PushPathMemo(offset, index);
  } else {
    stack_.push_back(memo_tags_[memo_relevant_.at(index)]);
    stack_.back().set_start(offset);
  }
  return absl::OkStatus();
}

// Called for every tuple, so the common case (ints or OTHERs not on a
// 'shape' key) must stay a few compares.
absl::Status SymbolicStack::MakeTuple(uint64_t offset, size_t result,
                                      size_t first) {
  const size_t n = stack_.size() - first;
  const Tag* e = stack_.data() + first;
  Tag t;
  t.Reset(Tag::kTuple, stack_[result].start());
  for (size_t i = 0; i < n; ++i) {
    if (e[i].node() != 0) {
      PathStep step;
      step.kind = PathStep::kIndex;
      step.number = static_cast<int64_t>(i);
      paths_.Put(e[i].node(), paths_.NodeOf(t.mutable_node()), step);
    }
  }
  if (n == 0) {
    t.SetShape(0);  // (), a 0-d shape
  } else if (e[0].kind() == Tag::kInt) {
    if (result > 0 && IsShapeKey(stack_[result - 1]) &&
        !wrappers_.RecordShape(e, n, &t)) {
      return OverBudget("the table of shapes", offset);
    }
  } else if (e[0].kind() == Tag::kString) {
    t.SetFirstStr(e[0]);
  } else if (e[0].kind() == Tag::kGlobal &&
             e[0].global_class() != GlobalClass::kOther) {
    t.SetFirstGlobal(e[0].global_class());
  }
  // What numpy's tuples look like (numpy_dtype.h), when they might be one.
  if (t.tuple_first_str() || (n == 2 && e[1].kind() == Tag::kTuple) ||
      (n >= 5 && n <= 9)) {
    SummarizeNumpyTuple(e, n, &t);
  }
  stack_.resize(result + 1);
  stack_[result] = t;
  return absl::OkStatus();
}

void SymbolicStack::PutValues(Tag* target, size_t first, size_t end) {
  for (size_t i = first; i + 1 < end; i += 2) {
    const Tag& value = stack_[i + 1];
    PathStep step;
    if (value.node() != 0 && KeyStep(stack_[i], &step)) {
      paths_.Put(value.node(), paths_.NodeOf(target->mutable_node()), step);
    }
  }
}

void SymbolicStack::PutItems(Tag* target, size_t first, size_t end,
                             int64_t index, PathStep::Kind kind) {
  for (size_t i = first; i < end; ++i) {
    if (stack_[i].node() != 0) {
      PathStep step;
      step.kind = kind;
      step.number = index + static_cast<int64_t>(i - first);
      paths_.Put(stack_[i].node(), paths_.NodeOf(target->mutable_node()),
                 step);
    }
  }
}

void SymbolicStack::PutOne(const Tag& child, Tag* target,
                           PathStep::Kind kind) {
  if (child.node() == 0) return;
  PathStep step;
  step.kind = kind;
  paths_.Put(child.node(), paths_.NodeOf(target->mutable_node()), step);
}

inline absl::Status SymbolicStack::TupleN(uint64_t offset, size_t n) {
  if (!HasItems(n)) return Underflow(offset);
  const size_t first = stack_.size() - n;
  return MakeTuple(offset, first, first);
}

inline absl::Status SymbolicStack::MarkedTuple(uint64_t offset) {
  size_t mark = 0;
  absl::Status status = PopToMark(offset, &mark);
  if (!status.ok()) return status;
  return MakeTuple(offset, mark, mark + 1);
}

// LIST and FROZENSET.
inline absl::Status SymbolicStack::MarkedList(uint64_t offset,
                                              bool frozenset) {
  size_t mark = 0;
  absl::Status status = PopToMark(offset, &mark);
  if (!status.ok()) return status;
  const size_t n = stack_.size() - mark - 1;
  Tag list;
  list.Reset(frozenset ? Tag::kOther : Tag::kList, stack_[mark].start());
  if (!frozenset) {
    list.set_list_length(static_cast<int64_t>(n));
    PutItems(&list, mark + 1, stack_.size(), 0, PathStep::kIndex);
  }
  stack_.resize(mark + 1);
  stack_[mark] = list;
  return absl::OkStatus();
}

inline absl::Status SymbolicStack::MarkedDict(uint64_t offset) {
  size_t mark = 0;
  absl::Status status = PopToMark(offset, &mark);
  if (!status.ok()) return status;
  if ((stack_.size() - mark - 1) % 2 != 0) {
    return PickleCorrupt("odd number of items for DICT", offset);
  }
  Tag& dict = stack_[mark];
  dict.Reset(Tag::kDict, dict.start());
  WrapperStates::UpdateDict(&stack_[mark + 1], stack_.data() + stack_.size(),
                            &dict);
  PutValues(&dict, mark + 1, stack_.size());
  stack_.resize(mark + 1);
  return absl::OkStatus();
}

inline absl::Status SymbolicStack::Append(uint64_t offset) {
  if (!HasItems(2)) return Underflow(offset);
  Tag& target = stack_[stack_.size() - 2];
  if (target.kind() == Tag::kList) {
    PutItems(&target, stack_.size() - 1, stack_.size(), target.list_length(),
             PathStep::kIndex);
    target.set_list_length(target.list_length() + 1);
  }
  stack_.pop_back();
  return absl::OkStatus();
}

// APPENDS, ADDITEMS and SETITEMS.
inline absl::Status SymbolicStack::MarkedUpdate(uint8_t code, uint64_t offset) {
  size_t mark = 0;
  absl::Status status = PopToMark(offset, &mark);
  if (!status.ok()) return status;
  if (mark == 0 || stack_[mark - 1].kind() == Tag::kMark) {
    return Underflow(offset);
  }
  Tag& target = stack_[mark - 1];
  if (code == kSetItems) {
    if ((stack_.size() - mark - 1) % 2 != 0) {
      return PickleCorrupt("odd number of items for SETITEMS", offset);
    }
    if (target.kind() == Tag::kDict) {
      WrapperStates::UpdateDict(stack_.data() + mark + 1,
                                stack_.data() + stack_.size(), &target);
    }
    PutValues(&target, mark + 1, stack_.size());
  } else if (code == kAppends && target.kind() == Tag::kList) {
    // Items of a list whose length is known; ADDITEMS fills a set.
    PutItems(&target, mark + 1, stack_.size(), target.list_length(),
             PathStep::kIndex);
    target.set_list_length(target.list_length() +
                           static_cast<int64_t>(stack_.size() - mark - 1));
  }
  stack_.resize(mark);
  return absl::OkStatus();
}

inline absl::Status SymbolicStack::SetItem(uint64_t offset) {
  if (!HasItems(3)) return Underflow(offset);
  const size_t size = stack_.size();
  Tag& target = stack_[size - 3];
  if (target.kind() == Tag::kDict) {
    WrapperStates::UpdateDict(stack_.data() + size - 2, stack_.data() + size,
                              &target);
  }
  PutValues(&target, size - 2, size);
  stack_.resize(size - 2);
  return absl::OkStatus();
}

absl::Status SymbolicStack::StackGlobal(uint64_t offset) {
  if (!HasItems(2)) return Underflow(offset);
  const size_t size = stack_.size();
  Tag& module = stack_[size - 2];
  const Tag& name = stack_[size - 1];
  const GlobalClass klass =
      module.kind() == Tag::kString && name.kind() == Tag::kString
          ? ClassifyGlobal(module.str_class(), name.str_class())
          : GlobalClass::kOther;
  module.Reset(Tag::kGlobal, module.start());
  module.set_global_class(klass);
  stack_.pop_back();
  return absl::OkStatus();
}

absl::Status SymbolicStack::Inst(const PickleOp& op) {
  size_t mark = 0;
  absl::Status status = PopToMark(op.offset, &mark);
  if (!status.ok()) return status;
  Tag instance;  // its node, if an argument holds an array
  PutItems(&instance, mark + 1, stack_.size(), 0, PathStep::kArgIndex);
  stack_.resize(mark + 1);
  SetInstance(ClassifyGlobalText(op.arg, op.arg2), &stack_[mark]);
  *stack_[mark].mutable_node() = instance.node();
  return absl::OkStatus();
}

absl::Status SymbolicStack::Obj(uint64_t offset) {
  size_t mark = 0;
  absl::Status status = PopToMark(offset, &mark);
  if (!status.ok()) return status;
  if (stack_.size() - mark < 2) return Underflow(offset);
  const Tag& cls = stack_[mark + 1];
  const GlobalClass klass =
      cls.kind() == Tag::kGlobal ? cls.global_class() : GlobalClass::kOther;
  Tag instance;  // its node, if an argument holds an array
  PutItems(&instance, mark + 2, stack_.size(), 0, PathStep::kArgIndex);
  stack_.resize(mark + 1);
  SetInstance(klass, &stack_[mark]);
  *stack_[mark].mutable_node() = instance.node();
  return absl::OkStatus();
}

// NEWOBJ (cls, args) and NEWOBJ_EX (cls, args, kwargs).
absl::Status SymbolicStack::NewObj(uint64_t offset, size_t n) {
  if (!HasItems(n)) return Underflow(offset);
  const size_t first = stack_.size() - n;
  Tag& cls = stack_[first];
  const Tag args = stack_[first + 1];
  SetInstance(
      cls.kind() == Tag::kGlobal ? cls.global_class() : GlobalClass::kOther,
      &cls);
  PutOne(args, &cls, PathStep::kArgs);
  stack_.resize(first + 1);
  return absl::OkStatus();
}

absl::Status SymbolicStack::Reduce(uint64_t offset) {
  if (!HasItems(2)) return Underflow(offset);
  const size_t size = stack_.size();
  Tag& callable = stack_[size - 2];
  const Tag& args = stack_[size - 1];
  Tag result;
  result.Reset(Tag::kOther, callable.start());
  result.set_object();  // unless it is one of the kinds below
  const GlobalClass klass = callable.kind() == Tag::kGlobal
                                ? callable.global_class()
                                : GlobalClass::kOther;
  if (klass == GlobalClass::kNumpyDtype ||
      klass == GlobalClass::kStringDtypeFn) {
    if (!dtypes_.New(klass, args, &result)) {
      return OverBudget("the table of dtypes", offset);
    }
  } else if (klass == GlobalClass::kCodecsEncode &&
             args.kind() == Tag::kTuple && args.tuple_first_str() &&
             (args.str_class() == StrClass::kUnit ||
              args.str_class() == StrClass::kByteOrder)) {
    // _codecs.encode('ns', 'latin1'): bytes b'ns' at protocols 0-2.
    result.Reset(Tag::kString, callable.start());
    result.SetString(args.str_class(), args.str_letter(), args.str_number());
  } else if (klass == GlobalClass::kReconstructor &&
             args.kind() == Tag::kTuple && args.tuple_first_global() &&
             IsWrapperClass(args.global_class())) {
    // copy_reg._reconstructor(cls, object, None): protocol 0/1 objects.
    result.Reset(Tag::kWrapper, callable.start());
    result.set_global_class(args.global_class());
  }
  PutOne(args, &result, PathStep::kArgs);
  callable = result;
  stack_.pop_back();
  return absl::OkStatus();
}

absl::Status SymbolicStack::Build(uint64_t offset, Event* event) {
  if (!HasItems(2)) return Underflow(offset);
  const Tag& state = stack_.back();
  Tag& target = stack_[stack_.size() - 2];
  if (target.kind() == Tag::kDtype) {
    dtypes_.Build(target, state);  // on the shared object
  } else if (target.kind() == Tag::kWrapper) {
    build_ = WrapperBuild();
    build_.klass = static_cast<WrapperClass>(target.global_class());
    build_.start_offset = target.start();
    if (build_.klass == WrapperClass::kNumpyArrayWrapper) {
      absl::Status status = LayoutFromState(state, offset, &build_.layout);
      if (!status.ok()) return status;
    }
    // joblib's load_build replaces the wrapper by the array.
    SetInstance(GlobalClass::kOther, &target);
    *target.mutable_node() = paths_.NewArray();
    *event = Event::kWrapperBuild;
  } else {
    // The state of an object: what it holds is reached through it.
    PutOne(state, &target,
           state.kind() == Tag::kDict ? PathStep::kDictState
                                      : PathStep::kOtherState);
  }
  stack_.pop_back();
  return absl::OkStatus();
}

absl::Status SymbolicStack::Apply(const PickleOp& op, Event* event) {
  *event = Event::kNone;
  const uint64_t offset = op.offset;
  absl::Status room = RoomForPush(offset);
  if (!room.ok()) return room;
  switch (op.code) {
    case kProto:
      return absl::OkStatus();
    case kFrame:
      *event = Event::kFrame;
      return absl::OkStatus();
    case kStop:
      if (!HasItems(1)) return Underflow(offset);
      stopped_ = stack_.back();
      paths_.SetRoot(stopped_.node());
      stack_.pop_back();
      *event = Event::kStop;
      return absl::OkStatus();

    case kMark:
      PushMark(offset);
      return absl::OkStatus();
    case kPop:
      if (stack_.empty()) return Underflow(offset);
      if (stack_.back().kind() == Tag::kMark) marks_.pop_back();  // like C
      stack_.pop_back();
      return absl::OkStatus();
    case kPopMark: {
      size_t mark = 0;
      absl::Status status = PopToMark(offset, &mark);
      if (status.ok()) stack_.resize(mark);
      return status;
    }
    case kDup:
      if (!HasItems(1)) return Underflow(offset);
      stack_.push_back(stack_.back());
      stack_.back().set_start(offset);
      return absl::OkStatus();

    case kInt: case kBinInt: case kBinInt1: case kBinInt2: case kLong:
    case kLong1: case kLong4:
      if (op.has_int) {
        PushInt(offset, op.int_value);
      } else {
        PushTag(Tag::kOther, offset);  // too large to matter
      }
      return absl::OkStatus();
    case kNone:
      PushTag(Tag::kNone, offset);
      return absl::OkStatus();
    case kBinUnicode: case kShortBinUnicode: case kBinUnicode8:
      PushString(offset, op.arg,
                 {op.end() - op.arg.size(),
                  static_cast<uint32_t>(op.arg.size()), KeyText::kUtf8});
      return absl::OkStatus();
    case kBinString: case kShortBinString:
      PushString(offset, op.arg,
                 {op.end() - op.arg.size(),
                  static_cast<uint32_t>(op.arg.size()), KeyText::kAscii});
      return absl::OkStatus();
    case kString:  // S'text'\n
      PushString(offset, op.arg,
                 {offset + 2, static_cast<uint32_t>(op.arg.size()),
                  KeyText::kAsciiUnescaped});
      return absl::OkStatus();
    case kUnicode:  // Vtext\n
      PushString(offset, op.arg,
                 {offset + 1, static_cast<uint32_t>(op.arg.size()),
                  KeyText::kAsciiUnescaped});
      return absl::OkStatus();
    case kBinBytes: case kShortBinBytes: case kBinBytes8:
      PushBytes(offset, op.arg);
      return absl::OkStatus();
    case kNewTrue: case kNewFalse: case kFloat: case kBinFloat:
    case kByteArray8: case kNextBuffer: case kEmptySet:
    case kPersId: case kExt1: case kExt2: case kExt4:
      PushTag(Tag::kOther, offset);
      return absl::OkStatus();
    case kEmptyList:
      PushTag(Tag::kList, offset);
      return absl::OkStatus();
    case kReadOnlyBuffer:
      return HasItems(1) ? absl::OkStatus() : Underflow(offset);
    case kEmptyDict:
      PushTag(Tag::kDict, offset);
      return absl::OkStatus();
    case kEmptyTuple:
      PushEmptyTuple(offset);
      return absl::OkStatus();

    case kTuple:
      return MarkedTuple(offset);
    case kTuple1:
      return TupleN(offset, 1);
    case kTuple2:
      return TupleN(offset, 2);
    case kTuple3:
      return TupleN(offset, 3);
    case kList:
      return MarkedList(offset, /*frozenset=*/false);
    case kFrozenSet:
      return MarkedList(offset, /*frozenset=*/true);
    case kDict:
      return MarkedDict(offset);
    case kAppend:
      return Append(offset);
    case kAppends: case kAddItems: case kSetItems:
      return MarkedUpdate(op.code, offset);
    case kSetItem:
      return SetItem(offset);

    case kGlobal:
      PushTag(Tag::kGlobal, offset)
          .set_global_class(ClassifyGlobalText(op.arg, op.arg2));
      return absl::OkStatus();
    case kStackGlobal:
      return StackGlobal(offset);
    case kInst:
      return Inst(op);
    case kObj:
      return Obj(offset);
    case kNewObj:
      return NewObj(offset, 2);
    case kNewObjEx:
      return NewObj(offset, 3);
    case kReduce:
      return Reduce(offset);
    case kBuild:
      return Build(offset, event);
    case kBinPersId:
      if (!HasItems(1)) return Underflow(offset);
      SetInstance(GlobalClass::kOther, &stack_.back());
      return absl::OkStatus();

    case kPut: case kBinPut: case kLongBinPut:
      return MemoPut(offset, static_cast<uint64_t>(op.int_value));
    case kMemoize:
      return MemoPut(offset, memo_count_);
    case kGet: case kBinGet: case kLongBinGet:
      return MemoGet(offset, static_cast<uint64_t>(op.int_value));

    default:
      return PickleCorrupt(absl::StrFormat("unknown opcode 0x%02x", op.code),
                           offset);
  }
}

absl::Status SymbolicStack::Run(PickleScanner* scanner, PickleOp* op,
                                Event* event) {
  const char* const base = scanner->data().data();
  auto u8 = [base](uint64_t at) {
    return static_cast<uint64_t>(static_cast<uint8_t>(base[at]));
  };
  while (true) {
    // Fast path: opcodes that are decoded and applied in one dispatch. Any
    // opcode of at most 9 bytes lies inside the limit here, so only the
    // counted strings need a length check.
    const uint64_t pos = scanner->position();
    // Without room for a push, the slow path decodes the opcode first and
    // Apply reports the budget, as a loop of Next and Apply would.
    const bool can_push = (stack_.size() < stack_.capacity() &&
                           marks_.size() < marks_.capacity()) ||
                          GrowForPush(pos).ok();
    const uint64_t room = scanner->opcode_limit() - pos;
    if (can_push && room >= 9) {
      uint64_t length = 1;
      absl::Status status;
      switch (static_cast<uint8_t>(base[pos])) {
        case kMemoize:
          status = MemoPut(pos, memo_count_);
          break;
        case kBinPut:
          status = MemoPut(pos, u8(pos + 1));
          length = 2;
          break;
        case kBinGet:
          status = MemoGet(pos, u8(pos + 1));
          length = 2;
          break;
        case kLongBinGet:
          status = MemoGet(pos, u8(pos + 1) | u8(pos + 2) << 8 |
                                    u8(pos + 3) << 16 | u8(pos + 4) << 24);
          length = 5;
          break;
        case kMark:
          PushMark(pos);
          break;
        case kEmptyList:
          PushTag(Tag::kList, pos);
          break;
        case kNewTrue: case kNewFalse:
          PushTag(Tag::kOther, pos);
          break;
        case kEmptyDict:
          PushTag(Tag::kDict, pos);
          break;
        case kNone:
          PushTag(Tag::kNone, pos);
          break;
        case kEmptyTuple:
          PushEmptyTuple(pos);
          break;
        case kBinInt1:
          PushInt(pos, static_cast<int64_t>(u8(pos + 1)));
          length = 2;
          break;
        case kBinInt2:
          PushInt(pos, static_cast<int64_t>(u8(pos + 1) | u8(pos + 2) << 8));
          length = 3;
          break;
        case kBinInt:
          PushInt(pos, static_cast<int32_t>(u8(pos + 1) | u8(pos + 2) << 8 |
                                            u8(pos + 3) << 16 |
                                            u8(pos + 4) << 24));
          length = 5;
          break;
        case kBinFloat:
          PushTag(Tag::kOther, pos);
          length = 9;
          break;
        case kShortBinUnicode: case kShortBinString: case kShortBinBytes: {
          const uint64_t n = u8(pos + 1);
          if (n + 2 > room) {
            length = 0;  // truncated or past the frame: the slow path says
            break;
          }
          const absl::string_view text(base + pos + 2, n);
          if (base[pos] == static_cast<char>(kShortBinBytes)) {
            PushBytes(pos, text);
          } else {
            PushString(pos, text,
                       {pos + 2, static_cast<uint32_t>(n),
                        base[pos] == static_cast<char>(kShortBinUnicode)
                            ? KeyText::kUtf8
                            : KeyText::kAscii});
          }
          length = n + 2;
          break;
        }
        case kAppend:
          status = Append(pos);
          break;
        case kAppends: case kSetItems:
          status = MarkedUpdate(static_cast<uint8_t>(base[pos]), pos);
          break;
        case kSetItem:
          status = SetItem(pos);
          break;
        case kTuple1:
          status = TupleN(pos, 1);
          break;
        case kTuple2:
          status = TupleN(pos, 2);
          break;
        case kTuple3:
          status = TupleN(pos, 3);
          break;
        case kTuple:
          status = MarkedTuple(pos);
          break;
        default:
          length = 0;
          break;
      }
      if (length != 0) {
        if (!status.ok()) return status;
        scanner->Consume(length);
        continue;
      }
    }
    absl::Status status = scanner->Next(op);
    if (status.ok()) status = Apply(*op, event);
    if (!status.ok() || *event != Event::kNone) return status;
  }
}

}  // namespace persistd
