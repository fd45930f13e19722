#include "server/io/byte_sink.h"

#include <errno.h>
#include <sys/types.h>
#include <unistd.h>

#include <utility>

#include "common/io/errno_status.h"

namespace persistd {

FdSink::FdSink(int fd, std::string path, size_t buffer_size)
    : fd_(fd), path_(std::move(path)), buffer_size_(buffer_size) {
  buffer_.reserve(buffer_size_);
}

absl::Status FdSink::Append(absl::string_view data) {
  if (buffer_.size() + data.size() <= buffer_size_) {
    buffer_.append(data.data(), data.size());
    return absl::OkStatus();
  }
  absl::Status status = Flush();
  if (!status.ok()) return status;
  if (data.size() >= buffer_size_) return WriteAll(data.data(), data.size());
  buffer_.append(data.data(), data.size());
  return absl::OkStatus();
}

absl::Status ByteSink::Skip(uint64_t) {
  return absl::FailedPreconditionError(
      "this sink cannot leave holes (only an uncompressed file can)");
}

absl::Status FdSink::Finish() { return Flush(); }

absl::Status FdSink::Skip(uint64_t size) {
  absl::Status status = Flush();
  if (!status.ok()) return status;
  if (::lseek(fd_, static_cast<off_t>(size), SEEK_CUR) < 0) {
    return ErrnoStatus("seek", path_, errno);
  }
  bytes_written_ += size;
  return absl::OkStatus();
}

absl::Status FdSink::Flush() {
  absl::Status status = WriteAll(buffer_.data(), buffer_.size());
  buffer_.clear();
  return status;
}

absl::Status FdSink::WriteAll(const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd_, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write", path_, errno);
    }
    data += n;
    size -= static_cast<size_t>(n);
    bytes_written_ += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace persistd
