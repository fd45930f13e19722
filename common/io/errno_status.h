// Maps errno values to absl::Status, naming the operation and the path.
#ifndef PERSISTD_COMMON_IO_ERRNO_STATUS_H_
#define PERSISTD_COMMON_IO_ERRNO_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace persistd {

// Returns e.g. NotFound("open /x/y: No such file or directory").
// ENOENT maps to NotFound, EACCES/EPERM to PermissionDenied, ENOSPC/EDQUOT
// to ResourceExhausted, everything else to Internal.
absl::Status ErrnoStatus(absl::string_view op, absl::string_view path,
                         int error_number);

}  // namespace persistd

#endif  // PERSISTD_COMMON_IO_ERRNO_STATUS_H_
