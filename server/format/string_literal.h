// L("..."): a string literal as bytes, embedded NULs included. Used by the
// format tests and by the generated vectors (testdata/*.inc) that the fuzz
// seeds (server/fuzz) share with them; header-only and free of gtest so
// that both may include it.
#ifndef PERSISTD_SERVER_FORMAT_STRING_LITERAL_H_
#define PERSISTD_SERVER_FORMAT_STRING_LITERAL_H_

#include <cstddef>

#include "absl/strings/string_view.h"

namespace persistd {
namespace testing_util {

template <size_t N>
constexpr absl::string_view L(const char (&literal)[N]) {
  return absl::string_view(literal, N - 1);
}

}  // namespace testing_util
}  // namespace persistd

#endif  // PERSISTD_SERVER_FORMAT_STRING_LITERAL_H_
