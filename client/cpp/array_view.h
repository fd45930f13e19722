// ArrayView<T>: a zero-copy, typed, read-only view of one array inside a
// loaded joblib file. The bytes live in the daemon's segment, mapped
// read-only by LoadedFile; the view is valid while that LoadedFile lives.
#ifndef PERSISTD_CLIENT_CPP_ARRAY_VIEW_H_
#define PERSISTD_CLIENT_CPP_ARRAY_VIEW_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace persistd {

// What the file says about one array.
struct ArrayInfo {
  std::string dtype;             // numpy dtype.str ("<f8", "|u1", ...);
                                 // empty for structured dtypes
  uint64_t itemsize = 0;
  std::vector<uint64_t> shape;
  bool fortran_order = false;    // element (i, j) at j * rows + i
  const char* data = nullptr;    // first byte, 64-byte aligned
  uint64_t nbytes = 0;
  std::string name;              // dict key or attribute in front of the
                                 // array in the pickle, if any (best effort)
};

template <typename T>
class ArrayView {
 public:
  ArrayView(const T* data, std::vector<uint64_t> shape, bool fortran_order)
      : data_(data), shape_(std::move(shape)), fortran_order_(fortran_order) {}

  const T* data() const { return data_; }
  const std::vector<uint64_t>& shape() const { return shape_; }
  bool fortran_order() const { return fortran_order_; }
  uint64_t size() const {
    uint64_t n = 1;
    for (uint64_t d : shape_) n *= d;
    return n;
  }
  // Flat access in storage order.
  const T& operator[](uint64_t i) const { return data_[i]; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size(); }

 private:
  const T* data_;
  std::vector<uint64_t> shape_;
  bool fortran_order_;
};

// The numpy dtype.str of T on this (little-endian) machine; "" when T has
// no numpy counterpart.
template <typename T> constexpr const char* NumpyDtype() { return ""; }
template <> constexpr const char* NumpyDtype<bool>() { return "|b1"; }
template <> constexpr const char* NumpyDtype<int8_t>() { return "|i1"; }
template <> constexpr const char* NumpyDtype<uint8_t>() { return "|u1"; }
template <> constexpr const char* NumpyDtype<int16_t>() { return "<i2"; }
template <> constexpr const char* NumpyDtype<uint16_t>() { return "<u2"; }
template <> constexpr const char* NumpyDtype<int32_t>() { return "<i4"; }
template <> constexpr const char* NumpyDtype<uint32_t>() { return "<u4"; }
template <> constexpr const char* NumpyDtype<int64_t>() { return "<i8"; }
template <> constexpr const char* NumpyDtype<uint64_t>() { return "<u8"; }
template <> constexpr const char* NumpyDtype<float>() { return "<f4"; }
template <> constexpr const char* NumpyDtype<double>() { return "<f8"; }

}  // namespace persistd

#endif  // PERSISTD_CLIENT_CPP_ARRAY_VIEW_H_
