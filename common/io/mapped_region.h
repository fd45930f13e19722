// MappedRegion owns one mmap(2) mapping.
//
// Invariant: either data_ == nullptr and size_ == 0, or [data_, data_+size_)
// is a live mapping that this object, and nothing else, will munmap.
#ifndef PERSISTD_COMMON_IO_MAPPED_REGION_H_
#define PERSISTD_COMMON_IO_MAPPED_REGION_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace persistd {

class MappedRegion {
 public:
  MappedRegion() = default;
  ~MappedRegion() { Reset(); }
  MappedRegion(MappedRegion&& other) noexcept;
  MappedRegion& operator=(MappedRegion&& other) noexcept;
  MappedRegion(const MappedRegion&) = delete;
  MappedRegion& operator=(const MappedRegion&) = delete;

  // Maps `size` bytes of `fd` from offset 0, read-only, MAP_SHARED.
  // A zero size gives an empty region without calling mmap.
  static absl::StatusOr<MappedRegion> MapReadOnly(int fd, size_t size,
                                                  const std::string& path);
  // Maps `size` bytes of `fd`, read-write, MAP_SHARED. The caller must
  // have sized the file (fallocate) so no page can fault past its end.
  static absl::StatusOr<MappedRegion> MapReadWrite(int fd, size_t size,
                                                   const std::string& path);

  char* data() const { return data_; }
  size_t size() const { return size_; }
  absl::string_view view() const { return absl::string_view(data_, size_); }

  void Reset();

 private:
  MappedRegion(char* data, size_t size) : data_(data), size_(size) {}

  char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace persistd

#endif  // PERSISTD_COMMON_IO_MAPPED_REGION_H_
