#include "common/io/mapped_region.h"

#include <errno.h>
#include <sys/mman.h>

#include <utility>

#include "common/io/errno_status.h"

namespace persistd {

MappedRegion::MappedRegion(MappedRegion&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

MappedRegion& MappedRegion::operator=(MappedRegion&& other) noexcept {
  if (this != &other) {
    Reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void MappedRegion::Reset() {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

absl::StatusOr<MappedRegion> MappedRegion::MapReadOnly(
    int fd, size_t size, const std::string& path) {
  if (size == 0) return MappedRegion();
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return ErrnoStatus("mmap", path, errno);
  return MappedRegion(static_cast<char*>(p), size);
}

absl::StatusOr<MappedRegion> MappedRegion::MapReadWrite(
    int fd, size_t size, const std::string& path) {
  if (size == 0) return MappedRegion();
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return ErrnoStatus("mmap", path, errno);
  return MappedRegion(static_cast<char*>(p), size);
}

}  // namespace persistd
