// DumpTarget is the file a dump is written into before it replaces its
// target, all at once.
//
// The client, not the daemon, creates it, in the target's directory (so the
// final rename is atomic), with this process's credentials and umask: an
// unnamed O_TMPFILE file where the filesystem has them, else a named
// ".<name>.<random>.tmp" beside the target. Publish() gives it the target's
// name; a DumpTarget destroyed unpublished leaves nothing behind.
//
// The result looks like what open(path, "wb") would have made: a new file
// gets 0666 minus the umask; an existing regular file keeps its mode (and,
// when we are root, its owner), and the temp file is never more open than
// it; a symlink at `path` is written through, so the link stays and the
// file it names is replaced. Unlike open(), the replacement is a new inode:
// other hard links to the old file keep the old contents.
//
// Invariants: fd_ is open for reading and writing on the temp file until
// destruction; temp_path_ is empty or names a file this object created and
// will unlink, unless Publish() renamed it over path_.
//
// Thread-compatible.
#ifndef PERSISTD_CLIENT_CPP_DUMP_TARGET_H_
#define PERSISTD_CLIENT_CPP_DUMP_TARGET_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/io/scoped_fd.h"

namespace persistd {

class DumpTarget {
 public:
  // Creates the temp file for `path`. `allow_unnamed` false forces the
  // named fallback (for tests of filesystems without O_TMPFILE).
  static absl::StatusOr<DumpTarget> Create(const std::string& path,
                                           bool allow_unnamed = true);

  DumpTarget(DumpTarget&& other) noexcept;
  DumpTarget& operator=(DumpTarget&&) = delete;
  DumpTarget(const DumpTarget&) = delete;
  DumpTarget& operator=(const DumpTarget&) = delete;
  ~DumpTarget();

  // The empty temp file, open for reading and writing at offset 0.
  int fd() const { return fd_.get(); }
  // Where Publish() puts the file: `path`, or what a symlink there names.
  const std::string& path() const { return path_; }
  // The temp file's name while it has one (the named fallback), else "".
  const std::string& temp_path() const { return temp_path_; }

  // Renames the file over path(). With `sync`, fsyncs the file first and
  // the directory after, so the new contents survive a crash.
  absl::Status Publish(bool sync);

 private:
  DumpTarget(std::string path, std::string dir, std::string base,
             std::string temp_path, ScopedFd fd)
      : path_(std::move(path)),
        dir_(std::move(dir)),
        base_(std::move(base)),
        temp_path_(std::move(temp_path)),
        fd_(std::move(fd)) {}

  std::string path_;
  std::string dir_;
  std::string base_;
  std::string temp_path_;
  ScopedFd fd_;
  bool published_ = false;
};

}  // namespace persistd

#endif  // PERSISTD_CLIENT_CPP_DUMP_TARGET_H_
