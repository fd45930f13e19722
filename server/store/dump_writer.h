// WriteDump turns a filled staging file into a joblib file: it splices the
// client's skeleton pickle, wrapper states and array bytes into joblib's
// stream (format/joblib_writer), compresses it on the fly (codec/), and
// publishes the result atomically (io/atomic_file).
#ifndef PERSISTD_SERVER_STORE_DUMP_WRITER_H_
#define PERSISTD_SERVER_STORE_DUMP_WRITER_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/persistd.pb.h"

namespace persistd {

// `staging` is the mapped staging file the request's extents refer to;
// `target` the absolute path to publish. Nothing is left at `target` or
// beside it on error.
absl::StatusOr<v1::CommitDumpReply> WriteDump(
    const v1::CommitDumpRequest& request, absl::string_view staging,
    const std::string& target, int threads);

}  // namespace persistd

#endif  // PERSISTD_SERVER_STORE_DUMP_WRITER_H_
