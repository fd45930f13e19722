#include "server/format/symbolic_tag.h"

#include "absl/strings/match.h"
#include "server/format/numpy_dtype.h"

namespace persistd {
namespace {

bool IsLetter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

}  // namespace

StrClass ClassifyString(absl::string_view s, uint32_t* number) {
  switch (s.size()) {
    case 1:
      switch (s[0]) {
        case '<': case '>': case '|': case '=':
          return StrClass::kByteOrder;
        case 'F':
          return StrClass::kOrderF;
        default:
          break;
      }
      break;
    case 5:
      if (s == "shape") return StrClass::kShape;
      if (s == "dtype") return StrClass::kDtype;
      if (s == "order") return StrClass::kOrder;
      if (s == "numpy") return StrClass::kNumpyModule;
      break;
    case 6:
      if (s == "encode") return StrClass::kEncode;
      break;
    case 7:
      if (s == "copyreg") return StrClass::kCopyregModule;
      if (s == "_codecs") return StrClass::kCodecsModule;
      break;
    case 8:
      if (s == "copy_reg") return StrClass::kCopyregModule;
      break;
    case 14:
      if (s == "_reconstructor") return StrClass::kReconstructor;
      if (s == "NDArrayWrapper") return StrClass::kNDArrayWrapper;
      break;
    case 15:
      if (s == "ZNDArrayWrapper") return StrClass::kZNDArrayWrapper;
      break;
    case 17:
      if (s == "NumpyArrayWrapper") return StrClass::kNumpyArrayWrapper;
      break;
    case 19:
      if (s == "joblib.numpy_pickle") return StrClass::kJoblibModule;
      break;
    case 27:
      if (s == "numpy_array_alignment_bytes") return StrClass::kAlignment;
      break;
    case 30:
      if (s == "_convert_to_stringdtype_kwargs") {
        return StrClass::kStringDtypeFn;
      }
      break;
    case 37:
      if (s == "sklearn.externals.joblib.numpy_pickle") {
        return StrClass::kJoblibModule;
      }
      break;
    default:
      break;
  }
  if (s.size() <= 2 || s.size() == 7) {
    const uint32_t unit = DatetimeUnit(s);
    if (unit != 0) {
      *number = unit;
      return StrClass::kUnit;
    }
  }
  if (s.size() >= 2 && s.size() <= 11 && IsLetter(s[0])) {
    uint64_t v = 0;
    size_t i = 1;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
      v = v * 10 + static_cast<uint64_t>(s[i] - '0');
    }
    if (i == s.size() && v <= UINT32_MAX) {
      *number = static_cast<uint32_t>(v);
      return StrClass::kDtypeCode;
    }
  }
  if (s.size() > 6 && absl::StartsWith(s, "numpy.")) {
    return StrClass::kNumpyModule;
  }
  return StrClass::kOther;
}

GlobalClass ClassifyGlobal(StrClass module, StrClass name) {
  switch (module) {
    case StrClass::kJoblibModule:
      if (name == StrClass::kNumpyArrayWrapper) {
        return GlobalClass::kNumpyArrayWrapper;
      }
      if (name == StrClass::kNDArrayWrapper) {
        return GlobalClass::kNDArrayWrapper;
      }
      if (name == StrClass::kZNDArrayWrapper) {
        return GlobalClass::kZNDArrayWrapper;
      }
      break;
    case StrClass::kNumpyModule:
      if (name == StrClass::kDtype) return GlobalClass::kNumpyDtype;
      if (name == StrClass::kStringDtypeFn) return GlobalClass::kStringDtypeFn;
      break;
    case StrClass::kCopyregModule:
      if (name == StrClass::kReconstructor) return GlobalClass::kReconstructor;
      break;
    case StrClass::kCodecsModule:
      if (name == StrClass::kEncode) return GlobalClass::kCodecsEncode;
      break;
    default:
      break;
  }
  return GlobalClass::kOther;
}

GlobalClass ClassifyGlobalText(absl::string_view module,
                               absl::string_view name) {
  if (module.size() > kMaxShortString || name.size() > kMaxShortString) {
    return GlobalClass::kOther;
  }
  uint32_t unused;
  return ClassifyGlobal(ClassifyString(module, &unused),
                        ClassifyString(name, &unused));
}

}  // namespace persistd
