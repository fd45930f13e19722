#include "server/store/dump_writer.h"

#include <sys/stat.h>

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/codec/codec.h"
#include "server/format/joblib_writer.h"
#include "server/io/atomic_file.h"
#include "server/io/byte_sink.h"

namespace persistd {

namespace {

absl::StatusOr<absl::string_view> Slice(absl::string_view staging,
                                        const v1::Extent& extent,
                                        absl::string_view what) {
  if (extent.offset() > staging.size() ||
      extent.length() > staging.size() - extent.offset()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " extent [", extent.offset(), ", +", extent.length(),
        ") lies outside the staging file of ", staging.size(), " bytes"));
  }
  return staging.substr(extent.offset(), extent.length());
}

}  // namespace

absl::StatusOr<v1::CommitDumpReply> WriteDump(
    const v1::CommitDumpRequest& request, absl::string_view staging,
    const std::string& target, int threads) {
  absl::StatusOr<absl::string_view> skeleton =
      Slice(staging, request.skeleton(), "skeleton");
  if (!skeleton.ok()) return skeleton.status();
  std::vector<DumpArraySpec> arrays;
  arrays.reserve(request.arrays_size());
  for (int i = 0; i < request.arrays_size(); ++i) {
    const v1::DumpArray& a = request.arrays(i);
    DumpArraySpec spec;
    spec.kind = a.kind() == v1::DumpArray::OBJECT_STREAM
                    ? DumpArraySpec::Kind::kObjectStream
                    : DumpArraySpec::Kind::kRaw;
    absl::StatusOr<absl::string_view> state =
        Slice(staging, a.state(), absl::StrCat("array ", i, " state"));
    if (!state.ok()) return state.status();
    absl::StatusOr<absl::string_view> data =
        Slice(staging, a.data(), absl::StrCat("array ", i, " data"));
    if (!data.ok()) return data.status();
    spec.state_pickle = *state;
    spec.data = *data;
    arrays.push_back(spec);
  }

  struct stat st;
  if (::stat(target.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(target, " is a directory: dump needs a file name"));
  }
  absl::StatusOr<AtomicFile> file = AtomicFile::Create(target);
  if (!file.ok()) return file.status();
  FdSink file_sink(file->fd(), target);
  std::unique_ptr<ByteSink> encoder;
  ByteSink* sink = &file_sink;
  Codec codec = static_cast<Codec>(request.codec());
  if (codec != Codec::kNone) {
    absl::StatusOr<std::unique_ptr<ByteSink>> made =
        NewEncoder(codec, request.level(), threads, &file_sink);
    if (!made.ok()) return made.status();
    encoder = *std::move(made);
    sink = encoder.get();
  }
  absl::StatusOr<uint64_t> stream_bytes =
      WriteJoblibStream(*skeleton, arrays, sink);
  if (!stream_bytes.ok()) return stream_bytes.status();
  // An encoder's Finish writes its trailer and finishes the file sink.
  absl::Status status = sink->Finish();
  if (!status.ok()) return status;
  status = file->Commit();
  if (!status.ok()) return status;

  v1::CommitDumpReply reply;
  reply.set_output_path(target);
  reply.set_file_bytes(file_sink.bytes_written());
  reply.set_stream_bytes(*stream_bytes);
  return reply;
}

}  // namespace persistd
