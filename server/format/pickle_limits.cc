#include "server/format/pickle_limits.h"

#include "absl/strings/str_format.h"

namespace persistd {
namespace {

std::string Size(uint64_t bytes) {
  if (bytes >= (uint64_t{1} << 20) && bytes % (uint64_t{1} << 20) == 0) {
    return absl::StrFormat("%d MiB", bytes >> 20);
  }
  return absl::StrFormat("%d bytes", bytes);
}

}  // namespace

absl::Status IndexMemoryExceeded(uint64_t limit, absl::string_view what,
                                 uint64_t offset) {
  return absl::InvalidArgumentError(absl::StrFormat(
      "pickle refused: indexing it needs more than %s of memory (%s grew "
      "past the limit at offset %d); raise the daemon's --max-pickle-memory "
      "to load it if the file is trusted",
      Size(limit), what, offset));
}

absl::Status PickleBytesExceeded(uint64_t limit, uint64_t offset) {
  return absl::InvalidArgumentError(absl::StrFormat(
      "pickle refused: its pickle part (everything but raw array data) is "
      "larger than %s (at offset %d of the decoded stream); raise the "
      "daemon's --max-pickle-bytes to load it if the file is trusted",
      Size(limit), offset));
}

}  // namespace persistd
