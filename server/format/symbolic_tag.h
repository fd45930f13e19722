// SymbolicTag stands for one object on the symbolic unpickler's stack or in
// its memo (symbolic_stack.h): not the object, only what the format layer
// needs to know of it, in 32 trivially copyable bytes. What a tag records
// depends on its kind, and each kind's facts have their own accessors
// below; the raw words behind them are private.
//
// The lexicon that gives short strings and globals their meaning (module
// and class names, wrapper-state keys, dtype codes, byte orders, datetime
// units) lives here too, since all three parts of the format layer read
// it: the pickle VM, numpy's dtypes (numpy_dtype.h) and joblib's wrapper
// states (wrapper_state.h).
#ifndef PERSISTD_SERVER_FORMAT_SYMBOLIC_TAG_H_
#define PERSISTD_SERVER_FORMAT_SYMBOLIC_TAG_H_

#include <cstdint>

#include "absl/strings/string_view.h"
#include "server/format/object_paths.h"

namespace persistd {

// The three joblib wrapper classes, all in module joblib.numpy_pickle.
enum class WrapperClass : uint8_t {
  kNone = 0,
  kNumpyArrayWrapper,  // joblib >= 0.10: data follows the wrapper's BUILD
  kNDArrayWrapper,     // joblib < 0.10: data in a companion .npy file
  kZNDArrayWrapper,    // joblib < 0.10: data in a companion .npy.z file
};

// What a short string means to the format layer.
enum class StrClass : uint8_t {
  kOther = 0,
  kJoblibModule,       // "joblib.numpy_pickle" (also sklearn's vendored)
  kNumpyArrayWrapper,  // class names
  kNDArrayWrapper,
  kZNDArrayWrapper,
  kNumpyModule,        // "numpy", "numpy.*"
  kDtype,              // "dtype": numpy's class name and a state key
  kStringDtypeFn,      // "_convert_to_stringdtype_kwargs" (StringDType)
  kCopyregModule,      // "copy_reg" (what pickle writes), "copyreg"
  kReconstructor,      // "_reconstructor"
  kCodecsModule,       // "_codecs": protocol 0-2 pickle bytes as
  kEncode,             // _codecs.encode(text, 'latin1')
  kShape,              // wrapper state keys
  kOrder,
  kAlignment,
  kOrderF,             // "F", the value of 'order' for Fortran order
  kDtypeCode,          // a letter then digits: "f8", "U10"; number = digits
  kByteOrder,          // "<", ">", "|", "="
  kUnit,               // a datetime unit; number = DatetimeUnit()
};

// What a global means. The wrapper values equal WrapperClass's.
enum class GlobalClass : uint8_t {
  kOther = 0,
  kNumpyArrayWrapper = static_cast<uint8_t>(WrapperClass::kNumpyArrayWrapper),
  kNDArrayWrapper = static_cast<uint8_t>(WrapperClass::kNDArrayWrapper),
  kZNDArrayWrapper = static_cast<uint8_t>(WrapperClass::kZNDArrayWrapper),
  kReconstructor,  // copy_reg._reconstructor (protocol 0/1 objects)
  kNumpyDtype,     // numpy.dtype
  kStringDtypeFn,  // numpy._core._internal._convert_to_stringdtype_kwargs
  kCodecsEncode,   // _codecs.encode
};

inline bool IsWrapperClass(GlobalClass klass) {
  return klass == GlobalClass::kNumpyArrayWrapper ||
         klass == GlobalClass::kNDArrayWrapper ||
         klass == GlobalClass::kZNDArrayWrapper;
}

// Strings longer than this are never classified.
inline constexpr size_t kMaxShortString = 64;

// The class of `s`; *number receives a dtype code's digits or a datetime
// unit (see numpy_dtype.h).
StrClass ClassifyString(absl::string_view s, uint32_t* number);
GlobalClass ClassifyGlobal(StrClass module, StrClass name);
// The class of GLOBAL/INST's text arguments.
GlobalClass ClassifyGlobalText(absl::string_view module,
                               absl::string_view name);

class SymbolicTag {
 public:
  enum Kind : uint8_t {
    kOther = 0,   // any object, or one of no interest; strs that may be
                  // keys keep their text
    kMark,
    kNone,        // Python None
    kInt,         // an int that fits in int64
    kString,      // a classified short string
    kGlobal,      // a class or function, classified
    kTuple,       // a tuple, summarized (see the tuple accessors)
    kDict,        // a dict, with what joblib's wrapper state reads of it
    kDtype,       // a numpy.dtype object (numpy_dtype.h)
    kDtypeState,  // a numpy.dtype __setstate__ tuple (numpy_dtype.h)
    kWrapper,     // a joblib array wrapper before its BUILD
    kList,        // a list, with its length so far
  };

  // Makes a value-initialized tag one of `kind` for the object whose first
  // opcode is at `start` (the symbolic stack pushes them this way: it is
  // the hottest code of the format layer).
  void Init(Kind kind, uint64_t start) {
    kind_ = kind;
    start_ = start;
  }
  // The same for any tag.
  void Reset(Kind kind, uint64_t start) {
    *this = SymbolicTag();
    kind_ = kind;
    start_ = start;
  }

  // Every kind.
  Kind kind() const { return kind_; }
  // The offset of the first opcode that contributed to this stack entry.
  uint64_t start() const { return start_; }
  void set_start(uint64_t start) { start_ = start; }
  // The object's node in ObjectPaths, 0 if it holds no array (always 0 for
  // scalars, strings, globals and dtypes).
  uint32_t node() const { return node_; }
  uint32_t* mutable_node() { return &node_; }

  // kInt.
  int64_t int_value() const { return static_cast<int64_t>(w0_); }
  void set_int_value(int64_t v) { w0_ = static_cast<uint64_t>(v); }

  // kString; also a kTuple's first element (tuple_first_str()).
  StrClass str_class() const { return static_cast<StrClass>(b0_); }
  // A dtype code's or byte order's first character.
  char str_letter() const { return static_cast<char>(b1_); }
  // A dtype code's digits, or a datetime unit.
  uint32_t str_number() const { return static_cast<uint32_t>(w1_); }
  // Makes a fresh kOther tag (nothing set but its start) a kString.
  void MakeString(StrClass klass, char letter, uint32_t number) {
    kind_ = kString;
    SetString(klass, letter, number);
  }
  void SetString(StrClass klass, char letter, uint32_t number) {
    b0_ = static_cast<uint8_t>(klass);
    b1_ = static_cast<uint8_t>(letter);
    w1_ = (w1_ & ~uint64_t{0xffffffff}) | number;
  }

  // kString and kOther strs that may be dict keys: their text.
  bool has_key_text() const { return (b2_ & kText) != 0; }
  KeyText key_text() const {
    KeyText text;
    text.offset = w0_;
    text.size = static_cast<uint32_t>(w1_ >> 32);
    text.encoding = static_cast<KeyText::Encoding>(b2_ & kEncoding);
    return text;
  }
  void set_key_text(const KeyText& text) {
    b2_ = static_cast<uint8_t>((b2_ & ~kEncoding) | kText | text.encoding);
    w0_ = text.offset;
    w1_ = (w1_ & 0xffffffff) | uint64_t{text.size} << 32;
  }

  // kOther: an object a call or NEWOBJ/OBJ/INST made (not a scalar, not a
  // memo fetch): one that items may be set on (an OrderedDict).
  bool is_object() const { return (b2_ & kObject) != 0; }
  void set_object() { b2_ |= kObject; }

  // kGlobal, kWrapper.
  GlobalClass global_class() const { return static_cast<GlobalClass>(b0_); }
  void set_global_class(GlobalClass klass) {
    b0_ = static_cast<uint8_t>(klass);
  }

  // kList.
  int64_t list_length() const { return static_cast<int64_t>(w0_); }
  void set_list_length(int64_t n) { w0_ = static_cast<uint64_t>(n); }

  // kTuple: at most one of shape, first str, first global and datetime
  // metadata holds, as they need different first elements.
  //  - a shape: () or non-negative ints built on a 'shape' key; its dims
  //    are in the wrapper states' table (wrapper_state.h);
  bool tuple_is_shape() const { return (b2_ & kTupShape) != 0; }
  uint64_t shape_ref() const { return w0_; }  // 0 for ()
  void SetShape(uint64_t ref) {
    b2_ |= kTupShape;
    w0_ = ref;
  }
  //  - element 0 is a classified string: str_class() etc. are its;
  bool tuple_first_str() const { return (b2_ & kTupFirstStr) != 0; }
  void SetFirstStr(const SymbolicTag& s) {
    b2_ |= kTupFirstStr;
    SetString(s.str_class(), s.str_letter(), s.str_number());
  }
  //  - element 0 is a classified global: global_class();
  bool tuple_first_global() const { return (b2_ & kTupFirstGlobal) != 0; }
  void SetFirstGlobal(GlobalClass klass) {
    b2_ |= kTupFirstGlobal;
    set_global_class(klass);
  }
  //  - numpy's datetime metadata (unit, count[, ...]): also a first str;
  bool tuple_unit_meta() const { return (b2_ & kTupUnitMeta) != 0; }
  //  - a dtype state's last item (metadata, unit tuple).
  bool tuple_datetime_meta() const { return (b2_ & kTupDatetimeMeta) != 0; }
  // Both: the unit (DatetimeUnit) and its multiplier ("10s": 10).
  uint32_t datetime_unit() const { return static_cast<uint32_t>(w1_); }
  uint32_t unit_count() const { return static_cast<uint32_t>(w0_); }
  void SetUnitMeta(uint32_t count) {
    b2_ |= kTupUnitMeta;
    w0_ = count;
  }
  void SetDatetimeMeta(uint32_t unit, uint32_t count) {
    b2_ = kTupDatetimeMeta;
    w1_ = unit;
    w0_ = count;
  }
  // Whether the memo must keep a tuple for the wrapper logic.
  bool tuple_summarized() const { return b2_ != 0; }

  // kDict: what joblib's wrapper state reads of it (wrapper_state.h).
  enum class KeyStatus : uint8_t { kAbsent = 0, kOk, kBad };
  KeyStatus shape_status() const { return static_cast<KeyStatus>(b0_); }
  KeyStatus dtype_status() const { return static_cast<KeyStatus>(b1_); }
  KeyStatus alignment_status() const {
    return static_cast<KeyStatus>((b2_ >> 1) & 3);
  }
  bool alignment_none() const { return (b2_ & kDictAlignNone) != 0; }
  uint32_t alignment() const { return static_cast<uint32_t>(w1_ >> 32); }
  bool fortran_order() const { return (b2_ & kDictFortran) != 0; }
  uint32_t dtype_ref() const { return static_cast<uint32_t>(w1_); }
  // shape_ref() as for a shape tuple.
  void SetShapeKey(KeyStatus status, uint64_t ref) {
    b0_ = static_cast<uint8_t>(status);
    w0_ = ref;
  }
  void SetDtypeKey(KeyStatus status, uint32_t ref) {
    b1_ = static_cast<uint8_t>(status);
    w1_ = (w1_ & ~uint64_t{0xffffffff}) | ref;
  }
  // kOk: an int >= 1 (`alignment`, clamped to 255), or None when `none`.
  void SetAlignmentKey(KeyStatus status, bool none, uint32_t alignment) {
    b2_ = static_cast<uint8_t>((b2_ & ~(3 << 1 | kDictAlignNone)) |
                               static_cast<uint8_t>(status) << 1 |
                               (none ? kDictAlignNone : 0));
    w1_ = (w1_ & 0xffffffff) | uint64_t{alignment} << 32;
  }
  void set_fortran_order(bool f) {
    b2_ = f ? (b2_ | kDictFortran) : (b2_ & ~kDictFortran);
  }

  // kDtype: the dtype object's record (numpy_dtype.h).
  uint32_t dtype_index() const { return static_cast<uint32_t>(w0_); }
  void set_dtype_index(uint32_t index) { w0_ = index; }

  // kDtypeState: what numpy's dtype __setstate__ would apply.
  int64_t elsize() const { return static_cast<int64_t>(w0_); }
  char byteorder() const { return static_cast<char>(b1_); }  // or 0
  bool has_object() const { return (b2_ & kStateHasObject) != 0; }
  bool structured() const { return (b2_ & kStateStructured) != 0; }
  void SetDtypeState(int64_t elsize, char byteorder, bool has_object,
                     bool structured, uint32_t unit, uint32_t count) {
    kind_ = kDtypeState;
    b0_ = 0;
    b1_ = static_cast<uint8_t>(byteorder);
    b2_ = static_cast<uint8_t>((has_object ? kStateHasObject : 0) |
                               (structured ? kStateStructured : 0));
    w0_ = static_cast<uint64_t>(elsize);
    w1_ = uint64_t{count} << 32 | unit;
  }
  // The datetime unit of the state's metadata (kUnitGeneric without any;
  // 0 when not understood) and its multiplier.
  uint32_t state_unit() const { return static_cast<uint32_t>(w1_); }
  uint32_t state_unit_count() const { return static_cast<uint32_t>(w1_ >> 32); }

 private:
  // b2_ flags, by kind.
  static constexpr uint8_t kText = 0x80;      // kString, kOther
  static constexpr uint8_t kEncoding = 0x03;  // with kText
  static constexpr uint8_t kObject = 0x40;    // kOther
  static constexpr uint8_t kTupShape = 1;     // kTuple
  static constexpr uint8_t kTupFirstStr = 2;
  static constexpr uint8_t kTupFirstGlobal = 4;
  static constexpr uint8_t kTupUnitMeta = 8;
  static constexpr uint8_t kTupDatetimeMeta = 16;
  static constexpr uint8_t kDictFortran = 1;  // kDict; bits 1-2: alignment
  static constexpr uint8_t kDictAlignNone = 8;
  static constexpr uint8_t kStateHasObject = 1;  // kDtypeState
  static constexpr uint8_t kStateStructured = 2;

  uint64_t start_ = 0;
  Kind kind_ = kOther;
  uint8_t b0_ = 0;
  uint8_t b1_ = 0;
  uint8_t b2_ = 0;
  uint32_t node_ = 0;
  uint64_t w0_ = 0;
  uint64_t w1_ = 0;
};
static_assert(sizeof(SymbolicTag) == 32, "tags are copied on the hot path");

}  // namespace persistd

#endif  // PERSISTD_SERVER_FORMAT_SYMBOLIC_TAG_H_
