// ByteSink: where a stream of bytes goes (a file, a buffer, an encoder).
//
// Writers of the joblib stream and the codecs' encoders talk to this
// interface only, so a pipeline is sink -> encoder -> file without copies
// beyond the codec's own.
//
// A ByteSink is not thread-safe; one writer uses it at a time.
#ifndef PERSISTD_SERVER_IO_BYTE_SINK_H_
#define PERSISTD_SERVER_IO_BYTE_SINK_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace persistd {

class ByteSink {
 public:
  virtual ~ByteSink() = default;

  // Appends `data`. On error the sink is unusable.
  virtual absl::Status Append(absl::string_view data) = 0;

  // Flushes whatever the sink buffers and ends the stream (an encoder
  // writes its trailer). Appending after Finish is an error.
  virtual absl::Status Finish() = 0;

  // Leaves `size` bytes for someone else to write (a hole in a file).
  // Only a sink that writes a file at known offsets can; the default
  // refuses.
  virtual absl::Status Skip(uint64_t size);
};

// Collects everything in memory; for tests and small streams.
class StringSink : public ByteSink {
 public:
  absl::Status Append(absl::string_view data) override {
    data_.append(data.data(), data.size());
    return absl::OkStatus();
  }
  absl::Status Finish() override { return absl::OkStatus(); }

  const std::string& data() const { return data_; }

 private:
  std::string data_;
};

// Writes to a file descriptor it does not own, through a buffer so small
// appends (pickle opcodes) cost no syscall each.
class FdSink : public ByteSink {
 public:
  // `path` is used in error messages only.
  FdSink(int fd, std::string path, size_t buffer_size = 1 << 20);
  ~FdSink() override = default;

  absl::Status Append(absl::string_view data) override;
  absl::Status Finish() override;
  // Moves the file offset past `size` bytes (lseek), leaving a hole.
  absl::Status Skip(uint64_t size) override;

  // Bytes written or skipped: the file offset relative to the start.
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  absl::Status WriteAll(const char* data, size_t size);
  absl::Status Flush();

  int fd_;
  std::string path_;
  std::string buffer_;
  size_t buffer_size_;
  uint64_t bytes_written_ = 0;
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_IO_BYTE_SINK_H_
