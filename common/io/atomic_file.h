// AtomicFile publishes a file all at once: it is written under a temporary
// name in the target's directory, fsync'ed, renamed over the target, and the
// directory is fsync'ed. Readers see the old file or the whole new one, never
// a partial one, even across a crash.
//
// Invariant: until Commit() succeeds, the target is untouched; if the object
// is destroyed without a successful Commit(), the temporary file is removed.
#ifndef PERSISTD_COMMON_IO_ATOMIC_FILE_H_
#define PERSISTD_COMMON_IO_ATOMIC_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/io/scoped_fd.h"

namespace persistd {

class AtomicFile {
 public:
  // Creates the temporary file next to `target` (mode 0644 minus umask,
  // like open(2) of a new file).
  static absl::StatusOr<AtomicFile> Create(const std::string& target);

  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&&) = delete;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  // The descriptor to write the contents to.
  int fd() const { return fd_.get(); }
  const std::string& temp_path() const { return temp_path_; }
  const std::string& target() const { return target_; }

  // How much a Commit survives: kDurable fsyncs the file before the rename
  // and the directory after, so the new file survives a power loss;
  // kCrashAtomic only renames, which is atomic against crashes of
  // processes (the page cache outlives them), for files that are worth
  // nothing after a reboot.
  enum class Sync { kDurable, kCrashAtomic };

  // Renames the file over the target, with the syncs `sync` asks for.
  absl::Status Commit(Sync sync = Sync::kDurable);

 private:
  AtomicFile(std::string target, std::string temp_path, ScopedFd fd)
      : target_(std::move(target)),
        temp_path_(std::move(temp_path)),
        fd_(std::move(fd)) {}

  std::string target_;
  std::string temp_path_;
  ScopedFd fd_;
  bool committed_ = false;
};

// Returns the directory part of `path` ("." when it has none).
std::string DirName(const std::string& path);

// fsyncs a directory so a rename or create inside it is durable.
absl::Status SyncDirectory(const std::string& dir);

}  // namespace persistd

#endif  // PERSISTD_COMMON_IO_ATOMIC_FILE_H_
