// Seed inputs for the fuzz targets, made from the format layer's test
// vectors and small streams encoded here, so the corpora start from every
// codec's and every pickle protocol's real layout. deploy/fuzz.sh writes
// them out with make_seeds (plus server/format/testdata/*.pkl); the replay
// tests run them under `bazel test`.
#ifndef PERSISTD_SERVER_FUZZ_FUZZ_SEEDS_H_
#define PERSISTD_SERVER_FUZZ_FUZZ_SEEDS_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace persistd {
namespace fuzz {

// The fuzz targets, by the names of their binaries without "_fuzzer".
inline constexpr absl::string_view kTargets[] = {
    "codec", "pickle", "joblib_reader", "joblib_writer"};

// The seeds of `target`; empty for an unknown target.
std::vector<std::string> SeedsFor(absl::string_view target);

}  // namespace fuzz
}  // namespace persistd

#endif  // PERSISTD_SERVER_FUZZ_FUZZ_SEEDS_H_
