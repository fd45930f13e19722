#include "server/store/source_state.h"

#include <errno.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace persistd {

SourceVersion VersionOf(const struct stat& st, bool raw, const std::string& path) {
  SourceVersion version;
  version.path = path;
  version.raw = raw;
  version.dev = st.st_dev;
  version.ino = st.st_ino;
  version.size = st.st_size;
  version.mtime_ns = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
  version.ctime_ns = st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec;
  return version;
}

std::string LinkTarget(int fd, const std::string& fallback) {
  char buffer[4096];
  const std::string proc = absl::StrCat("/proc/self/fd/", fd);
  ssize_t n = ::readlink(proc.c_str(), buffer, sizeof(buffer));
  if (n <= 0 || n == static_cast<ssize_t>(sizeof(buffer))) return fallback;
  return std::string(buffer, static_cast<size_t>(n));
}

v1::SegmentInfo::SourceState SourceStateOf(const SourceVersion& version) {
  if (version.path.empty() || version.path[0] != '/') {
    return v1::SegmentInfo::SOURCE_UNKNOWN;
  }
  struct stat st;
  if (::stat(version.path.c_str(), &st) != 0) {
    return errno == ENOENT || errno == ENOTDIR ? v1::SegmentInfo::SOURCE_MISSING
                                               : v1::SegmentInfo::SOURCE_UNKNOWN;
  }
  return version.Matches(VersionOf(st, version.raw, version.path))
             ? v1::SegmentInfo::SOURCE_CURRENT
             : v1::SegmentInfo::SOURCE_CHANGED;
}

bool IsStale(v1::SegmentInfo::SourceState state) {
  return state == v1::SegmentInfo::SOURCE_MISSING ||
         state == v1::SegmentInfo::SOURCE_CHANGED;
}

std::set<uint64_t> StaleGenerations(const SegmentCache& cache) {
  std::set<uint64_t> stale;
  for (const SegmentCache::Listing& listing : cache.List()) {
    if (listing.current && IsStale(SourceStateOf(listing.segment->version))) {
      stale.insert(listing.segment->generation);
    }
  }
  return stale;
}

}  // namespace persistd
