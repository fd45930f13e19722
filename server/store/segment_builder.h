// BuildSegment turns one source file into a segment: it reads the file in
// pieces (pread, never mmap: a source truncated under us must be an error,
// not a SIGBUS), decompresses it once, streaming, and writes every raw
// array's bytes at a 64-byte aligned offset of a new segment file straight
// from the decoder's output, then the rewritten pickle after them. The
// decoded stream is never held in memory whole: the joblib indexer
// (server/format/joblib_indexer.h) classifies the bytes as they arrive and
// keeps only the pickle part. The source is untrusted: the stream fails at
// its first invalid byte, and what indexing may cost is bounded by
// PickleLimits (a file that needs more is refused, naming the daemon flag
// that raises the limit). Segment pages are written in whole 2 MiB-aligned
// blocks, so the page cache holds them in huge-page folios that clients map
// with one PMD each; the pages of a source that was not cached are dropped
// behind the reader.
#ifndef PERSISTD_SERVER_STORE_SEGMENT_BUILDER_H_
#define PERSISTD_SERVER_STORE_SEGMENT_BUILDER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/persistd.pb.h"
#include "server/format/pickle_limits.h"
#include "server/store/payload_ready.h"

namespace persistd {

// Alignment of array data inside a segment (cache line; numpy's .npy uses
// 64 too). joblib's own minimum is 16.
inline constexpr uint64_t kSegmentAlignment = 64;

struct SegmentSource {
  int fd = -1;                 // open for reading
  uint64_t size = 0;           // bytes to read
  std::string display_name;    // for error messages
  bool raw = false;            // decompress only (LoadRequest.raw)
  // What indexing the stream may cost; null: DefaultBuildLimits().
  const PickleLimits* limits = nullptr;
  // Where the source's bytes start in `fd` (a staging file's header
  // precedes them).
  uint64_t offset = 0;
  // For a descriptor its client is still filling (a remote object being
  // fetched): called with an offset in `fd` before any byte below it is
  // read, so the build decompresses as the bytes arrive; and, as the
  // decoded bytes come out, with an offset read already -- so that it is
  // asked often, however far a piece expands, and its error (a cancelled
  // call, a build nobody wants: SegmentCache::Wanted) stops the build.
  // Null: all final, nothing to ask.
  PayloadReady ready;
  // The descriptor is a staging file nobody reads again: its pages are
  // released (holes punched) once decoded, so it never holds the whole
  // compressed object while the segment is written.
  bool release_behind = false;
};

// The limits of builds whose source names none: the daemon's
// --max-pickle-bytes and --max-pickle-memory. Set once at startup, before
// any build runs (not synchronized); PickleLimits' defaults until then.
void SetDefaultBuildLimits(const PickleLimits& limits);
const PickleLimits& DefaultBuildLimits();

// The error of a source of 0 bytes, which BuildSegment returns (and a
// remote load, whose object's size is known before any byte is fetched,
// returns before it claims a build); `name` names the source.
absl::Status EmptySourceError(const std::string& name);

// Writes the segment to `segment_path` (which must not exist) and returns
// its index (segment_path, skeleton, arrays, codec, format,
// trailing_bytes). *segment_size receives the file's size. On failure no
// file is left at `segment_path`.
absl::StatusOr<v1::LoadReply> BuildSegment(const SegmentSource& source,
                                           const std::string& segment_path,
                                           uint64_t* segment_size);

// The same into `segment_fd`, an empty file open for reading and writing
// (an unnamed O_TMPFILE for results that may come back inline); `name`
// stands for it in messages and in the index's segment_path.
absl::StatusOr<v1::LoadReply> BuildSegmentInto(const SegmentSource& source,
                                               int segment_fd,
                                               const std::string& name,
                                               uint64_t* segment_size);

}  // namespace persistd

#endif  // PERSISTD_SERVER_STORE_SEGMENT_BUILDER_H_
