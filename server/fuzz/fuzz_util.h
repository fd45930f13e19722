// Pieces shared by the fuzz targets in server/fuzz: a check macro that
// aborts (so libFuzzer, and the seed replay test, report the input), a
// bounded output sink, a deterministic source of chunk sizes, and the
// section format the structured targets read.
#ifndef PERSISTD_SERVER_FUZZ_FUZZ_UTIL_H_
#define PERSISTD_SERVER_FUZZ_FUZZ_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/io/byte_sink.h"

// Aborts with a message when `condition` is false: a property of the code
// under test does not hold for this input.
#define FUZZ_CHECK(condition, ...)                                            \
  do {                                                                        \
    if (!(condition)) {                                                       \
      ::persistd::fuzz::CheckFailed(__FILE__, __LINE__, #condition,           \
                                    ::persistd::fuzz::Describe(__VA_ARGS__)); \
    }                                                                         \
  } while (0)

namespace persistd {
namespace fuzz {

[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              const std::string& detail);

inline std::string Describe() { return std::string(); }
inline std::string Describe(absl::string_view detail) {
  return std::string(detail);
}
std::string Describe(const absl::Status& status);

// Collects a digest of what is appended, not the bytes, and fails once more
// than `limit` bytes arrived, as the daemon's sinks stop decompression
// bombs.
class DigestSink : public ByteSink {
 public:
  explicit DigestSink(uint64_t limit) : limit_(limit) {}

  absl::Status Append(absl::string_view data) override;
  absl::Status Finish() override;

  uint64_t size() const { return size_; }
  // A hash of the bytes, however they were split into Appends.
  uint64_t digest() const;
  bool finished() const { return finished_; }

 private:
  // Folds the eight bytes in word_ into digest_.
  void Mix();

  const uint64_t limit_;
  uint64_t size_ = 0;
  uint64_t word_ = 0;  // the last size_ % 8 bytes, little-endian
  uint64_t digest_ = 0;
  bool finished_ = false;
};

// A deterministic stream of chunk sizes for splitting an input, derived
// from a seed byte of the input, so a crash reproduces from its file.
class ChunkSizes {
 public:
  explicit ChunkSizes(uint64_t seed);

  // The next size, 0 included (an empty Feed is allowed); mostly small,
  // sometimes large, never more than `remaining`.
  size_t Next(size_t remaining);
  // The same, but at least 1 (for a ByteSource, where empty means end).
  size_t NextNonEmpty(size_t remaining);

 private:
  uint64_t Random();

  uint64_t state_;
};

// The structured targets read their input as sections separated by
// kSectionSeparator (an otherwise unlikely byte string, also in
// persistd.dict so mutations keep it).
inline constexpr absl::string_view kSectionSeparator = "\xfe\xedPD";

std::vector<absl::string_view> SplitSections(absl::string_view input);
std::string JoinSections(const std::vector<std::string>& sections);

}  // namespace fuzz
}  // namespace persistd

#endif  // PERSISTD_SERVER_FUZZ_FUZZ_UTIL_H_
