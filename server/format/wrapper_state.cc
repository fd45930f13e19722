#include "server/format/wrapper_state.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace persistd {

using Tag = SymbolicTag;
using KeyStatus = SymbolicTag::KeyStatus;

bool WrapperStates::RecordShape(const SymbolicTag* e, size_t n,
                                SymbolicTag* tuple) {
  for (size_t i = 0; i < n; ++i) {
    if (e[i].kind() != Tag::kInt || e[i].int_value() < 0) return true;
  }
  if (!ReserveCharged(budget_, &shape_dims_, shape_dims_.size() + n + 1)) {
    return false;
  }
  tuple->SetShape(shape_dims_.size() + 1);
  shape_dims_.push_back(n);
  for (size_t i = 0; i < n; ++i) {
    shape_dims_.push_back(static_cast<uint64_t>(e[i].int_value()));
  }
  return true;
}

void WrapperStates::UpdateDict(const SymbolicTag* pairs,
                               const SymbolicTag* end, SymbolicTag* dict) {
  for (const Tag* key = pairs; key + 1 < end; key += 2) {
    if (key->kind() != Tag::kString) continue;
    const Tag& value = key[1];
    switch (key->str_class()) {
      case StrClass::kShape:
        if (value.kind() == Tag::kTuple && value.tuple_is_shape()) {
          dict->SetShapeKey(KeyStatus::kOk, value.shape_ref());
        } else {
          dict->SetShapeKey(KeyStatus::kBad, 0);
        }
        break;
      case StrClass::kDtype:
        if (value.kind() == Tag::kDtype) {
          dict->SetDtypeKey(KeyStatus::kOk, value.dtype_index());
        } else {
          dict->SetDtypeKey(KeyStatus::kBad, 0);
        }
        break;
      case StrClass::kOrder:
        // joblib reads the array in Fortran order iff order == 'F'.
        dict->set_fortran_order(value.kind() == Tag::kString &&
                                value.str_class() == StrClass::kOrderF);
        break;
      case StrClass::kAlignment:
        if (value.kind() == Tag::kInt && value.int_value() >= 1) {
          dict->SetAlignmentKey(
              KeyStatus::kOk, /*none=*/false,
              static_cast<uint32_t>(std::min<int64_t>(value.int_value(), 255)));
        } else if (value.kind() == Tag::kNone) {
          dict->SetAlignmentKey(KeyStatus::kOk, /*none=*/true, 0);
        } else {
          dict->SetAlignmentKey(KeyStatus::kBad, false, 0);
        }
        break;
      default:
        break;
    }
  }
}

absl::Status WrapperStates::LayoutFromState(const SymbolicTag& state,
                                            uint64_t offset,
                                            const DtypeTable& dtypes,
                                            ArrayLayout* layout) const {
  auto bad = [offset](absl::string_view what) {
    return absl::DataLossError(absl::StrFormat(
        "NumpyArrayWrapper state %s (BUILD at offset %d)", what, offset));
  };
  if (state.kind() != Tag::kDict) return bad("is not a dict");
  const DtypeRecord* dtype = state.dtype_status() == KeyStatus::kOk
                                 ? dtypes.Find(state.dtype_ref())
                                 : nullptr;
  if ((state.shape_status() == KeyStatus::kOk &&
       state.shape_ref() > shape_dims_.size()) ||
      (state.dtype_status() == KeyStatus::kOk && dtype == nullptr)) {
    return absl::InternalError("LayoutFromState: a tag of another stack");
  }
  *layout = ArrayLayout();
  switch (state.shape_status()) {
    case KeyStatus::kAbsent:
      return bad("has no 'shape'");
    case KeyStatus::kBad:
      return bad("has a 'shape' that is not a tuple of non-negative ints");
    case KeyStatus::kOk:
      break;
  }
  // The element count; 0 if any dim is, else too_large on overflow.
  uint64_t count = 1;
  bool zero = false;
  if (state.shape_ref() != 0) {  // else shape ()
    const size_t at = static_cast<size_t>(state.shape_ref() - 1);
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
  layout->fortran_order = state.fortran_order();
  auto unknown_dtype = [offset] {
    return absl::UnimplementedError(absl::StrFormat(
        "NumpyArrayWrapper state has a 'dtype' whose item size this reader "
        "does not know (BUILD at offset %d)",
        offset));
  };
  switch (state.dtype_status()) {
    case KeyStatus::kAbsent:
      return bad("has no 'dtype'");
    case KeyStatus::kBad:
      return unknown_dtype();
    case KeyStatus::kOk:
      if (dtype->object) {
        layout->object = true;
        layout->too_large = false;
      } else if (!dtype->sized) {
        return unknown_dtype();
      } else if (!layout->too_large &&
                 __builtin_mul_overflow(count, dtype->itemsize,
                                        &layout->nbytes)) {
        layout->too_large = true;
      }
      if (dtype->sized) layout->itemsize = dtype->itemsize;
      layout->dtype = DtypeString(*dtype);
      break;
  }
  if (state.alignment_status() == KeyStatus::kBad) {
    return bad("has a 'numpy_array_alignment_bytes' that is not an int");
  }
  if (state.alignment_status() == KeyStatus::kOk && !state.alignment_none()) {
    layout->padded = true;
    layout->alignment = state.alignment();
  }
  return absl::OkStatus();
}

}  // namespace persistd
