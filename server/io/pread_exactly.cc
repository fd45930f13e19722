#include "server/io/pread_exactly.h"

#include <errno.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/io/errno_status.h"

namespace persistd {

absl::Status PreadExactly(int fd, uint64_t offset, size_t size, char* out,
                          const std::string& name, uint64_t file_size) {
  size_t done = 0;
  while (done < size) {
    // One pread moves at most 2 GiB - 4 KiB on Linux; ask for 64 MiB.
    ssize_t n = ::pread(fd, out + done, std::min<size_t>(size - done, 1 << 26),
                        static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read", name, errno);
    }
    if (n == 0) {
      return absl::AbortedError(absl::StrCat(
          name, " shrank while it was being read (", offset + done, " of ",
          file_size, " bytes); another program is writing it: retry when it "
          "is done"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace persistd
