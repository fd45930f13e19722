// Helpers shared by the format layer's tests.
#ifndef PERSISTD_SERVER_FORMAT_FORMAT_TEST_UTIL_H_
#define PERSISTD_SERVER_FORMAT_FORMAT_TEST_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/pickle/pickle_scanner.h"
#include "server/format/joblib_reader.h"
#include "server/format/string_literal.h"  // L(), for the tests

namespace persistd {
namespace testing_util {

// Contents of server/format/testdata/<name> (from the test's runfiles).
std::string ReadTestdata(const std::string& name);

// The index real joblib found for a testdata file: its <name>.idx, written
// by testdata/make_testdata.py, with the dtype string, item size, shape and
// order numpy gave each raw and object array (has_meta; the dtype string
// is empty where the reader reports none).
struct ExpectedIndex {
  uint64_t end_offset = 0;
  std::vector<LoadArrayLocation> arrays;
  bool has_meta = false;
};
ExpectedIndex ReadExpectedIndex(const std::string& name);

// Scans all of `pickle`; returns the opcodes, or the first error.
absl::Status ScanAll(absl::string_view pickle, std::vector<PickleOp>* ops);

// Number of non-overlapping occurrences of `needle` in `haystack`.
size_t CountOccurrences(absl::string_view haystack, absl::string_view needle);

}  // namespace testing_util
}  // namespace persistd

#endif  // PERSISTD_SERVER_FORMAT_FORMAT_TEST_UTIL_H_
