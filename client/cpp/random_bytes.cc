#include "client/cpp/random_bytes.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include "absl/strings/escaping.h"
#include "common/io/errno_status.h"
#include "common/io/scoped_fd.h"

namespace persistd {

namespace {

absl::Status ReadUrandom(char* out, size_t n) {
  ScopedFd fd(::open("/dev/urandom", O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("open", "/dev/urandom", errno);
  size_t done = 0;
  while (done < n) {
    ssize_t got = ::read(fd.get(), out + done, n - done);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return ErrnoStatus("read", "/dev/urandom", got < 0 ? errno : EIO);
    done += static_cast<size_t>(got);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> RandomBytes(size_t n) {
  std::string out(n, '\0');
  size_t done = 0;
  while (done < n) {
    ssize_t got = ::getrandom(&out[done], n - done, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOSYS) {  // kernels before 3.17
        absl::Status status = ReadUrandom(&out[done], n - done);
        if (!status.ok()) return status;
        break;
      }
      return ErrnoStatus("getrandom", "", errno);
    }
    done += static_cast<size_t>(got);
  }
  return out;
}

absl::StatusOr<std::string> RandomHex(size_t n) {
  absl::StatusOr<std::string> bytes = RandomBytes(n);
  if (!bytes.ok()) return bytes.status();
  return absl::BytesToHexString(*bytes);
}

}  // namespace persistd
