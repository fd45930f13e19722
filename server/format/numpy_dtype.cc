#include "server/format/numpy_dtype.h"

#include <cstdint>

#include "absl/strings/str_cat.h"

namespace persistd {
namespace {

using Tag = SymbolicTag;

// Datetime units as numpy names them; unit u is kDatetimeUnits[u - 1].
constexpr absl::string_view kDatetimeUnits[] = {
    "Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as",
    "generic"};

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

}  // namespace

uint32_t DatetimeUnit(absl::string_view s) {
  for (uint32_t i = 0; i < kUnitGeneric; ++i) {
    if (s == kDatetimeUnits[i]) return i + 1;
  }
  return 0;
}

std::string DtypeString(const DtypeRecord& dtype) {
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

bool DtypeTable::New(GlobalClass callable, const SymbolicTag& args,
                     SymbolicTag* tag) {
  if (records_.size() >= UINT32_MAX ||
      !ReserveCharged(budget_, &records_, records_.size() + 1)) {
    return false;
  }
  tag->Reset(Tag::kDtype, tag->start());
  tag->set_dtype_index(static_cast<uint32_t>(records_.size()));
  records_.emplace_back();
  DtypeRecord& dtype = records_.back();
  if (callable == GlobalClass::kStringDtypeFn) {
    dtype.object = true;  // StringDType: hasobject, no code
  } else if (args.kind() == Tag::kTuple && args.tuple_first_str() &&
             args.str_class() == StrClass::kDtypeCode) {
    // numpy.dtype('f8', False, True). 'U<n>' counts UCS4 characters, the
    // other codes bytes; the BUILD state's elsize may override it.
    dtype.kind = args.str_letter();
    dtype.sized = true;
    dtype.itemsize =
        uint64_t{args.str_number()} * (args.str_letter() == 'U' ? 4 : 1);
    dtype.object = args.str_letter() == 'O';
  }
  return true;
}

void DtypeTable::Build(const SymbolicTag& dtype, const SymbolicTag& state) {
  if (state.kind() != Tag::kDtypeState ||
      dtype.dtype_index() >= records_.size()) {
    return;
  }
  DtypeRecord& record = records_[dtype.dtype_index()];
  if (state.elsize() >= 0 && !HasFixedSize(record.kind)) {
    record.itemsize = static_cast<uint64_t>(state.elsize());
    record.sized = true;
  }
  if (state.has_object()) record.object = true;
  record.structured = state.structured();
  record.byteorder = state.byteorder() == '=' ? '<' : state.byteorder();
  record.unit = state.state_unit();
  record.unit_count = state.state_unit_count();
}

void SummarizeNumpyTuple(const SymbolicTag* e, size_t n, SymbolicTag* tuple) {
  if (tuple->tuple_first_str()) {
    // numpy's datetime metadata tuple: (unit, count) and, from older
    // numpys, (unit, count, events) or (unit, count, divisor, events); a
    // divisor other than 1 changes the unit, which is not followed here.
    if (tuple->str_class() == StrClass::kUnit && n >= 2 && n <= 4 &&
        e[1].kind() == Tag::kInt && e[1].int_value() >= 1 &&
        e[1].int_value() <= INT32_MAX &&
        (n != 4 || (e[2].kind() == Tag::kInt && e[2].int_value() == 1))) {
      tuple->SetUnitMeta(static_cast<uint32_t>(e[1].int_value()));
    }
  } else if (n == 2 &&
             (e[0].kind() == Tag::kNone || e[0].kind() == Tag::kDict) &&
             e[1].kind() == Tag::kTuple && e[1].tuple_unit_meta()) {
    // (metadata dict or None, unit tuple): a dtype state's last item.
    tuple->SetDatetimeMeta(e[1].str_number(), e[1].unit_count());
  }
  // numpy's dtype __setstate__ tuples: (version, byteorder, subarray,
  // names, fields, elsize, alignment, flags[, metadata]) with 8 or 9
  // items; older ones drop items from the front part (numpy's
  // arraydescr_setstate). A shape of 5 to 9 dims stays a shape.
  if (n < 5 || n > 9 || tuple->tuple_is_shape()) return;
  const size_t elsize_index = n >= 7 ? 5 : n == 6 ? 4 : 3;
  const size_t byteorder_index = n >= 6 ? 1 : 0;
  const size_t subarray_index = byteorder_index + 1;
  const size_t fields_index = n >= 7 ? 4 : subarray_index + 1;
  const Tag& byteorder = e[byteorder_index];
  if (e[elsize_index].kind() != Tag::kInt || byteorder.kind() == Tag::kInt) {
    return;
  }
  // Datetime unit: numpy keeps dtype('M8')'s generic unit when the state
  // has no metadata or None.
  uint32_t unit = 0;
  uint32_t count = 0;
  if (n < 9 || e[8].kind() == Tag::kNone) {
    unit = kUnitGeneric;
    count = 1;
  } else if (e[8].kind() == Tag::kTuple && e[8].tuple_datetime_meta()) {
    unit = e[8].datetime_unit();
    count = e[8].unit_count();
  }
  tuple->SetDtypeState(
      e[elsize_index].int_value(),
      byteorder.kind() == Tag::kString &&
              byteorder.str_class() == StrClass::kByteOrder
          ? byteorder.str_letter()
          : 0,
      /*has_object=*/n >= 8 && e[7].kind() == Tag::kInt &&
          (e[7].int_value() & 1) != 0,  // NPY_ITEM_HASOBJECT
      /*structured=*/e[subarray_index].kind() != Tag::kNone ||
          e[fields_index].kind() != Tag::kNone,
      unit, count);
}

}  // namespace persistd
