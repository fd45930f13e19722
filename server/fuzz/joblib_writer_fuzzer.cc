// Fuzzes WriteJoblibStream, the dump-side writer, with a fuzzed skeleton
// and fuzzed array specs.
//
// Input: sections split by kSectionSeparator (fuzz_util.h): the skeleton,
// then per array a section "<kind byte><state pickle>" and a section with
// its data (kind byte even: kRaw, odd: kObjectStream). At most kMaxArrays.
//
// Checks:
//  - the returned length is what reached the sink, and nothing is written
//    when validation fails (it all happens before the first byte);
//  - when the skeleton is itself a plain pickle the indexer accepts, with
//    no array wrapper of its own, the written stream indexes too, with one
//    array per persistent id of the skeleton, in order, whose bytes are
//    exactly that array's data. This is the contract between the writer
//    and the reader (joblib's NumpyArrayWrapper layout).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/pickle/pickle_opcodes.h"
#include "common/pickle/pickle_scanner.h"
#include "server/format/joblib_reader.h"
#include "server/format/joblib_writer.h"
#include "server/fuzz/fuzz_util.h"
#include "server/io/byte_sink.h"

namespace persistd {
namespace fuzz {
namespace {

constexpr size_t kMaxArrays = 16;

// The persistent ids of a skeleton in stream order, as the writer reads
// them ("<int> BINPERSID" or "PERSID <decimal>"); false if one is not an
// int (the writer then fails, which is checked elsewhere).
bool PersistentIds(absl::string_view skeleton, std::vector<int64_t>* ids) {
  PickleScanner scanner(skeleton);
  PickleOp op;
  bool int_pending = false;
  int64_t int_value = 0;
  do {
    if (!scanner.Next(&op).ok()) return false;
    if (op.code == pickle_op::kFrame) continue;
    const bool was_int_pending = int_pending;
    int_pending = false;
    switch (op.code) {
      case pickle_op::kBinPersId:
        if (!was_int_pending) return false;
        ids->push_back(int_value);
        break;
      case pickle_op::kPersId: {
        int64_t id = 0;
        if (!absl::SimpleAtoi(op.arg, &id)) return false;
        ids->push_back(id);
        break;
      }
      case pickle_op::kBinInt1:
      case pickle_op::kBinInt2:
      case pickle_op::kBinInt:
      case pickle_op::kLong1:
      case pickle_op::kLong4:
      case pickle_op::kInt:
      case pickle_op::kLong:
        int_pending = op.has_int;
        int_value = op.int_value;
        break;
      default:
        break;
    }
  } while (op.code != pickle_op::kStop);
  return true;
}

// Whether the skeleton alone is a pickle the reader indexes without
// finding an array in it.
bool PlainSkeleton(absl::string_view skeleton) {
  if (skeleton.find("ArrayWrapper") != absl::string_view::npos) return false;
  absl::StatusOr<IndexedStream> index = IndexJoblibStream(skeleton);
  return index.ok() && index->arrays.empty() &&
         index->end_offset == skeleton.size();
}

}  // namespace
}  // namespace fuzz
}  // namespace persistd

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace persistd;        // NOLINT
  using namespace persistd::fuzz;  // NOLINT
  const std::vector<absl::string_view> sections = SplitSections(
      absl::string_view(reinterpret_cast<const char*>(data), size));
  const absl::string_view skeleton = sections[0];
  std::vector<DumpArraySpec> arrays;
  for (size_t i = 1; i + 1 < sections.size() && arrays.size() < kMaxArrays;
       i += 2) {
    absl::string_view state = sections[i];
    DumpArraySpec spec{};
    spec.kind = DumpArraySpec::Kind::kRaw;
    if (!state.empty()) {
      if (static_cast<uint8_t>(state[0]) % 2 == 1) {
        spec.kind = DumpArraySpec::Kind::kObjectStream;
      }
      state.remove_prefix(1);
    }
    spec.state_pickle = state;
    spec.data = sections[i + 1];
    arrays.push_back(spec);
  }

  StringSink sink;
  absl::StatusOr<uint64_t> written = WriteJoblibStream(skeleton, arrays, &sink);
  if (!written.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(written.status()), written.status());
    FUZZ_CHECK(sink.data().empty(),
               absl::StrCat(sink.data().size(), " bytes written before ",
                            written.status().ToString()));
    return 0;
  }
  const std::string& stream = sink.data();
  FUZZ_CHECK(*written == stream.size(),
             absl::StrCat("returned ", *written, ", wrote ", stream.size()));

  std::vector<int64_t> ids;
  if (!PlainSkeleton(skeleton) || !PersistentIds(skeleton, &ids)) return 0;
  absl::StatusOr<IndexedStream> index = IndexJoblibStream(stream);
  FUZZ_CHECK(index.ok(), absl::StrCat("the writer's stream does not index: ",
                                      index.status().ToString()));
  FUZZ_CHECK(index->end_offset == stream.size());
  FUZZ_CHECK(index->arrays.size() == ids.size(),
             absl::StrCat(index->arrays.size(), " arrays found for ",
                          ids.size(), " persistent ids"));
  for (size_t i = 0; i < ids.size(); ++i) {
    const DumpArraySpec& spec = arrays[static_cast<size_t>(ids[i])];
    const LoadArrayLocation& found = index->arrays[i];
    const std::string where = absl::StrCat("array ", i, " (id ", ids[i], ")");
    FUZZ_CHECK(found.kind == (spec.kind == DumpArraySpec::Kind::kObjectStream
                                  ? LoadArrayLocation::Kind::kObjectStream
                                  : LoadArrayLocation::Kind::kRaw),
               where);
    FUZZ_CHECK(absl::string_view(stream).substr(found.offset, found.length) ==
                   spec.data,
               where);
  }
  return 0;
}
