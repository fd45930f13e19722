// GrowableBuffer is a ByteSink that keeps everything appended in one
// contiguous anonymous mapping, grown with mremap(2) so growth never copies
// through user space and a multi-GB stream needs no realloc dance.
//
// Invariant: data_ is nullptr with capacity_ == 0, or a private anonymous
// mapping of capacity_ bytes of which the first size_ are valid.
#ifndef PERSISTD_SERVER_IO_GROWABLE_BUFFER_H_
#define PERSISTD_SERVER_IO_GROWABLE_BUFFER_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/io/byte_sink.h"

namespace persistd {

class GrowableBuffer : public ByteSink {
 public:
  GrowableBuffer() = default;
  ~GrowableBuffer() override;
  GrowableBuffer(const GrowableBuffer&) = delete;
  GrowableBuffer& operator=(const GrowableBuffer&) = delete;

  // Makes room for at least `capacity` bytes in total.
  absl::Status Reserve(size_t capacity);

  absl::Status Append(absl::string_view data) override;
  absl::Status Finish() override { return absl::OkStatus(); }

  // Returns a writable tail of at least `min_size` bytes; call Commit(n)
  // after writing n bytes into it. Lets readers fill the buffer in place.
  absl::StatusOr<char*> TailForWrite(size_t min_size);
  void Commit(size_t n) { size_ += n; }

  // Writes `data` at `offset`, growing the buffer as needed; bytes never
  // written read as zeros (and cost no memory until touched).
  absl::Status WriteAt(size_t offset, absl::string_view data);

  // Gives back the whole pages inside [begin, end): they read as zeros.
  void Release(size_t begin, size_t end);

  absl::string_view view() const { return absl::string_view(data_, size_); }
  // REQUIRES: Reserve(offset + size) succeeded.
  absl::string_view view(size_t offset, size_t size) const {
    return size == 0 ? absl::string_view() : absl::string_view(data_ + offset, size);
  }
  size_t size() const { return size_; }

 private:
  char* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_IO_GROWABLE_BUFFER_H_
