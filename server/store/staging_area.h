// StagingArea hands out files in <store>/staging that clients fill through
// a shared mapping before CommitDump (or before Load of a file object).
//
// A staging file is preallocated with fallocate(2) at creation, so a full
// disk is an error returned by CreateStaging, never a SIGBUS in a client
// writing through its mapping.
//
// Thread-safe. Invariant: every id in files_ names an existing file
// <dir>/<id>.stage created by this object; ids are never reused.
#ifndef PERSISTD_SERVER_STORE_STAGING_AREA_H_
#define PERSISTD_SERVER_STORE_STAGING_AREA_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/io/mapped_region.h"
#include "server/io/scoped_fd.h"

namespace persistd {

class StagingArea {
 public:
  // `dir` must exist; leftovers of an earlier run in it are deleted.
  explicit StagingArea(std::string dir);
  StagingArea(const StagingArea&) = delete;
  StagingArea& operator=(const StagingArea&) = delete;

  struct Staging {
    std::string id;
    std::string path;
  };
  absl::StatusOr<Staging> Create(uint64_t size);

  // Maps the staging file read-only. The mapping stays valid after Drop.
  absl::StatusOr<MappedRegion> Map(const std::string& id, uint64_t* size);

  // Opens the staging file for reading; *size is its valid length.
  absl::StatusOr<ScopedFd> Open(const std::string& id, uint64_t* size);

  // Where CommitDump writes the output for a file-object dump.
  absl::StatusOr<std::string> OutputPath(const std::string& id);

  // Deletes the staging file and its output, if any. Unknown ids are fine.
  void Drop(const std::string& id);

  size_t count() const;

 private:
  absl::StatusOr<std::string> PathOf(const std::string& id) const;

  const std::string dir_;
  mutable absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<std::string, uint64_t> files_ ABSL_GUARDED_BY(mu_);  // id -> size
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_STORE_STAGING_AREA_H_
