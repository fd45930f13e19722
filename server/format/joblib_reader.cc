#include "server/format/joblib_reader.h"

namespace persistd {

absl::StatusOr<IndexedStream> IndexJoblibStream(absl::string_view stream,
                                                const PickleLimits& limits) {
  JoblibIndexer indexer(limits);
  absl::Status status = indexer.FeedWhole(stream);
  if (!status.ok()) return status;
  return indexer.Finish();
}

}  // namespace persistd
