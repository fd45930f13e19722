// What the store knows of a source file from the kernel: the version a
// stat() describes, and whether the file now at a segment's recorded path
// is still the version the segment was built from.
//
// Loads identify sources by the descriptor the client passed (fstat), never
// by path. Paths are looked at only to tell whether a cached segment has
// gone stale (persistctl's listings, the StaleSweeper): a segment whose
// path now names nothing, or another file or version, can never serve a
// load again.
#ifndef PERSISTD_SERVER_STORE_SOURCE_STATE_H_
#define PERSISTD_SERVER_STORE_SOURCE_STATE_H_

#include <sys/stat.h>

#include <cstdint>
#include <set>
#include <string>

#include "proto/persistd.pb.h"
#include "server/store/segment_cache.h"

namespace persistd {

// The version of the file `st` describes; `path` is informational.
SourceVersion VersionOf(const struct stat& st, bool raw, const std::string& path);

// Where the kernel says an open descriptor's file lives now (its
// /proc/self/fd link), or `fallback` when it cannot tell.
std::string LinkTarget(int fd, const std::string& fallback);

// Stats `version.path`: SOURCE_UNKNOWN when no absolute path was recorded
// (a file object, an object-store URL) or stat fails for another reason
// than absence.
v1::SegmentInfo::SourceState SourceStateOf(const SourceVersion& version);

// SOURCE_MISSING or SOURCE_CHANGED.
bool IsStale(v1::SegmentInfo::SourceState state);

// The generations of `cache`'s current segments whose source is stale,
// for SegmentCache::Evict. The paths are stat()ed here, before the cache
// is locked to evict: a segment rebuilt meanwhile has a new generation and
// is not matched.
std::set<uint64_t> StaleGenerations(const SegmentCache& cache);

}  // namespace persistd

#endif  // PERSISTD_SERVER_STORE_SOURCE_STATE_H_
