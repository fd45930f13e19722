// Unpredictable bytes from the kernel, for descriptor tokens and temp names.
#ifndef PERSISTD_CLIENT_CPP_RANDOM_BYTES_H_
#define PERSISTD_CLIENT_CPP_RANDOM_BYTES_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace persistd {

// `n` bytes from getrandom(2), or /dev/urandom where the kernel lacks it.
// A token must be unguessable: whoever knows it while its descriptors wait
// in the daemon could claim them with a request of their own.
absl::StatusOr<std::string> RandomBytes(size_t n);

// RandomBytes(n) as 2n lowercase hex digits (for file names).
absl::StatusOr<std::string> RandomHex(size_t n);

}  // namespace persistd

#endif  // PERSISTD_CLIENT_CPP_RANDOM_BYTES_H_
