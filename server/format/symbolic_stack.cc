#include "server/format/symbolic_stack.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/format/pickle_opcodes.h"

namespace persistd {
namespace {

using namespace pickle_op;  // NOLINT: opcode names read best unqualified.
using Tag = SymbolicTag;

// Classes of short strings (SymbolicTag::klass of kString).
enum StrClass : uint8_t {
  kStrOther = 0,
  kStrJoblibModule,       // "joblib.numpy_pickle" (also sklearn's vendored)
  kStrNumpyArrayWrapper,  // class names
  kStrNDArrayWrapper,
  kStrZNDArrayWrapper,
  kStrNumpyModule,        // "numpy", "numpy.*"
  kStrDtype,              // "dtype": numpy's class name and a state key
  kStrStringDtypeFn,      // "_convert_to_stringdtype_kwargs" (StringDType)
  kStrCopyregModule,      // "copy_reg" (what pickle writes), "copyreg"
  kStrReconstructor,      // "_reconstructor"
  kStrCodecsModule,       // "_codecs": protocol 0-2 pickle bytes as
  kStrEncode,             // _codecs.encode(text, 'latin1')
  kStrShape,              // state keys
  kStrOrder,
  kStrAlignment,
  kStrOrderF,             // "F", the value of 'order' for Fortran order
  kStrDtypeCode,          // a letter then digits: "f8", "U10", "V48", "O8"
  kStrByteOrder,          // "<", ">", "|", "=": letter
  kStrUnit,               // a datetime unit: aux = DatetimeUnit
};

// Datetime units as numpy names them; a unit is its index + 1 here.
constexpr absl::string_view kDatetimeUnits[] = {
    "Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as",
    "generic"};
constexpr uint32_t kUnitGeneric = 14;

// Classes of globals (SymbolicTag::klass of kGlobal and kWrapper). The
// wrapper values equal WrapperClass's.
enum GlobalClass : uint8_t {
  kGlobalOther = 0,
  kGlobalNumpyArrayWrapper = static_cast<uint8_t>(
      WrapperClass::kNumpyArrayWrapper),
  kGlobalNDArrayWrapper = static_cast<uint8_t>(WrapperClass::kNDArrayWrapper),
  kGlobalZNDArrayWrapper = static_cast<uint8_t>(
      WrapperClass::kZNDArrayWrapper),
  kGlobalReconstructor,  // copy_reg._reconstructor (protocol 0/1 objects)
  kGlobalNumpyDtype,     // numpy.dtype
  kGlobalStringDtypeFn,  // numpy._core._internal._convert_to_stringdtype_...
  kGlobalCodecsEncode,   // _codecs.encode
};

// kTuple bits. At most one of kTupShape, kTupFirstStr, kTupFirstGlobal and
// kTupDatetimeMeta is set, as they need different first elements.
constexpr uint8_t kTupShape = 1;      // () or non-negative ints built on a
                                      // 'shape' key: a = shape reference
                                      // (0 for (), else offset in
                                      // shape_dims_ + 1)
constexpr uint8_t kTupFirstStr = 2;   // element 0 is a classified string:
                                      // klass, letter, aux are its
constexpr uint8_t kTupFirstGlobal = 4;  // element 0 is a global: klass
constexpr uint8_t kTupUnitMeta = 8;   // numpy's datetime metadata (unit,
                                      // count[, events] or [, 1, events]):
                                      // also kTupFirstStr; a = count
constexpr uint8_t kTupDatetimeMeta = 16;  // a dtype state's last item
                                          // (metadata, unit tuple): aux =
                                          // unit, a = count

// kDtypeState: numpy's dtype __setstate__ tuple (version, byteorder,
// subarray, names, fields, elsize, alignment, flags[, metadata]), or one of
// the older ones without some of the leading items (numpy's
// arraydescr_setstate), with an int elsize: a = elsize, letter = the
// byteorder if it is a classified one, aux = the datetime unit
// (kUnitGeneric when there is no metadata, as numpy then keeps
// dtype('M8')'s; 0 when it is not understood), b = the unit count.
constexpr uint8_t kStateHasObject = 1;   // flags has NPY_ITEM_HASOBJECT
constexpr uint8_t kStateStructured = 2;  // fields or subarray is not None

// kDict: klass is the 'shape' status (a = its shape reference), letter the
// 'dtype' status (b = its index in dtypes_), bits the alignment status (aux
// = alignment) and the order.
enum ShapeStatus : uint8_t { kShapeAbsent = 0, kShapeOk, kShapeBad };
enum DtypeStatus : char { kDtypeAbsent = 0, kDtypeKnown, kDtypeUnknown };
constexpr uint8_t kAlignSet = 1;   // aux = alignment
constexpr uint8_t kAlignNone = 2;  // the key is None
constexpr uint8_t kAlignBad = 4;   // neither an int >= 1 nor None
constexpr uint8_t kAlignMask = kAlignSet | kAlignNone | kAlignBad;
constexpr uint8_t kDictFortran = 8;  // 'order' is 'F'

constexpr size_t kMaxShortString = 64;

// kString and kOther tags of a str: a = the offset of its text in the
// stream, b = its size, and the KeyText::Encoding in the low bits, when it
// may name an array (a key short enough to follow).
constexpr uint8_t kTagText = 0x80;
constexpr uint8_t kTagTextEncoding = 0x03;
// kOther tags of an object a call or NEWOBJ/OBJ/INST made (not a scalar,
// not a memo fetch): one that items may be set on (an OrderedDict).
constexpr uint8_t kTagObject = 0x40;

bool IsLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

uint32_t DatetimeUnit(absl::string_view s) {
  for (uint32_t i = 0; i < kUnitGeneric; ++i) {
    if (s == kDatetimeUnits[i]) return i + 1;
  }
  return 0;
}

// The class of string `s`; *aux gets a dtype code's digits or a unit.
uint8_t ClassifyString(absl::string_view s, uint32_t* aux) {
  switch (s.size()) {
    case 1:
      switch (s[0]) {
        case '<': case '>': case '|': case '=':
          return kStrByteOrder;
        case 'F':
          return kStrOrderF;
        default:
          break;
      }
      break;
    case 5:
      if (s == "shape") return kStrShape;
      if (s == "dtype") return kStrDtype;
      if (s == "order") return kStrOrder;
      if (s == "numpy") return kStrNumpyModule;
      break;
    case 6:
      if (s == "encode") return kStrEncode;
      break;
    case 7:
      if (s == "copyreg") return kStrCopyregModule;
      if (s == "_codecs") return kStrCodecsModule;
      break;
    case 8:
      if (s == "copy_reg") return kStrCopyregModule;
      break;
    case 14:
      if (s == "_reconstructor") return kStrReconstructor;
      if (s == "NDArrayWrapper") return kStrNDArrayWrapper;
      break;
    case 15:
      if (s == "ZNDArrayWrapper") return kStrZNDArrayWrapper;
      break;
    case 17:
      if (s == "NumpyArrayWrapper") return kStrNumpyArrayWrapper;
      break;
    case 19:
      if (s == "joblib.numpy_pickle") return kStrJoblibModule;
      break;
    case 27:
      if (s == "numpy_array_alignment_bytes") return kStrAlignment;
      break;
    case 30:
      if (s == "_convert_to_stringdtype_kwargs") return kStrStringDtypeFn;
      break;
    case 37:
      if (s == "sklearn.externals.joblib.numpy_pickle") return kStrJoblibModule;
      break;
    default:
      break;
  }
  if (s.size() <= 2 || s.size() == 7) {
    const uint32_t unit = DatetimeUnit(s);
    if (unit != 0) {
      *aux = unit;
      return kStrUnit;
    }
  }
  if (s.size() >= 2 && s.size() <= 11 && IsLetter(s[0])) {
    uint64_t v = 0;
    size_t i = 1;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
      v = v * 10 + static_cast<uint64_t>(s[i] - '0');
    }
    if (i == s.size() && v <= UINT32_MAX) {
      *aux = static_cast<uint32_t>(v);
      return kStrDtypeCode;
    }
  }
  if (s.size() > 6 && absl::StartsWith(s, "numpy.")) return kStrNumpyModule;
  return kStrOther;
}

uint8_t ClassifyGlobal(uint8_t module, uint8_t name) {
  switch (module) {
    case kStrJoblibModule:
      if (name == kStrNumpyArrayWrapper) return kGlobalNumpyArrayWrapper;
      if (name == kStrNDArrayWrapper) return kGlobalNDArrayWrapper;
      if (name == kStrZNDArrayWrapper) return kGlobalZNDArrayWrapper;
      break;
    case kStrNumpyModule:
      if (name == kStrDtype) return kGlobalNumpyDtype;
      if (name == kStrStringDtypeFn) return kGlobalStringDtypeFn;
      break;
    case kStrCopyregModule:
      if (name == kStrReconstructor) return kGlobalReconstructor;
      break;
    case kStrCodecsModule:
      if (name == kStrEncode) return kGlobalCodecsEncode;
      break;
    default:
      break;
  }
  return kGlobalOther;
}

bool IsWrapperClass(uint8_t klass) {
  return klass == kGlobalNumpyArrayWrapper || klass == kGlobalNDArrayWrapper ||
         klass == kGlobalZNDArrayWrapper;
}

// Sets *t (a fresh OTHER tag) to the tag of string `s`.
void SetStringTag(absl::string_view s, Tag* t) {
  if (s.size() > kMaxShortString) return;
  uint32_t aux = 0;
  const uint8_t klass = ClassifyString(s, &aux);
  if (klass == kStrOther) return;
  t->kind = Tag::kString;
  t->klass = klass;
  if (klass == kStrDtypeCode || klass == kStrByteOrder) t->letter = s[0];
  t->aux = aux;
}

uint8_t ClassifyGlobalText(absl::string_view module, absl::string_view name) {
  if (module.size() > kMaxShortString || name.size() > kMaxShortString) {
    return kGlobalOther;
  }
  uint32_t unused;
  return ClassifyGlobal(ClassifyString(module, &unused),
                        ClassifyString(name, &unused));
}

// Makes *t, in place, the result of creating an object of class `klass`.
void SetInstance(uint8_t klass, Tag* t) {
  const uint64_t start = t->start;
  *t = Tag();
  t->start = start;
  if (IsWrapperClass(klass)) {
    t->kind = Tag::kWrapper;
    t->klass = klass;
  } else {
    t->bits = kTagObject;
  }
}

// Whether the memo must keep `t` (invariant 4).
bool Relevant(const Tag& t) {
  switch (t.kind) {
    case Tag::kString:
    case Tag::kGlobal:
      return t.klass != 0;
    case Tag::kDtype:
    case Tag::kDtypeState:
    case Tag::kWrapper:
      return true;
    case Tag::kTuple:
      return t.bits != 0;
    default:
      return false;
  }
}

// Whether the memo must keep `t` for paths only (paths_ keeps it).
bool PathRelevant(const Tag& t) {
  return t.node != 0 || (t.bits & kTagText) != 0;
}

// The step to a dict value under key `key`, if it can be named.
bool KeyStep(const Tag& key, PathStep* step) {
  if (key.kind == Tag::kInt) {
    step->kind = PathStep::kIntKey;
    step->number = key.a;
    return true;
  }
  if ((key.kind == Tag::kString || key.kind == Tag::kOther) &&
      (key.bits & kTagText) != 0) {
    step->kind = PathStep::kStrKey;
    step->text.offset = static_cast<uint64_t>(key.a);
    step->text.size = key.b;
    step->text.encoding =
        static_cast<KeyText::Encoding>(key.bits & kTagTextEncoding);
    return true;
  }
  return false;
}

bool IsShapeKey(const Tag& t) {
  return t.kind == Tag::kString && t.klass == kStrShape;
}

// Whether numpy's dtype __setstate__ ignores the state's elsize for this
// kind (it only applies it to flexible dtypes: S, U, V).
bool HasFixedSize(char kind) {
  switch (kind) {
    case 'b': case 'i': case 'u': case 'f': case 'c': case 'm': case 'M':
    case 'O':
      return true;
    default:
      return false;
  }
}

absl::Status Underflow(uint64_t offset) {
  return PickleCorrupt("unpickling stack underflow", offset);
}

}  // namespace

SymbolicStack::SymbolicStack(MemoryBudget* budget)
    : budget_(budget), paths_(budget) {}

SymbolicStack::SymbolicStack()
    : own_budget_(std::make_unique<MemoryBudget>(
          PickleLimits::kDefaultMaxIndexMemory)),
      budget_(own_budget_.get()),
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
  PushTag(Tag::kInt, offset).a = value;
}

// Whether items may be set on the object of `t`: a dict, or an object
// (an OrderedDict, a defaultdict).
inline bool IsMapping(const Tag& t) {
  return t.kind == Tag::kDict ||
         (t.kind == Tag::kOther && (t.bits & kTagObject) != 0);
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
  if (key && value.size() <= ObjectPaths::kMaxKeyBytes) {
    t.bits = kTagText | text.encoding;
    t.a = static_cast<int64_t>(text.offset);
    t.b = static_cast<uint32_t>(value.size());
  }
}

// Bytes only matter as numpy's datetime unit (b'ns') and byte order, which
// numpy accepts as bytes or str; other bytes must not pass for the str
// keys and names of the same text.
inline void SymbolicStack::PushBytes(uint64_t offset,
                                     absl::string_view value) {
  Tag& t = PushTag(Tag::kOther, offset);
  if (value.size() > 7) return;
  SetStringTag(value, &t);
  if (t.klass != kStrUnit && t.klass != kStrByteOrder) {
    t.kind = Tag::kOther;
    t.klass = 0;
    t.letter = 0;
    t.aux = 0;
  }
}

inline void SymbolicStack::PushEmptyTuple(uint64_t offset) {
  PushTag(Tag::kTuple, offset).bits = kTupShape;  // a = 0: shape ()
}

// Memo opcodes are about half of a typical skeleton's opcodes: the common
// cases (an irrelevant tag, a dense index) are inline.
inline absl::Status SymbolicStack::MemoPut(uint64_t offset, uint64_t index) {
  if (index < memo_dense_.size() && memo_dense_[index] == kMemoUnset &&
      !stack_.empty() && !Relevant(stack_.back()) &&
      !PathRelevant(stack_.back()) && stack_.back().kind != Tag::kMark) {
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
      memo.node = top.node;
      if (top.bits & kTagText) {
        memo.has_text = true;
        memo.text.offset = static_cast<uint64_t>(top.a);
        memo.text.size = top.b;
        memo.text.encoding =
            static_cast<KeyText::Encoding>(top.bits & kTagTextEncoding);
      }
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
  t.node = memo->node;
  if (memo->has_text) {
    t.bits = kTagText | memo->text.encoding;
    t.a = static_cast<int64_t>(memo->text.offset);
    t.b = memo->text.size;
  }
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
    stack_.back().start = offset;
  }
  return absl::OkStatus();
}

absl::Status SymbolicStack::RecordShape(uint64_t offset, const Tag* e,
                                        size_t n, int64_t* ref) {
  *ref = 0;
  for (size_t i = 0; i < n; ++i) {
    if (e[i].kind != Tag::kInt || e[i].a < 0) return absl::OkStatus();
  }
  if (!Reserve(&shape_dims_, shape_dims_.size() + n + 1)) {
    return OverBudget("the table of shapes", offset);
  }
  *ref = static_cast<int64_t>(shape_dims_.size()) + 1;
  shape_dims_.push_back(n);
  for (size_t i = 0; i < n; ++i) {
    shape_dims_.push_back(static_cast<uint64_t>(e[i].a));
  }
  return absl::OkStatus();
}

// Called for every tuple, so the common case (ints or OTHERs not on a
// 'shape' key) must stay a few compares.
absl::Status SymbolicStack::MakeTuple(uint64_t offset, size_t result,
                                      size_t first) {
  const size_t n = stack_.size() - first;
  const Tag* e = stack_.data() + first;
  Tag::Kind kind = Tag::kTuple;
  uint8_t bits = 0, klass = 0;
  char letter = 0;
  uint32_t aux = 0;
  int64_t a = 0;
  uint32_t b = 0;
  // The tuple's node, if it holds an array.
  uint32_t node = 0;
  for (size_t i = 0; i < n; ++i) {
    if (e[i].node != 0) {
      PathStep step;
      step.kind = PathStep::kIndex;
      step.number = static_cast<int64_t>(i);
      paths_.Put(e[i].node, paths_.NodeOf(&node), step);
    }
  }
  if (n == 0) {
    bits = kTupShape;  // (), a 0-d shape
  } else if (e[0].kind == Tag::kInt) {
    if (result > 0 && IsShapeKey(stack_[result - 1])) {
      absl::Status status = RecordShape(offset, e, n, &a);
      if (!status.ok()) return status;
      if (a != 0) bits = kTupShape;
    }
  } else if (e[0].kind == Tag::kString) {
    bits = kTupFirstStr;
    klass = e[0].klass;
    letter = e[0].letter;
    aux = e[0].aux;
    // numpy's datetime metadata tuple: (unit, count) and, from older
    // numpys, (unit, count, events) or (unit, count, divisor, events);
    // a divisor other than 1 changes the unit, which is not followed here.
    if (klass == kStrUnit && n >= 2 && n <= 4 && e[1].kind == Tag::kInt &&
        e[1].a >= 1 && e[1].a <= INT32_MAX &&
        (n != 4 || (e[2].kind == Tag::kInt && e[2].a == 1))) {
      bits |= kTupUnitMeta;
      a = e[1].a;
    }
  } else if (e[0].kind == Tag::kGlobal) {
    if (e[0].klass != kGlobalOther) {
      bits = kTupFirstGlobal;
      klass = e[0].klass;
    }
  } else if (n == 2 && (e[0].kind == Tag::kNone || e[0].kind == Tag::kDict) &&
             e[1].kind == Tag::kTuple && (e[1].bits & kTupUnitMeta)) {
    bits = kTupDatetimeMeta;  // (metadata dict or None, unit tuple)
    aux = e[1].aux;
    a = e[1].a;
  }
  // numpy's dtype __setstate__ tuples: (version, byteorder, subarray,
  // names, fields, elsize, alignment, flags[, metadata]) with 8 or 9
  // items; older ones drop items from the front part (numpy's
  // arraydescr_setstate). A shape of 5 to 9 dims stays a shape.
  if (n >= 5 && n <= 9 && bits != kTupShape) {
    const size_t elsize_index = n >= 7 ? 5 : n == 6 ? 4 : 3;
    const size_t byteorder_index = n >= 6 ? 1 : 0;
    const size_t subarray_index = byteorder_index + 1;
    const size_t fields_index = n >= 7 ? 4 : subarray_index + 1;
    const Tag& byteorder = e[byteorder_index];
    if (e[elsize_index].kind == Tag::kInt && byteorder.kind != Tag::kInt) {
      kind = Tag::kDtypeState;
      bits = 0;
      klass = 0;
      a = e[elsize_index].a;
      letter = byteorder.kind == Tag::kString &&
                       byteorder.klass == kStrByteOrder
                   ? byteorder.letter
                   : 0;
      if (e[subarray_index].kind != Tag::kNone ||
          e[fields_index].kind != Tag::kNone) {
        bits |= kStateStructured;
      }
      if (n >= 8 && e[7].kind == Tag::kInt && (e[7].a & 1) != 0) {
        bits |= kStateHasObject;  // NPY_ITEM_HASOBJECT
      }
      // Datetime unit: numpy keeps dtype('M8')'s generic unit when the
      // state has no metadata or None.
      aux = 0;
      b = 0;
      if (n < 9 || e[8].kind == Tag::kNone) {
        aux = kUnitGeneric;
        b = 1;
      } else if (e[8].kind == Tag::kTuple &&
                 (e[8].bits & kTupDatetimeMeta)) {
        aux = e[8].aux;
        b = static_cast<uint32_t>(e[8].a);  // <= INT32_MAX
      }
    }
  }
  stack_.resize(result + 1);
  Tag& t = stack_[result];
  t.kind = kind;
  t.klass = klass;
  t.bits = bits;
  t.letter = letter;
  t.aux = aux;
  t.a = a;
  t.b = b;
  t.node = node;
  return absl::OkStatus();
}

void SymbolicStack::UpdateDict(Tag* dict, size_t first) {
  for (size_t i = first; i + 1 < stack_.size(); i += 2) {
    const Tag& key = stack_[i];
    if (key.kind != Tag::kString) continue;
    const Tag& value = stack_[i + 1];
    switch (key.klass) {
      case kStrShape:
        if (value.kind == Tag::kTuple && (value.bits & kTupShape)) {
          dict->klass = kShapeOk;
          dict->a = value.a;
        } else {
          dict->klass = kShapeBad;
        }
        break;
      case kStrDtype:
        if (value.kind == Tag::kDtype) {
          dict->letter = kDtypeKnown;
          dict->b = value.aux;
        } else {
          dict->letter = kDtypeUnknown;
        }
        break;
      case kStrOrder:
        // joblib reads the array in Fortran order iff order == 'F'.
        if (value.kind == Tag::kString && value.klass == kStrOrderF) {
          dict->bits |= kDictFortran;
        } else {
          dict->bits &= ~kDictFortran;
        }
        break;
      case kStrAlignment:
        dict->bits &= ~kAlignMask;
        if (value.kind == Tag::kInt && value.a >= 1) {
          dict->bits |= kAlignSet;
          dict->aux = static_cast<uint32_t>(std::min<int64_t>(value.a, 255));
        } else if (value.kind == Tag::kNone) {
          dict->bits |= kAlignNone;
        } else {
          dict->bits |= kAlignBad;
        }
        break;
      default:
        break;
    }
  }
}

void SymbolicStack::PutValues(Tag* target, size_t first, size_t end) {
  for (size_t i = first; i + 1 < end; i += 2) {
    const Tag& value = stack_[i + 1];
    PathStep step;
    if (value.node != 0 && KeyStep(stack_[i], &step)) {
      paths_.Put(value.node, paths_.NodeOf(&target->node), step);
    }
  }
}

void SymbolicStack::PutItems(Tag* target, size_t first, size_t end,
                             int64_t index, PathStep::Kind kind) {
  for (size_t i = first; i < end; ++i) {
    if (stack_[i].node != 0) {
      PathStep step;
      step.kind = kind;
      step.number = index + static_cast<int64_t>(i - first);
      paths_.Put(stack_[i].node, paths_.NodeOf(&target->node), step);
    }
  }
}

void SymbolicStack::PutOne(const Tag& child, Tag* target,
                           PathStep::Kind kind) {
  if (child.node == 0) return;
  PathStep step;
  step.kind = kind;
  paths_.Put(child.node, paths_.NodeOf(&target->node), step);
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
  list.start = stack_[mark].start;
  if (!frozenset) {
    list.kind = Tag::kList;
    list.a = static_cast<int64_t>(n);
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
  SetInstance(kGlobalOther, &dict);
  dict.kind = Tag::kDict;
  UpdateDict(&dict, mark + 1);
  PutValues(&dict, mark + 1, stack_.size());
  stack_.resize(mark + 1);
  return absl::OkStatus();
}

inline absl::Status SymbolicStack::Append(uint64_t offset) {
  if (!HasItems(2)) return Underflow(offset);
  Tag& target = stack_[stack_.size() - 2];
  if (target.kind == Tag::kList) {
    PutItems(&target, stack_.size() - 1, stack_.size(), target.a,
             PathStep::kIndex);
    ++target.a;
  }
  stack_.pop_back();
  return absl::OkStatus();
}

// APPENDS, ADDITEMS and SETITEMS.
inline absl::Status SymbolicStack::MarkedUpdate(uint8_t code, uint64_t offset) {
  size_t mark = 0;
  absl::Status status = PopToMark(offset, &mark);
  if (!status.ok()) return status;
  if (mark == 0 || stack_[mark - 1].kind == Tag::kMark) {
    return Underflow(offset);
  }
  Tag& target = stack_[mark - 1];
  if (code == kSetItems) {
    if ((stack_.size() - mark - 1) % 2 != 0) {
      return PickleCorrupt("odd number of items for SETITEMS", offset);
    }
    if (target.kind == Tag::kDict) UpdateDict(&target, mark + 1);
    PutValues(&target, mark + 1, stack_.size());
  } else if (code == kAppends && target.kind == Tag::kList) {
    // Items of a list whose length is known; ADDITEMS fills a set.
    PutItems(&target, mark + 1, stack_.size(), target.a, PathStep::kIndex);
    target.a += static_cast<int64_t>(stack_.size() - mark - 1);
  }
  stack_.resize(mark);
  return absl::OkStatus();
}

inline absl::Status SymbolicStack::SetItem(uint64_t offset) {
  if (!HasItems(3)) return Underflow(offset);
  const size_t size = stack_.size();
  Tag& target = stack_[size - 3];
  if (target.kind == Tag::kDict) UpdateDict(&target, size - 2);
  PutValues(&target, size - 2, size);
  stack_.resize(size - 2);
  return absl::OkStatus();
}

absl::Status SymbolicStack::StackGlobal(uint64_t offset) {
  if (!HasItems(2)) return Underflow(offset);
  const size_t size = stack_.size();
  Tag& module = stack_[size - 2];
  const Tag& name = stack_[size - 1];
  const uint8_t klass =
      module.kind == Tag::kString && name.kind == Tag::kString
          ? ClassifyGlobal(module.klass, name.klass)
          : uint8_t{kGlobalOther};
  SetInstance(kGlobalOther, &module);
  module.kind = Tag::kGlobal;
  module.klass = klass;
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
  stack_[mark].node = instance.node;
  return absl::OkStatus();
}

absl::Status SymbolicStack::Obj(uint64_t offset) {
  size_t mark = 0;
  absl::Status status = PopToMark(offset, &mark);
  if (!status.ok()) return status;
  if (stack_.size() - mark < 2) return Underflow(offset);
  const Tag& cls = stack_[mark + 1];
  const uint8_t klass =
      cls.kind == Tag::kGlobal ? cls.klass : uint8_t{kGlobalOther};
  Tag instance;  // its node, if an argument holds an array
  PutItems(&instance, mark + 2, stack_.size(), 0, PathStep::kArgIndex);
  stack_.resize(mark + 1);
  SetInstance(klass, &stack_[mark]);
  stack_[mark].node = instance.node;
  return absl::OkStatus();
}

// NEWOBJ (cls, args) and NEWOBJ_EX (cls, args, kwargs).
absl::Status SymbolicStack::NewObj(uint64_t offset, size_t n) {
  if (!HasItems(n)) return Underflow(offset);
  const size_t first = stack_.size() - n;
  Tag& cls = stack_[first];
  const Tag args = stack_[first + 1];
  SetInstance(cls.kind == Tag::kGlobal ? cls.klass : uint8_t{kGlobalOther},
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
  result.start = callable.start;
  result.bits = kTagObject;  // unless it is one of the kinds below
  if (callable.kind == Tag::kGlobal) {
    if (callable.klass == kGlobalNumpyDtype ||
        callable.klass == kGlobalStringDtypeFn) {
      // A new dtype object (invariant 5).
      if (!Reserve(&dtypes_, dtypes_.size() + 1)) {
        return OverBudget("the table of dtypes", offset);
      }
      result.kind = Tag::kDtype;
      result.bits = 0;
      result.aux = static_cast<uint32_t>(dtypes_.size());
      dtypes_.emplace_back();
      DtypeRecord& dtype = dtypes_.back();
      if (callable.klass == kGlobalStringDtypeFn) {
        dtype.object = true;  // StringDType: hasobject, no code
      } else if (args.kind == Tag::kTuple && (args.bits & kTupFirstStr) &&
                 args.klass == kStrDtypeCode) {
        // numpy.dtype('f8', False, True). 'U<n>' counts UCS4 characters,
        // the other codes bytes; the BUILD state's elsize may override it.
        dtype.kind = args.letter;
        dtype.sized = true;
        dtype.itemsize = uint64_t{args.aux} * (args.letter == 'U' ? 4 : 1);
        dtype.object = args.letter == 'O';
      }
    } else if (callable.klass == kGlobalCodecsEncode &&
               args.kind == Tag::kTuple && (args.bits & kTupFirstStr) &&
               (args.klass == kStrUnit || args.klass == kStrByteOrder)) {
      // _codecs.encode('ns', 'latin1'): bytes b'ns' at protocols 0-2.
      result.kind = Tag::kString;
      result.bits = 0;
      result.klass = args.klass;
      result.letter = args.letter;
      result.aux = args.aux;
    } else if (callable.klass == kGlobalReconstructor &&
               args.kind == Tag::kTuple && (args.bits & kTupFirstGlobal) &&
               IsWrapperClass(args.klass)) {
      // copy_reg._reconstructor(cls, object, None): protocol 0/1 objects.
      result.kind = Tag::kWrapper;
      result.bits = 0;
      result.klass = args.klass;
    }
  }
  PutOne(args, &result, PathStep::kArgs);
  callable = result;
  stack_.pop_back();
  return absl::OkStatus();
}

std::string SymbolicStack::DtypeString(const DtypeRecord& dtype) {
  if (dtype.structured || dtype.byteorder == 0 || !dtype.sized) return "";
  std::string out = {dtype.byteorder, dtype.kind};
  switch (dtype.kind) {
    case 'b': case 'i': case 'u': case 'f': case 'c': case 'S':
      return absl::StrCat(out, dtype.itemsize);
    case 'U':  // numpy counts characters here
      if (dtype.itemsize % 4 != 0) return "";
      return absl::StrCat(out, dtype.itemsize / 4);
    case 'O':
      return out;
    case 'M': case 'm':
      absl::StrAppend(&out, dtype.itemsize);
      if (dtype.unit == 0) return "";
      if (dtype.unit == kUnitGeneric) return out;
      absl::StrAppend(&out, "[");
      if (dtype.unit_count != 1) absl::StrAppend(&out, dtype.unit_count);
      absl::StrAppend(&out, kDatetimeUnits[dtype.unit - 1], "]");
      return out;
    default:  // 'V' (void, structured, subarray) and codes numpy never writes
      return "";
  }
}

absl::Status SymbolicStack::LayoutFromState(const Tag& state, uint64_t offset,
                                            ArrayLayout* layout) const {
  auto bad = [offset](absl::string_view what) {
    return absl::DataLossError(absl::StrFormat(
        "NumpyArrayWrapper state %s (BUILD at offset %d)", what, offset));
  };
  if (state.kind != Tag::kDict) return bad("is not a dict");
  if ((state.klass == kShapeOk &&
       static_cast<uint64_t>(state.a) > shape_dims_.size()) ||
      (state.letter == kDtypeKnown &&
       static_cast<uint64_t>(state.b) >= dtypes_.size())) {
    return absl::InternalError("LayoutFromState: a tag of another stack");
  }
  *layout = ArrayLayout();
  switch (state.klass) {
    case kShapeAbsent:
      return bad("has no 'shape'");
    case kShapeBad:
      return bad("has a 'shape' that is not a tuple of non-negative ints");
    default:
      break;
  }
  // The element count; 0 if any dim is, else too_large on overflow.
  uint64_t count = 1;
  bool zero = false;
  if (state.a != 0) {  // else shape ()
    const size_t at = static_cast<size_t>(state.a - 1);
    const uint64_t ndim = shape_dims_[at];
    layout->shape.assign(shape_dims_.begin() + at + 1,
                         shape_dims_.begin() + at + 1 + ndim);
  }
  for (uint64_t dim : layout->shape) {
    if (dim == 0) {
      zero = true;
    } else if (!layout->too_large &&
               __builtin_mul_overflow(count, dim, &count)) {
      layout->too_large = true;
    }
  }
  if (zero) {
    count = 0;
    layout->too_large = false;
  }
  layout->fortran_order = (state.bits & kDictFortran) != 0;
  switch (state.letter) {
    case kDtypeAbsent:
      return bad("has no 'dtype'");
    case kDtypeUnknown:
      return absl::UnimplementedError(absl::StrFormat(
          "NumpyArrayWrapper state has a 'dtype' whose item size this reader "
          "does not know (BUILD at offset %d)",
          offset));
    default: {
      const DtypeRecord& dtype = dtypes_[static_cast<size_t>(state.b)];
      if (dtype.object) {
        layout->object = true;
        layout->too_large = false;
      } else if (!dtype.sized) {
        return absl::UnimplementedError(absl::StrFormat(
            "NumpyArrayWrapper state has a 'dtype' whose item size this "
            "reader does not know (BUILD at offset %d)",
            offset));
      } else if (!layout->too_large &&
                 __builtin_mul_overflow(count, dtype.itemsize,
                                        &layout->nbytes)) {
        layout->too_large = true;
      }
      if (dtype.sized) layout->itemsize = dtype.itemsize;
      layout->dtype = DtypeString(dtype);
      break;
    }
  }
  if (state.bits & kAlignBad) {
    return bad("has a 'numpy_array_alignment_bytes' that is not an int");
  }
  if (state.bits & kAlignSet) {
    layout->padded = true;
    layout->alignment = state.aux;
  }
  return absl::OkStatus();
}

absl::Status SymbolicStack::Build(uint64_t offset, Event* event) {
  if (!HasItems(2)) return Underflow(offset);
  const Tag& state = stack_.back();
  Tag& target = stack_[stack_.size() - 2];
  if (target.kind == Tag::kDtype) {
    if (state.kind == Tag::kDtypeState) {
      // numpy.dtype.__setstate__ on the shared object (invariant 5).
      DtypeRecord& dtype = dtypes_[target.aux];
      if (state.a >= 0 && !HasFixedSize(dtype.kind)) {
        dtype.itemsize = static_cast<uint64_t>(state.a);
        dtype.sized = true;
      }
      if (state.bits & kStateHasObject) dtype.object = true;
      dtype.structured = (state.bits & kStateStructured) != 0;
      dtype.byteorder = state.letter == '=' ? '<' : state.letter;
      dtype.unit = state.aux;
      dtype.unit_count = state.b;
    }
  } else if (target.kind == Tag::kWrapper) {
    build_ = WrapperBuild();
    build_.klass = static_cast<WrapperClass>(target.klass);
    build_.start_offset = target.start;
    if (build_.klass == WrapperClass::kNumpyArrayWrapper) {
      absl::Status status = LayoutFromState(state, offset, &build_.layout);
      if (!status.ok()) return status;
    }
    // joblib's load_build replaces the wrapper by the array.
    SetInstance(kGlobalOther, &target);
    target.node = paths_.NewArray();
    *event = Event::kWrapperBuild;
  } else {
    // The state of an object: what it holds is reached through it.
    PutOne(state, &target,
           state.kind == Tag::kDict ? PathStep::kDictState
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
      paths_.SetRoot(stopped_.node);
      stack_.pop_back();
      *event = Event::kStop;
      return absl::OkStatus();

    case kMark:
      PushMark(offset);
      return absl::OkStatus();
    case kPop:
      if (stack_.empty()) return Underflow(offset);
      if (stack_.back().kind == Tag::kMark) marks_.pop_back();  // like C
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
      stack_.back().start = offset;
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
      PushTag(Tag::kGlobal, offset).klass = ClassifyGlobalText(op.arg, op.arg2);
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
      SetInstance(kGlobalOther, &stack_.back());
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
    if (stack_.size() == stack_.capacity() ||
        marks_.size() == marks_.capacity()) {
      absl::Status status = GrowForPush(pos);
      if (!status.ok()) return status;
    }
    const uint64_t room = scanner->opcode_limit() - pos;
    if (room >= 9) {
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
