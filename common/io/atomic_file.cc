#include "common/io/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/io/errno_status.h"

namespace persistd {

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

absl::Status SyncDirectory(const std::string& dir) {
  ScopedFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("open directory", dir, errno);
  if (::fsync(fd.get()) != 0) return ErrnoStatus("fsync", dir, errno);
  return absl::OkStatus();
}

absl::StatusOr<AtomicFile> AtomicFile::Create(const std::string& target) {
  size_t slash = target.rfind('/');
  std::string base = slash == std::string::npos ? target : target.substr(slash + 1);
  // A leading dot keeps the half-written file out of casual listings; the
  // random suffix makes concurrent dumps of one target safe.
  std::string pattern = absl::StrCat(DirName(target), "/.", base,
                                     ".persistd-tmp-XXXXXX");
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  int raw = ::mkostemp(name.data(), O_CLOEXEC);
  if (raw < 0) return ErrnoStatus("create temporary file for", target, errno);
  ScopedFd fd(raw);
  // mkstemp creates 0600; give the file the mode a plain open() would.
  mode_t mask = ::umask(0);
  ::umask(mask);
  if (::fchmod(fd.get(), 0666 & ~mask) != 0) {
    int e = errno;
    ::unlink(name.data());
    return ErrnoStatus("chmod", name.data(), e);
  }
  return AtomicFile(target, std::string(name.data()), std::move(fd));
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : target_(std::move(other.target_)),
      temp_path_(std::move(other.temp_path_)),
      fd_(std::move(other.fd_)),
      committed_(std::exchange(other.committed_, true)) {}

AtomicFile::~AtomicFile() {
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
}

absl::Status AtomicFile::Commit(Sync sync) {
  const bool durable = sync == Sync::kDurable;
  if (durable && ::fsync(fd_.get()) != 0) {
    return ErrnoStatus("fsync", temp_path_, errno);
  }
  fd_.Reset();
  if (::rename(temp_path_.c_str(), target_.c_str()) != 0) {
    return ErrnoStatus("rename to", target_, errno);
  }
  committed_ = true;
  return durable ? SyncDirectory(DirName(target_)) : absl::OkStatus();
}

}  // namespace persistd
