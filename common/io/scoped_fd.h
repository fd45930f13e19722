// ScopedFd owns one POSIX file descriptor.
//
// Invariant: fd_ is either -1 or an open descriptor that this object, and
// nothing else, will close.
#ifndef PERSISTD_COMMON_IO_SCOPED_FD_H_
#define PERSISTD_COMMON_IO_SCOPED_FD_H_

#include <unistd.h>

#include <utility>

namespace persistd {

class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() { Reset(); }

  ScopedFd(ScopedFd&& other) noexcept : fd_(other.Release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

  // Gives up ownership without closing.
  int Release() { return std::exchange(fd_, -1); }

  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace persistd

#endif  // PERSISTD_COMMON_IO_SCOPED_FD_H_
