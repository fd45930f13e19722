// Helpers shared by the C++ client's tests (client_test here and
// //tests/cpp:client_daemon_test): whole-file reads and writes, directory
// listings, permission bits and a scoped umask.
#ifndef PERSISTD_CLIENT_CPP_TEST_UTIL_H_
#define PERSISTD_CLIENT_CPP_TEST_UTIL_H_

#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace persistd {
namespace testing_util {

// The contents of `path`; empty if it cannot be read.
std::string ReadFile(const std::string& path);

// Replaces the contents of `path` with `contents`.
void WriteFile(const std::string& path, absl::string_view contents);

// The names in `dir`, sorted, without "." and "..".
std::vector<std::string> Entries(const std::string& dir);

// The permission bits of `path`; 0 if it does not exist.
mode_t ModeOf(const std::string& path);

// Sets the umask for one scope.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : previous_(::umask(mask)) {}
  ~ScopedUmask() { ::umask(previous_); }

  ScopedUmask(const ScopedUmask&) = delete;
  ScopedUmask& operator=(const ScopedUmask&) = delete;

 private:
  mode_t previous_;
};

}  // namespace testing_util
}  // namespace persistd

#endif  // PERSISTD_CLIENT_CPP_TEST_UTIL_H_
