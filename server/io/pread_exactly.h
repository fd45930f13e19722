// PreadExactly reads a byte range of a source file with pread(2).
//
// Source files are read, never mapped, so a file that another program
// truncates while the daemon reads it is an error naming the file, not a
// SIGBUS that kills every client's daemon.
#ifndef PERSISTD_SERVER_IO_PREAD_EXACTLY_H_
#define PERSISTD_SERVER_IO_PREAD_EXACTLY_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace persistd {

// Reads exactly [offset, offset + size) of `fd` into `out`. Aborted when
// the file ends first (it shrank below `file_size`, which the message
// names); `name` names the file in messages.
absl::Status PreadExactly(int fd, uint64_t offset, size_t size, char* out,
                          const std::string& name, uint64_t file_size);

}  // namespace persistd

#endif  // PERSISTD_SERVER_IO_PREAD_EXACTLY_H_
