#include "server/fuzz/fuzz_util.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace persistd {
namespace fuzz {

void CheckFailed(const char* file, int line, const char* condition,
                 const std::string& detail) {
  std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s%s%s\n", file, line,
               condition, detail.empty() ? "" : ": ", detail.c_str());
  std::fflush(stderr);
  std::abort();
}

std::string Describe(const absl::Status& status) { return status.ToString(); }

absl::Status DigestSink::Append(absl::string_view data) {
  if (finished_) return absl::FailedPreconditionError("Append after Finish");
  if (data.size() > limit_ - size_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("fuzz output limit of ", limit_, " bytes"));
  }
  // Eight bytes at a time, the same however the output is split.
  const char* p = data.data();
  const char* const end = p + data.size();
  while (p != end && size_ % 8 != 0) {
    word_ |= uint64_t{static_cast<uint8_t>(*p++)} << (8 * (size_++ % 8));
    if (size_ % 8 == 0) Mix();
  }
  for (; end - p >= 8; p += 8) {
    std::memcpy(&word_, p, 8);
    size_ += 8;
    Mix();
  }
  while (p != end) {
    word_ |= uint64_t{static_cast<uint8_t>(*p++)} << (8 * (size_++ % 8));
  }
  return absl::OkStatus();
}

uint64_t DigestSink::digest() const {
  return (digest_ ^ word_) * 0x9e3779b97f4a7c15ull + size_;
}

void DigestSink::Mix() {
  digest_ = (digest_ ^ word_) * 0x9e3779b97f4a7c15ull;
  digest_ ^= digest_ >> 29;
  word_ = 0;
}

absl::Status DigestSink::Finish() {
  finished_ = true;
  return absl::OkStatus();
}

ChunkSizes::ChunkSizes(uint64_t seed)
    : state_(seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull) {}

uint64_t ChunkSizes::Random() {
  // xorshift64*
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  return state_ * 0x2545f4914f6cdd1dull;
}

size_t ChunkSizes::Next(size_t remaining) {
  const uint64_t r = Random();
  size_t size;
  switch (r % 8) {
    case 0:
      size = 0;
      break;
    case 1:
      size = 1;
      break;
    case 2:
    case 3:
    case 4:
      size = (r >> 8) % 16;
      break;
    case 5:
    case 6:
      size = (r >> 8) % 512;
      break;
    default:
      size = (r >> 8) % 8192;
      break;
  }
  return size < remaining ? size : remaining;
}

size_t ChunkSizes::NextNonEmpty(size_t remaining) {
  const size_t size = Next(remaining);
  return size == 0 && remaining > 0 ? 1 : size;
}

std::vector<absl::string_view> SplitSections(absl::string_view input) {
  std::vector<absl::string_view> sections;
  while (true) {
    const size_t at = input.find(kSectionSeparator);
    if (at == absl::string_view::npos) break;
    sections.push_back(input.substr(0, at));
    input.remove_prefix(at + kSectionSeparator.size());
  }
  sections.push_back(input);
  return sections;
}

std::string JoinSections(const std::vector<std::string>& sections) {
  std::string out;
  for (size_t i = 0; i < sections.size(); ++i) {
    if (i > 0) out.append(kSectionSeparator.data(), kSectionSeparator.size());
    out += sections[i];
  }
  return out;
}

}  // namespace fuzz
}  // namespace persistd
