#include "client/cpp/dump_target.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "client/cpp/random_bytes.h"
#include "common/io/atomic_file.h"
#include "common/io/errno_status.h"

namespace persistd {

namespace {

// The kernel's own limit on symlinks followed in one lookup.
constexpr int kMaxSymlinkHops = 40;
// Attempts at a fresh temp name before giving up (each one is random, so
// only a flood of collisions, i.e. something wrong, exhausts them).
constexpr int kNameAttempts = 100;
// Leaves room for ".", ".<16 hex digits>.tmp" within NAME_MAX (255).
constexpr size_t kMaxBaseInTempName = 200;

// What open(path, O_CREAT) would write to: `path`, or, when its last
// component is a symbolic link, what the link names -- followed even when
// it dangles, as open() follows it and creates the file it names. Links
// among the directory components are left to the kernel.
absl::StatusOr<std::string> FollowFinalSymlinks(const std::string& path) {
  std::string current = path;
  for (int hops = 0; hops <= kMaxSymlinkHops; ++hops) {
    struct stat st;
    if (::lstat(current.c_str(), &st) != 0) {
      if (errno == ENOENT) return current;
      return ErrnoStatus("stat", current, errno);
    }
    if (!S_ISLNK(st.st_mode)) return current;
    char link[PATH_MAX];
    ssize_t n = ::readlink(current.c_str(), link, sizeof(link));
    if (n < 0) return ErrnoStatus("read the symbolic link", current, errno);
    if (static_cast<size_t>(n) >= sizeof(link)) {
      return ErrnoStatus("read the symbolic link", current, ENAMETOOLONG);
    }
    std::string next(link, static_cast<size_t>(n));
    current = !next.empty() && next[0] == '/'
                  ? next
                  : absl::StrCat(DirName(current), "/", next);
  }
  return ErrnoStatus("follow the symbolic links of", path, ELOOP);
}

// ".<base>.<random>.tmp" in `dir`: hidden from casual listings, and
// unique so that concurrent dumps of one target never collide.
absl::StatusOr<std::string> TempName(const std::string& dir,
                                     const std::string& base) {
  absl::StatusOr<std::string> suffix = RandomHex(8);
  if (!suffix.ok()) return suffix.status();
  return absl::StrCat(dir, "/.", base.substr(0, kMaxBaseInTempName), ".",
                      *suffix, ".tmp");
}

}  // namespace

absl::StatusOr<DumpTarget> DumpTarget::Create(const std::string& path,
                                              bool allow_unnamed) {
  if (path.empty()) return absl::InvalidArgumentError("the dump path is empty");
  absl::StatusOr<std::string> resolved = FollowFinalSymlinks(path);
  if (!resolved.ok()) return resolved.status();
  const std::string& target = *resolved;
  const size_t slash = target.rfind('/');
  const std::string base =
      slash == std::string::npos ? target : target.substr(slash + 1);
  const std::string dir = DirName(target);
  if (base.empty() || base == "." || base == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot dump to ", path, ": it names a directory, not a file"));
  }

  struct stat existing;
  const bool exists = ::stat(target.c_str(), &existing) == 0;
  if (!exists && errno != ENOENT) return ErrnoStatus("stat", target, errno);
  if (exists) {
    if (S_ISDIR(existing.st_mode)) return ErrnoStatus("dump to", path, EISDIR);
    if (!S_ISREG(existing.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot dump to ", path,
          ": it exists and is not a regular file (persistd replaces files only)"));
    }
    // open(path, "wb") needs write permission on the file, rename() only
    // on its directory: refuse as open() would, so that a file made
    // read-only to protect it stays protected.
    if (::faccessat(AT_FDCWD, target.c_str(), W_OK, AT_EACCESS) != 0) {
      return ErrnoStatus("open for writing", path, errno);
    }
  }

  // 0666: the umask then applies, as it does to any new file. Over an
  // existing file, never more than its own mode allows either: a named
  // temp file opened by someone else in the moment before the fchmod
  // below would let them read the dump through that descriptor.
  const mode_t create_mode = exists ? (0666 & existing.st_mode) : 0666;
  ScopedFd fd;
  std::string temp_path;
  if (allow_unnamed) {
    fd.Reset(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, create_mode));
    // EISDIR: a kernel without O_TMPFILE (it includes O_DIRECTORY);
    // EOPNOTSUPP/EINVAL: a filesystem without it.
    if (!fd.valid() && errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
      return ErrnoStatus("create a temporary file in", dir, errno);
    }
  }
  for (int attempt = 0; !fd.valid(); ++attempt) {
    absl::StatusOr<std::string> name = TempName(dir, base);
    if (!name.ok()) return name.status();
    fd.Reset(::open(name->c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, create_mode));
    if (fd.valid()) {
      temp_path = *std::move(name);
    } else if (errno != EEXIST || attempt + 1 >= kNameAttempts) {
      return ErrnoStatus("create", *name, errno);
    }
  }
  // From here on, `out` unlinks a named temp file on every error path.
  DumpTarget out(target, dir, base, std::move(temp_path), std::move(fd));
  if (exists) {
    // chown first: it clears the set-user/group-ID bits that fchmod sets.
    // Only root may give a file away; anyone else's dump is theirs, as a
    // file they create always is.
    if (::geteuid() == 0 &&
        ::fchown(out.fd(), existing.st_uid, existing.st_gid) != 0) {
      return ErrnoStatus("chown the temporary file for", path, errno);
    }
    if (::fchmod(out.fd(), existing.st_mode & 07777) != 0) {
      return ErrnoStatus("chmod the temporary file for", path, errno);
    }
  }
  return out;
}

DumpTarget::DumpTarget(DumpTarget&& other) noexcept
    : path_(std::move(other.path_)),
      dir_(std::move(other.dir_)),
      base_(std::move(other.base_)),
      temp_path_(std::exchange(other.temp_path_, std::string())),
      fd_(std::move(other.fd_)),
      published_(other.published_) {}

DumpTarget::~DumpTarget() {
  if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
}

absl::Status DumpTarget::Publish(bool sync) {
  if (published_) {
    return absl::FailedPreconditionError(absl::StrCat(path_, " is already published"));
  }
  if (sync && ::fsync(fd_.get()) != 0) return ErrnoStatus("fsync", path_, errno);
  if (temp_path_.empty()) {
    // linkat() cannot replace an existing file, so the unnamed file gets a
    // temp name first and rename() then replaces the target atomically.
    // Through /proc, because linkat(fd, "", ..., AT_EMPTY_PATH) needs
    // CAP_DAC_READ_SEARCH.
    const std::string proc = absl::StrCat("/proc/self/fd/", fd_.get());
    for (int attempt = 0; temp_path_.empty(); ++attempt) {
      absl::StatusOr<std::string> name = TempName(dir_, base_);
      if (!name.ok()) return name.status();
      if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, name->c_str(),
                   AT_SYMLINK_FOLLOW) == 0) {
        temp_path_ = *std::move(name);
      } else if (errno != EEXIST || attempt + 1 >= kNameAttempts) {
        return ErrnoStatus("link the temporary file as", *name, errno);
      }
    }
  }
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    return ErrnoStatus("rename the temporary file to", path_, errno);
  }
  temp_path_.clear();
  published_ = true;
  // The file is in place even if this fails; the error says it may not be
  // durable yet.
  if (sync) return SyncDirectory(dir_);
  return absl::OkStatus();
}

}  // namespace persistd
