#include "server/store/staging_area.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/io/errno_status.h"
#include "server/io/scoped_fd.h"

namespace persistd {

namespace {

// Deletes every regular file in `dir`.
void RemoveAllFiles(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  while (struct dirent* entry = ::readdir(d)) {
    std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    ::unlink((dir + "/" + name).c_str());
  }
  ::closedir(d);
}

}  // namespace

StagingArea::StagingArea(std::string dir) : dir_(std::move(dir)) {
  RemoveAllFiles(dir_);
}

absl::StatusOr<std::string> StagingArea::PathOf(const std::string& id) const {
  if (files_.count(id) == 0) {
    return absl::NotFoundError(absl::StrCat(
        "unknown staging id '", id, "' (already dropped, or from before a daemon restart)"));
  }
  return absl::StrCat(dir_, "/", id, ".stage");
}

absl::StatusOr<StagingArea::Staging> StagingArea::Create(uint64_t size) {
  std::string id;
  {
    absl::MutexLock lock(&mu_);
    // The random part keeps ids unguessable across daemon restarts.
    static thread_local std::mt19937_64 rng(std::random_device{}());
    id = absl::StrFormat("%d-%016x", next_id_++, rng());
  }
  std::string path = absl::StrCat(dir_, "/", id, ".stage");
  ScopedFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) return ErrnoStatus("create staging file", path, errno);
  if (size > 0) {
    int rc = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(size));
    if (rc != 0) {
      ::unlink(path.c_str());
      absl::Status status = ErrnoStatus(
          absl::StrCat("preallocate ", size, " bytes for"), path, rc);
      if (rc == ENOSPC) {
        return absl::ResourceExhaustedError(absl::StrCat(
            status.message(), ": the store's disk is full; free space or "
            "point persistd --store at a larger disk"));
      }
      return status;
    }
  }
  absl::MutexLock lock(&mu_);
  files_[id] = size;
  return Staging{id, path};
}

absl::StatusOr<ScopedFd> StagingArea::Open(const std::string& id,
                                           uint64_t* size) {
  std::string path;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<std::string> p = PathOf(id);
    if (!p.ok()) return p.status();
    path = *p;
    *size = files_[id];
  }
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("open staging file", path, errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus("stat", path, errno);
  if (static_cast<uint64_t>(st.st_size) < *size) {
    return absl::FailedPreconditionError(absl::StrCat(
        "staging file ", path, " was truncated by another program"));
  }
  return fd;
}

absl::StatusOr<MappedRegion> StagingArea::Map(const std::string& id,
                                              uint64_t* size) {
  absl::StatusOr<ScopedFd> fd = Open(id, size);
  if (!fd.ok()) return fd.status();
  return MappedRegion::MapReadOnly(fd->get(), *size, id);
}

absl::StatusOr<std::string> StagingArea::OutputPath(const std::string& id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::string> p = PathOf(id);
  if (!p.ok()) return p.status();
  return absl::StrCat(dir_, "/", id, ".out");
}

void StagingArea::Drop(const std::string& id) {
  absl::MutexLock lock(&mu_);
  if (files_.erase(id) == 0) return;
  ::unlink(absl::StrCat(dir_, "/", id, ".stage").c_str());
  ::unlink(absl::StrCat(dir_, "/", id, ".out").c_str());
}

size_t StagingArea::count() const {
  absl::MutexLock lock(&mu_);
  return files_.size();
}

}  // namespace persistd
