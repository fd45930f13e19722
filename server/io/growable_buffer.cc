#include "server/io/growable_buffer.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace persistd {

GrowableBuffer::~GrowableBuffer() {
  if (data_ != nullptr) ::munmap(data_, capacity_);
}

absl::Status GrowableBuffer::Reserve(size_t capacity) {
  if (capacity <= capacity_) return absl::OkStatus();
  const size_t page = 1 << 21;  // grow in 2 MiB steps, at least doubling
  size_t target = std::max(capacity, capacity_ * 2);
  target = (target + page - 1) / page * page;
  void* p;
  if (data_ == nullptr) {
    p = ::mmap(nullptr, target, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  } else {
    p = ::mremap(data_, capacity_, target, MREMAP_MAYMOVE);
  }
  if (p == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate ", target, " bytes of memory: ", strerror(errno)));
  }
  data_ = static_cast<char*>(p);
  capacity_ = target;
  return absl::OkStatus();
}

absl::Status GrowableBuffer::Append(absl::string_view data) {
  absl::StatusOr<char*> tail = TailForWrite(data.size());
  if (!tail.ok()) return tail.status();
  if (!data.empty()) memcpy(*tail, data.data(), data.size());
  size_ += data.size();
  return absl::OkStatus();
}

absl::Status GrowableBuffer::WriteAt(size_t offset, absl::string_view data) {
  absl::Status status = Reserve(offset + data.size());
  if (!status.ok()) return status;
  if (!data.empty()) memcpy(data_ + offset, data.data(), data.size());
  size_ = std::max(size_, offset + data.size());
  return absl::OkStatus();
}

void GrowableBuffer::Release(size_t begin, size_t end) {
  const size_t page = 4096;
  begin = (begin + page - 1) / page * page;
  end = std::min(end, capacity_) / page * page;
  if (end > begin) ::madvise(data_ + begin, end - begin, MADV_DONTNEED);
}

absl::StatusOr<char*> GrowableBuffer::TailForWrite(size_t min_size) {
  absl::Status status = Reserve(size_ + min_size);
  if (!status.ok()) return status;
  return data_ + size_;
}

}  // namespace persistd
